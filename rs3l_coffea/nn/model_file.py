"""Native model files: ``NAME.safetensors`` (weights) + ``NAME.json`` (the model card).

Convention: a model is addressed by either of its two file names or by the common stem
``NAME``; both files live side by side. The card holds everything needed to rebuild and use
the model: the architecture config (``build_model`` input), the per-particle feature order
(must equal :data:`~rs3l_coffea.features.names.FEATURE_NAMES`), head score names, and the
free-form ``preprocessing``, ``training``, ``metrics`` dicts that the trainer fills.

Weights are only ever read with safetensors: a pickle or ``torch.save`` file is rejected
before any byte of it is interpreted as Python objects. Loading checks, in this order and
before any real layer is built: the card (architecture sizes bounded, numbers finite, see
:mod:`rs3l_coffea.nn.config`), the safetensors header against the architecture (tensor names,
shapes, and a floating dtype from :data:`WEIGHT_DTYPES`, compared with a parameter-free
``meta``-device build), then every tensor finite. Saving refuses non-finite tensors too: a model
whose scores would all be NaN is never written nor read.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.errors import ConfigError, ModelFormatError
from rs3l_coffea.features.names import FEATURE_NAMES
from rs3l_coffea.nn.build import build_model
from rs3l_coffea.nn.config import ModelConfig
from rs3l_coffea.nn.jet_model import JetModel
from rs3l_coffea.typed_config import NonNegativeFinite, PositiveFinite, config_dataclass

CARD_FORMAT = "rs3l-coffea-model"
CARD_FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
#: safetensors dtypes a weight may have: the floating types torch computes in. Integer, bool and
#: complex tensors are refused (loaded into float parameters they silently give constant scores
#: or drop the imaginary part); 8-bit floats are not written by this code.
WEIGHT_DTYPES = ("F64", "F32", "F16", "BF16")


@config_dataclass(frozen=True)
class ValidityRange:
    """The jets a model was trained on; the tagger flags jets outside (``in_range = False``).

    ``pt_min`` / ``pt_max`` in GeV and ``abs_eta_max`` bound the jet kinematics (``None``: no
    bound); ``detector`` names the detector simulation or experiment the training jets came
    from (recorded for the analyst; the tagger cannot check it per jet).
    """

    pt_min: NonNegativeFinite | None = None
    pt_max: PositiveFinite | None = None
    abs_eta_max: PositiveFinite | None = None
    detector: str = ""

    def __post_init__(self) -> None:
        if self.pt_min is not None and self.pt_max is not None and self.pt_max <= self.pt_min:
            raise ConfigError(f"ValidityRange.pt_max = {self.pt_max} must exceed pt_min = {self.pt_min}")

    def contains(self, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Boolean per jet: inside the range (NaN kinematics are outside)."""
        pt = np.asarray(pt, dtype=np.float64)
        eta = np.asarray(eta, dtype=np.float64)
        inside = np.isfinite(pt) & np.isfinite(eta)
        if self.pt_min is not None:
            inside &= pt >= self.pt_min
        if self.pt_max is not None:
            inside &= pt <= self.pt_max
        if self.abs_eta_max is not None:
            inside &= np.abs(eta) <= self.abs_eta_max
        return inside

    def describe(self) -> str:
        """``pT >= 450 GeV, |eta| <= 1.5, detector: ...``."""
        parts = []
        if self.pt_min is not None:
            parts.append(f"pT >= {self.pt_min:g} GeV")
        if self.pt_max is not None:
            parts.append(f"pT <= {self.pt_max:g} GeV")
        if self.abs_eta_max is not None:
            parts.append(f"|eta| <= {self.abs_eta_max:g}")
        if self.detector:
            parts.append(f"detector: {self.detector}")
        return ", ".join(parts) or "no range recorded"


@dataclass
class ModelCard:
    """What is known about a saved model besides its weights.

    ``preprocessing``, ``training`` and ``metrics`` are free-form JSON-serialisable dicts (the
    trainer fills them: feature scaling, data sets and augmentations, losses and AUCs).
    ``config``, ``feature_names`` and ``head_names`` are filled by :func:`save_model` from the
    model; on load they are what the file says. ``validity_range`` (a :class:`ValidityRange` as
    a JSON object; empty: none recorded) is where the model was trained.
    """

    description: str = ""
    validity_range: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES
    head_names: tuple[str, ...] = ()
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready card including the format tag."""
        out = dataclasses.asdict(self)
        out["feature_names"] = list(self.feature_names)
        out["head_names"] = list(self.head_names)
        return {"format": CARD_FORMAT, "format_version": CARD_FORMAT_VERSION, **out}


def model_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, card)`` paths for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + CARD_SUFFIX)


def save_model(
    path: str | os.PathLike[str], model: JetModel, card: ModelCard | Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``model`` as ``NAME.safetensors`` + ``NAME.json`` (both atomically); return the paths.

    ``card`` may be a :class:`ModelCard` or a mapping of its user fields (``description``,
    ``preprocessing``, ``training``, ``metrics``). The architecture config, feature order and
    head names are always taken from the model itself.
    """
    from safetensors.torch import save_file

    if not isinstance(model, JetModel):
        raise TypeError(f"save_model needs a JetModel (from build_model), got {type(model).__name__}")
    if card is None:
        card = ModelCard()
    elif not isinstance(card, ModelCard):
        user_fields = {"description", "preprocessing", "training", "metrics", "validity_range"}
        unknown = sorted(set(card) - user_fields)
        if unknown:
            raise ConfigError(f"unknown model card keys {unknown}; valid: {sorted(user_fields)}")
        card = ModelCard(**dict(card))
    if card.validity_range:
        try:
            ValidityRange(**card.validity_range)
        except ConfigError as error:
            raise ConfigError(f"model card validity_range: {error}") from None
    card = dataclasses.replace(
        card,
        config=model.config.to_dict(),
        feature_names=FEATURE_NAMES,
        head_names=tuple(model.head_names),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
    )
    text = json.dumps(card.to_dict(), indent=2, sort_keys=False, allow_nan=False)  # fails early if not JSON-able
    weights_path, card_path = model_paths(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    check_finite(state, weights_path, action="refusing to save")
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": CARD_FORMAT})
    with atomic_open(card_path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return weights_path, card_path


def load_model(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> tuple[JetModel, ModelCard]:
    """Load a model saved by :func:`save_model`; returns ``(model in eval mode, card)``.

    Raises :class:`ModelFormatError` naming the problem when the weights file is not
    safetensors (pickles are never unpickled), the card is invalid, the feature order differs
    from ``FEATURE_NAMES``, or a tensor is missing, unexpected or of the wrong shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, card_path = model_paths(path)
    for file in (weights_path, card_path):
        if not file.is_file():
            raise FileNotFoundError(f"model file {file} does not exist")
    card, config = check_model_files(weights_path, card_path)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFormatError(f"{weights_path}: unreadable safetensors file: {error}") from error
    check_finite(state, weights_path, action="refusing to load it")
    model = build_model(config)
    check_state_dict(model, state, weights_path)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), card


def check_model_files(weights_path: Path, card_path: Path) -> tuple[ModelCard, ModelConfig]:
    """Validate a model's card and its weights' header without reading any tensor data.

    Cheap (milliseconds): commands that use a model check it with this before any long work,
    so a bad model is reported as such and not as a failure of the first data file.
    """
    card = read_card(card_path)
    try:
        config = ModelConfig.from_dict(card.config)
    except (ValueError, TypeError) as error:  # ConfigError, or e.g. a string where a mapping belongs
        raise ModelFormatError(f"{card_path}: invalid architecture config: {error}") from error
    check_safetensors(weights_path)
    header = read_safetensors_header(weights_path)
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        skeleton = build_model(config)
    if tuple(card.head_names) != tuple(skeleton.head_names):
        raise ModelFormatError(
            f"{card_path}: head_names {list(card.head_names)} differ from the heads of its config "
            f"{list(skeleton.head_names)}"
        )
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    check_header(expected, header, weights_path)
    return card, config


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: ``{tensor name: {"dtype", "shape", ...}}``."""
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFormatError(f"{path}: not a safetensors file (header is not JSON: {error})") from error
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: not a safetensors file (header is not a JSON object)")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or "dtype" not in entry:
            raise ModelFormatError(f"{path}: not a safetensors file (bad header entry for {name!r})")
        tensors[name] = entry
    return tensors


def check_header(expected: Mapping[str, tuple[int, ...]], header: Mapping[str, Any], source: Path) -> None:
    """Compare a safetensors header with the architecture's tensor names and shapes, and refuse
    weights whose dtype is not in :data:`WEIGHT_DTYPES`; the error names the first offending tensor."""
    _check_names_and_shapes(expected, {name: tuple(entry["shape"]) for name, entry in header.items()}, source)
    for name, entry in header.items():
        if entry["dtype"] not in WEIGHT_DTYPES:
            raise ModelFormatError(
                f"{source}: tensor {name!r} has dtype {entry['dtype']}; model weights must be a "
                f"floating type ({', '.join(WEIGHT_DTYPES)})"
            )


def check_finite(state: Mapping[str, torch.Tensor], source: Path, action: str) -> None:
    """Refuse tensors holding NaN or infinity (every score of such a model would be NaN)."""
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ModelFormatError(
                    f"{source}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) of "
                    f"{tensor.numel()}; {action} (a diverged training? see the run's metrics.csv)"
                )


# JSON types of the card fields (a hand-edited card must fail here, not deep inside the code).
_CARD_FIELD_TYPES = (
    ("config", dict, "a JSON object"),
    ("feature_names", list, "a JSON array of strings"),
    ("head_names", list, "a JSON array of strings"),
    ("preprocessing", dict, "a JSON object"),
    ("training", dict, "a JSON object"),
    ("metrics", dict, "a JSON object"),
    ("description", str, "a string"),
    ("validity_range", dict, "a JSON object"),
)


def read_card(card_path: Path) -> ModelCard:
    """Parse and validate a model card JSON file."""
    try:
        values = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFormatError(f"{card_path}: not a JSON model card: {error}") from error
    if not isinstance(values, dict) or values.get("format") != CARD_FORMAT:
        raise ModelFormatError(f"{card_path}: not an rs3l-coffea model card (format != {CARD_FORMAT!r})")
    if values.get("format_version") != CARD_FORMAT_VERSION:
        raise ModelFormatError(
            f"{card_path}: card format_version {values.get('format_version')!r}, this code reads {CARD_FORMAT_VERSION}"
        )
    for key, kind, what in _CARD_FIELD_TYPES:
        if key in values and not isinstance(values[key], kind):
            raise ModelFormatError(f"{card_path}: card field {key!r} must be {what}, got {values[key]!r}")
    backbone = values.get("config", {}).get("backbone", {})
    if not isinstance(backbone, dict):
        raise ModelFormatError(f"{card_path}: card field 'config.backbone' must be a JSON object, got {backbone!r}")
    names = tuple(values.get("feature_names", ()))
    if names != FEATURE_NAMES:
        raise ModelFormatError(f"{card_path}: feature order mismatch: {_describe_mismatch(names)}")
    if values.get("validity_range"):
        try:
            ValidityRange(**values["validity_range"])
        except ConfigError as error:
            raise ModelFormatError(f"{card_path}: card field 'validity_range': {error}") from None
    known = {f.name for f in dataclasses.fields(ModelCard)}
    fields = {k: v for k, v in values.items() if k in known}
    fields["feature_names"] = names
    fields["head_names"] = tuple(fields.get("head_names", ()))
    return ModelCard(**fields)


def validity_range(card: ModelCard) -> ValidityRange | None:
    """The card's training range (``None`` when the card records none)."""
    return ValidityRange(**card.validity_range) if card.validity_range else None


def _describe_mismatch(names: tuple[str, ...]) -> str:
    if len(names) != len(FEATURE_NAMES):
        return f"model has {len(names)} features {list(names)}, this code builds {len(FEATURE_NAMES)} {list(FEATURE_NAMES)}"
    for position, (got, want) in enumerate(zip(names, FEATURE_NAMES, strict=True)):
        if got != want:
            return f"feature {position} is {got!r} in the model but {want!r} here (expected order {list(FEATURE_NAMES)})"
    return "none"


def check_safetensors(path: Path) -> None:
    """Reject anything that is not a safetensors file by inspecting its header bytes only."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise ModelFormatError(
            f"{path}: looks like a pickle / torch.save archive, not safetensors; refusing to unpickle it"
        )
    if len(head) < 9:
        raise ModelFormatError(f"{path}: too short to be a safetensors file ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > size - 8 or head[8:9] != b"{":
        raise ModelFormatError(f"{path}: not a safetensors file (bad header)")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> None:
    """Compare tensor names and shapes with the model; the error names the first offending key."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    _check_names_and_shapes(expected, {name: tuple(tensor.shape) for name, tensor in state.items()}, source)


def _check_names_and_shapes(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, tuple[int, ...]], source: Path
) -> None:
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelFormatError(f"{source}: missing tensor {missing[0]!r} (and {len(missing) - 1} more) for this architecture")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelFormatError(f"{source}: unexpected tensor {unexpected[0]!r} (and {len(unexpected) - 1} more) for this architecture")
    for key, shape in expected.items():
        if tuple(state[key]) != tuple(shape):
            raise ModelFormatError(
                f"{source}: tensor {key!r} has shape {tuple(state[key])}, the architecture needs {tuple(shape)}"
            )


def _versions() -> dict[str, str]:
    import rs3l_coffea

    return {"rs3l_coffea": rs3l_coffea.__version__, "torch": torch.__version__}
