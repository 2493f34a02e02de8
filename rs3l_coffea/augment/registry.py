"""Augmentations by name: ``build_augmentation("rotate,translate,smear,split")``.

A spec is a comma-separated list (or a list of strings) of registry names, each optionally
with parameters in parentheses: ``"rotate,smear(lambda_soft=0.2),split(choice=hardest)"``.
Parameters can also be passed as keyword arguments keyed by name:
``build_augmentation("smear,split", smear={"lambda_soft": 0.2})``.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterable, Mapping
from typing import Any

from rs3l_coffea.augment.symmetry import (
    Augmentation,
    CollinearSplit,
    Compose,
    Dropout,
    Identity,
    Rotate,
    Smear,
    Translate,
)
from rs3l_coffea.augment.views import PRESETS
from rs3l_coffea.errors import ConfigError

AUGMENTATIONS: dict[str, type[Augmentation]] = {
    cls.name: cls for cls in (Rotate, Translate, Smear, CollinearSplit, Dropout)
}
"""Symmetry augmentations by registry name."""

_ALIASES: dict[str, str] = {"none": "none", "identity": "none"}


def _valid_names_message() -> str:
    lines = []
    for name, cls in AUGMENTATIONS.items():
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        described = ", ".join(f"{p.name}={p.default!r}" for p in params)
        lines.append(f"{name}({described})" if described else name)
    return (
        "valid augmentations: " + "; ".join(lines)
        + "; presets (alone): " + ", ".join(PRESETS)
    )


def _split_top_level(spec: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, []
    for char in spec:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced parentheses in augmentation spec {spec!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ConfigError(f"unbalanced parentheses in augmentation spec {spec!r}")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare words such as choice=hardest


def parse_spec(spec: str | Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """Parse a spec into ``[(name, params), ...]`` without checking names."""
    items = _split_top_level(spec) if isinstance(spec, str) else [
        piece for entry in spec for piece in _split_top_level(str(entry))
    ]
    parsed = []
    for item in items:
        name, _, rest = item.partition("(")
        name = name.strip().lower()
        params: dict[str, Any] = {}
        if rest:
            if not rest.endswith(")"):
                raise ConfigError(f"malformed augmentation {item!r}: expected name(key=value, ...)")
            for assignment in _split_top_level(rest[:-1]):
                key, equals, value = assignment.partition("=")
                if not equals or not key.strip().isidentifier():
                    raise ConfigError(
                        f"malformed parameter {assignment!r} in {item!r}: expected key=value"
                    )
                params[key.strip()] = _parse_value(value)
        parsed.append((name, params))
    return parsed


def _instantiate(name: str, params: Mapping[str, Any]) -> Augmentation:
    if _ALIASES.get(name) == "none":
        if params:
            raise ConfigError(f"augmentation {name!r} takes no parameters, got {dict(params)}")
        return Identity()
    cls = AUGMENTATIONS.get(name)
    if cls is None:
        raise ConfigError(f"unknown augmentation {name!r}; {_valid_names_message()}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"augmentation {name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(accepted) or 'none'}"
        )
    return cls(**params)


def build_augmentation(spec: str | Iterable[str], **params: Mapping[str, Any]) -> Augmentation:
    """Build one augmentation (a :class:`Compose` when several are named) from a spec.

    ``params`` maps a name in the spec to keyword arguments for it (merged over any given in
    the spec string). Unknown names or parameters and out-of-range values raise
    :class:`~rs3l_coffea.errors.ConfigError` listing what is valid.
    """
    parsed = parse_spec(spec)
    if not parsed:
        raise ConfigError(f"empty augmentation spec {spec!r}; {_valid_names_message()}")
    names = [name for name, _ in parsed]
    presets = [name for name in names if name in PRESETS]
    if presets:
        if len(names) > 1:
            raise ConfigError(
                f"preset {presets[0]!r} is a complete two-view recipe and cannot be combined with "
                f"other augmentations, got {names}; list the single augmentations instead"
            )
        if parsed[0][1] or params:
            raise ConfigError(f"preset {presets[0]!r} takes no parameters")
        return PRESETS[presets[0]]()
    for key, value in params.items():
        if key not in names:
            raise ConfigError(
                f"parameters given for {key!r}, which is not in the spec {names}; "
                f"{_valid_names_message()}"
            )
        if not isinstance(value, Mapping):
            raise ConfigError(f"parameters for {key!r} must be a mapping, got {value!r}")
    built = [_instantiate(name, {**own, **params.get(name, {})}) for name, own in parsed]
    return built[0] if len(built) == 1 else Compose(built)


def partition_spec(
    spec: str | Iterable[str], resimulation_variants: Iterable[str]
) -> tuple[list[str], str | None]:
    """Split a mixed ``--augmentations`` value into re-simulation variants and symmetry augmentations.

    Returns ``(variants, symmetry_spec)``: the names found in ``resimulation_variants`` (in
    order) and a spec string of the symmetry augmentations (``None`` if there are none),
    ready for :func:`build_augmentation`. A name that is neither raises
    :class:`~rs3l_coffea.errors.ConfigError` listing both kinds.
    """
    known_variants = [str(v) for v in resimulation_variants]
    variants: list[str] = []
    symmetry: list[str] = []
    for name, params in parse_spec(spec):
        if name in known_variants:
            if params:
                raise ConfigError(f"re-simulation variant {name!r} takes no parameters")
            variants.append(name)
        elif name in AUGMENTATIONS or name in _ALIASES or name in PRESETS:
            inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
            symmetry.append(f"{name}({inner})" if params else name)
        else:
            raise ConfigError(
                f"unknown augmentation {name!r}; re-simulation variants: "
                f"{', '.join(known_variants) or 'none available'}; {_valid_names_message()}"
            )
    return variants, (",".join(symmetry) if symmetry else None)


def training_settings(
    spec: str,
    resimulation_variants: Iterable[str],
    *,
    task: str = "pretrain",
    partner: str | None = None,
) -> dict[str, Any]:
    """Translate an ``rs3l train ... --augmentations`` value into typed trainer settings.

    The value may name re-simulation variants (``seed, fsr_up, ...``), symmetry augmentations
    (``rotate, translate, smear, split, dropout``, with inline parameters) or both. Variants go
    to ``data.augmentations``; symmetry augmentations (pretraining only) to
    ``data.symmetry_augmentations`` and ``data.symmetry_params``; unless ``partner`` was given
    explicitly, ``data.partner`` becomes ``symmetry`` (symmetry only: no re-simulated partner is
    needed, so ntuples of any reader-supported file work) or ``resim+symmetry`` (both). Every
    name and parameter is validated here, before any data is read. Returns dotted keys mapped
    to values (``rs3l_coffea.training.config.load_config(settings=...)``).
    """
    variants, symmetry = partition_spec(spec, resimulation_variants)
    if not variants and symmetry is None:
        raise ConfigError(f"--augmentations {spec!r} names nothing; {_valid_names_message()}")
    settings: dict[str, Any] = {"data.augmentations": list(variants)} if variants else {}
    if symmetry is None:
        return settings
    if task != "pretrain":
        raise ConfigError(
            f"symmetry augmentations ({symmetry}) only make positive partners for pretraining; "
            f"'{task}' uses re-simulation variants only ({', '.join(resimulation_variants)})"
        )
    build_augmentation(symmetry)  # validate names and parameters now
    parsed = parse_spec(symmetry)
    params = {name: given for name, given in parsed if given}
    settings["data.symmetry_augmentations"] = [name for name, _ in parsed]
    if params:
        settings["data.symmetry_params"] = params
    if partner is None:
        settings["data.partner"] = "resim+symmetry" if variants else "symmetry"
    return settings


def training_overrides(
    spec: str,
    resimulation_variants: Iterable[str],
    *,
    task: str = "pretrain",
    partner: str | None = None,
) -> list[str]:
    """:func:`training_settings` as ``key.path=value`` override strings (values in YAML/JSON)."""
    settings = training_settings(spec, resimulation_variants, task=task, partner=partner)
    return [f"{key}={_yaml_text(value)}" for key, value in settings.items()]


def _yaml_text(value: Any) -> str:
    if isinstance(value, list):
        return f"[{', '.join(value)}]"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
