"""The one typed configuration layer: pydantic dataclasses whose errors are :class:`ConfigError`.

Every configuration schema (model architecture, trainer, ...) is a ``@config_dataclass``: a
pydantic dataclass (so ``dataclasses.fields/asdict/replace`` keep working, and ``replace``
re-validates) that refuses unknown keys, and whose constructor turns pydantic's
``ValidationError`` into a :class:`~rs3l_coffea.errors.ConfigError` naming the dotted key, the
offending value and what would have been valid. ``deep_merge``, ``set_dotted`` and
``read_yaml_mapping`` are the shared helpers for layering a YAML file, explicit settings and
``key.path=value`` overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, cast, get_args, get_origin, overload

import pydantic
import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictInt,
    ValidationError,
)
from typing_extensions import dataclass_transform

from rs3l_coffea.errors import ConfigError

__all__ = [
    "Finite",
    "NonNegativeFinite",
    "NonNegativeInt",
    "PositiveFinite",
    "PositiveInt",
    "SplitCommas",
    "StrictBool",
    "StrictInt",
    "config_dataclass",
    "deep_merge",
    "describe_validation_error",
    "int_between",
    "parse_override",
    "read_yaml_mapping",
    "set_dotted",
    "validated",
]

_T = TypeVar("_T")


def _reject_bool(value: Any) -> Any:
    # pydantic's lax float accepts true/false as 1.0/0.0; a boolean where a number belongs is a typo.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _positive_int(value: int) -> int:
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(value: int) -> int:
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def _non_negative(value: float) -> float:
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


#: An integer >= 1 (booleans and floats refused).
PositiveInt = Annotated[StrictInt, AfterValidator(_positive_int)]
#: An integer >= 0.
NonNegativeInt = Annotated[StrictInt, AfterValidator(_non_negative_int)]
#: A finite float (NaN and +-inf refused; ints accepted; YAML's "1e-3" string accepted).
Finite = Annotated[float, BeforeValidator(_reject_bool), AfterValidator(_finite)]
PositiveFinite = Annotated[Finite, AfterValidator(_positive)]
NonNegativeFinite = Annotated[Finite, AfterValidator(_non_negative)]


def int_between(low: int, high: int, why: str) -> AfterValidator:
    """Validator for ``Annotated[StrictInt, int_between(low, high, why)]``: an integer in
    ``[low, high]``; ``why`` (shown in the error) says where the bound comes from.

    The bound is metadata inside a literal ``Annotated[...]`` (not a function returning a type)
    so that a type checker reads the alias as ``int``.
    """

    def check(value: int) -> int:
        if value < low:
            raise ValueError("must be a positive integer" if low == 1 else f"must be >= {low}")
        if value > high:
            raise ValueError(f"must be at most {high} ({why})")
        return value

    return AfterValidator(check)


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, tuple):
        return list(value)
    return value


#: Metadata for ``Annotated[list[X], SplitCommas]``: a list that also accepts ``"a,b"`` (as
#: ``--set key=a,b`` on the command line).
SplitCommas = BeforeValidator(_split_commas)


_PYDANTIC_CONFIG = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


@overload
def config_dataclass(cls: type[_T], /) -> type[_T]: ...


@overload
def config_dataclass(
    *, frozen: bool = False, key_prefix: str | None = None
) -> Callable[[type[_T]], type[_T]]: ...


# dataclass_transform tells a type checker that decorated classes are dataclasses (typed
# constructors, ``frozen`` honoured, ``dataclasses.asdict/replace`` accepted).
@dataclass_transform(field_specifiers=(dataclasses.field, pydantic.Field))
def config_dataclass(
    cls: type[_T] | None = None, /, *, frozen: bool = False, key_prefix: str | None = None
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Decorate a class as a validated configuration dataclass.

    ``key_prefix``: how error messages name keys: ``None`` gives ``ClassName.key`` (model
    cards: ``DGCNNConfig.k must be a positive integer, got -3``); a string gives
    ``<key_prefix> key: invalid value ...`` (``config key optimizer.lr: invalid value nan; must
    be a finite number``).
    """

    def wrap(target: type[_T]) -> type[_T]:
        # pydantic's stub types the result as ``type[PydanticDataclass]``; at runtime it is
        # ``target`` itself, decorated in place.
        built = cast(
            "type[_T]",
            pydantic.dataclasses.dataclass(frozen=frozen, config=_PYDANTIC_CONFIG)(target),
        )
        pydantic_init = built.__init__

        @functools.wraps(pydantic_init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                pydantic_init(self, *args, **kwargs)
            except ValidationError as error:
                raise ConfigError(describe_validation_error(error, built, key_prefix)) from None

        # Wrapping the constructor of the class is the point here; mypy refuses method assignment.
        built.__init__ = __init__  # type: ignore[method-assign]
        return built

    return wrap if cls is None else wrap(cls)


def describe_validation_error(error: ValidationError, root: type, key_prefix: str | None) -> str:
    """One line naming the first offending key, its value and what is valid."""
    details = error.errors(include_url=False)
    first = details[0]
    # pydantic names the union member it tried ("DGCNNConfig") in the location: not a key.
    loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and part[:1].isupper()))
    kind = first["type"]
    value = first.get("input")
    context = first.get("ctx") or {}
    cause = context.get("error")
    if isinstance(cause, ConfigError):  # a cross-field check wrote the complete message itself
        return str(cause)
    message = first["msg"].removeprefix("Value error, ")
    key = _dotted(loc)
    more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        valid = sorted(_field_names_at(root, loc[:-1]))
        where = _dotted(loc[:-1]) or "<top level>"
        if key_prefix is None:
            return f"unknown {_title(root, loc[:-1])} key {loc[-1]!r}; valid keys: {valid}{more}"
        return f"unknown {key_prefix} {key}; valid keys in {where}: {valid}{more}"
    if kind == "literal_error":
        message = f"valid choices: {context.get('expected', '')}"
    elif not loc:  # a check across fields (``__post_init__``) without a ConfigError
        return f"{_title(root, ())}: {message}{more}"
    elif message[:1].isupper():
        message = message[0].lower() + message[1:]
    if key_prefix is None:
        owner, depth = _owner(root, loc)
        return f"{owner.__name__}.{_dotted(loc[depth:])} {message}, got {value!r}{more}"
    return f"{key_prefix} {key}: invalid value {value!r}; {message}{more}"


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _unwrap(hint: Any) -> Any:
    """The dataclass inside ``Annotated``, ``X | None`` or ``tuple[X, ...]``, if any."""
    while True:
        origin = get_origin(hint)
        if origin is Annotated:
            hint = get_args(hint)[0]
        elif origin in (Union, types.UnionType, tuple, list):
            options = [a for a in get_args(hint) if a is not type(None) and a is not Ellipsis]
            classes = [a for a in options if dataclasses.is_dataclass(_unwrap(a))]
            if not classes:
                return hint
            hint = classes[0]
        else:
            return hint


def _class_at(root: type, loc: tuple[Any, ...]) -> type:
    cls: Any = root
    for part in loc:
        if isinstance(part, int) or not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        if part not in hints:
            break
        cls = _unwrap(hints[part])
    return cls


def _field_names_at(root: type, loc: tuple[Any, ...]) -> list[str]:
    cls = _class_at(root, loc)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _owner(root: type, loc: tuple[Any, ...]) -> tuple[type, int]:
    """The innermost configuration class along ``loc`` and how many parts of ``loc`` lead to it."""
    owner, depth = root, 0
    for end in range(1, len(loc)):
        cls = _class_at(root, loc[:end])
        if dataclasses.is_dataclass(cls) and cls is not owner:
            owner, depth = cls, end
    return owner, depth


def _title(root: type, loc: tuple[Any, ...]) -> str:
    cls = _class_at(root, loc)
    return cls.__name__ if isinstance(cls, type) else root.__name__


def deep_merge(target: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into ``target`` in place (nested mappings merged, the rest replaced)."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = deep_merge({}, value)
        else:
            target[key] = value
    return target


def set_dotted(raw: dict[str, Any], dotted: str, value: Any, what: str = "setting") -> None:
    """``raw["a"]["b"] = value`` for ``dotted = "a.b"`` (sections created as needed)."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what} {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(override: str) -> tuple[str, Any]:
    """``"key.path=value"`` → ``("key.path", YAML-parsed value)``."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form key.path=value")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: value is not valid YAML") from error


def read_yaml_mapping(path: str | Path, what: str = "configuration file") -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``); ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, got {loaded!r}")
    return loaded


def validated(build: Callable[..., _T], values: Mapping[str, Any], what: str) -> _T:
    """``build(**values)`` after checking ``values`` is a mapping (ConfigError naming ``what``)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {type(values).__name__}")
    return build(**values)
