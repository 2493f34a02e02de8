"""Architecture configurations: plain dataclasses that serialise to JSON and rebuild a model exactly.

A model file stores ``ModelConfig.to_dict()``; :func:`rs3l_coffea.nn.build_model` turns that
dictionary back into the same module tree, so weights load by name. Unknown keys are an error
(a typo in a config must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features.names import N_FEATURES

_T = TypeVar("_T")


def _from_mapping(cls: type[_T], values: Mapping[str, Any], what: str) -> _T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys with the valid ones listed."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; valid keys: {sorted(names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{what} = {value!r} is not one of {list(choices)}")


def _check_positive(what: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DGCNNConfig:
    """Dynamic-graph CNN (ParticleNet/DGCNN-style) backbone as in the published RS3L code.

    Defaults reproduce the published model: embedding MLP 15→128→128 (ELU), three EdgeConv
    layers (k = 24, message ``Linear(2·width → width) + ELU`` on ``[x_i, x_j − x_i]``, max
    aggregation), global sum pool, then the output MLP 128→64→32→32→8.

    ``pool_first=True`` is the published code (pool, then per-jet MLP); ``False`` is the paper
    text (per-particle MLP, then pool). ``edge_path`` picks the algebraic max-aggregation
    shortcut (``"algebraic"``, default, needs ``aggregation="max"``) or explicit edge messages
    (``"general"``); both give the same numbers. ``gather_budget`` bounds the elements of the
    temporary neighbour tensor per chunk (memory control, not architecture).
    """

    input_dim: int = N_FEATURES
    width: int = 128
    embed_layers: int = 2
    conv_layers: int = 3
    k: int = 24
    output_hidden: tuple[int, ...] = (64, 32, 32)
    output_dim: int = 8
    pool: str = "sum"
    pool_first: bool = True
    aggregation: str = "max"
    edge_path: str = "algebraic"
    gather_budget: int = 1 << 23

    def __post_init__(self) -> None:
        for name in ("input_dim", "width", "embed_layers", "k", "output_dim", "gather_budget"):
            _check_positive(f"DGCNNConfig.{name}", getattr(self, name))
        if not isinstance(self.conv_layers, int) or self.conv_layers < 0:
            raise ConfigError(f"DGCNNConfig.conv_layers must be >= 0, got {self.conv_layers!r}")
        for h in self.output_hidden:
            _check_positive("DGCNNConfig.output_hidden entry", h)
        _check_choice("DGCNNConfig.pool", self.pool, ("sum", "mean"))
        _check_choice("DGCNNConfig.aggregation", self.aggregation, ("max", "mean"))
        _check_choice("DGCNNConfig.edge_path", self.edge_path, ("algebraic", "general"))
        if self.edge_path == "algebraic" and self.aggregation != "max":
            raise ConfigError(
                "DGCNNConfig.edge_path='algebraic' needs aggregation='max' "
                "(the shortcut relies on max commuting with the monotonic ELU); use edge_path='general'"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists), with ``type: "dgcnn"``."""
        out = {"type": "dgcnn", **dataclasses.asdict(self)}
        out["output_hidden"] = list(self.output_hidden)
        return out


@dataclass(frozen=True)
class TransformerConfig:
    """Particle-transformer encoder backbone (no positional encoding: particles are a set).

    ``ir_safe=True`` is the JetCLR infrared-safe variant: attention logits get a bias
    ``beta · log pT_j`` of the key particle (so a particle's weight scales as pT^beta) and the
    pool is a pT-weighted mean; pT is recovered from the ``log_pt`` feature at
    ``pt_feature_index``.
    """

    input_dim: int = N_FEATURES
    d_model: int = 128
    n_heads: int = 8
    n_layers: int = 4
    dim_feedforward: int = 256
    dropout: float = 0.0
    output_hidden: tuple[int, ...] = (64,)
    output_dim: int = 8
    pool: str = "mean"
    ir_safe: bool = False
    beta: float = 0.5
    pt_feature_index: int = 0

    def __post_init__(self) -> None:
        for name in ("input_dim", "d_model", "n_heads", "n_layers", "dim_feedforward", "output_dim"):
            _check_positive(f"TransformerConfig.{name}", getattr(self, name))
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"TransformerConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        _check_choice("TransformerConfig.pool", self.pool, ("mean", "sum"))
        if not 0 <= self.pt_feature_index < self.input_dim:
            raise ConfigError(f"TransformerConfig.pt_feature_index={self.pt_feature_index} out of range")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with ``type: "transformer"``."""
        out = {"type": "transformer", **dataclasses.asdict(self)}
        out["output_hidden"] = list(self.output_hidden)
        return out


@dataclass(frozen=True)
class HeadConfig:
    """A classification head on the embedding.

    ``kind="linear"`` is the paper's head (one Linear layer); ``"mlp"`` adds ELU hidden layers
    ``hidden``. One class name (default: the head name) → one sigmoid score column named after
    the head; several class names → softmax over them, columns ``"<head>:<class>"``.
    """

    name: str
    kind: str = "linear"
    hidden: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"HeadConfig.name must be a non-empty string, got {self.name!r}")
        _check_choice("HeadConfig.kind", self.kind, ("linear", "mlp"))
        if self.kind == "linear" and self.hidden:
            raise ConfigError(f"head {self.name!r}: kind='linear' takes no hidden layers")
        if self.kind == "mlp" and not self.hidden:
            raise ConfigError(f"head {self.name!r}: kind='mlp' needs hidden layer sizes")

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of this head's score columns."""
        if len(self.classes) <= 1:
            return (self.name,)
        return tuple(f"{self.name}:{c}" for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"name": self.name, "kind": self.kind, "hidden": list(self.hidden), "classes": list(self.classes)}


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the backbone's Linear layers: ``W + (alpha/rank)·B·A``."""

    rank: int = 4
    alpha: float = 8.0

    def __post_init__(self) -> None:
        _check_positive("LoRAConfig.rank", self.rank)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """A whole :class:`~rs3l_coffea.nn.JetModel`: backbone, heads and optional LoRA adapters."""

    backbone: DGCNNConfig | TransformerConfig = field(default_factory=DGCNNConfig)
    heads: tuple[HeadConfig, ...] = ()
    lora: LoRAConfig | None = None

    def __post_init__(self) -> None:
        names = [c for h in self.heads for c in h.column_names]
        if len(set(names)) != len(names):
            raise ConfigError(f"head score column names are not unique: {names}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary that :meth:`from_dict` turns back into an equal config."""
        return {
            "backbone": self.backbone.to_dict(),
            "heads": [h.to_dict() for h in self.heads],
            "lora": None if self.lora is None else self.lora.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Parse a dictionary as written by :meth:`to_dict` (``backbone.type`` picks the class)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"model config must be a mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - {"backbone", "heads", "lora"})
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; valid: backbone, heads, lora")
        backbone_values = dict(values.get("backbone", {"type": "dgcnn"}))
        kind = backbone_values.pop("type", "dgcnn")
        backbone_classes = {"dgcnn": DGCNNConfig, "transformer": TransformerConfig}
        if kind not in backbone_classes:
            raise ConfigError(f"backbone type {kind!r} is not one of {sorted(backbone_classes)}")
        backbone = _from_mapping(backbone_classes[kind], backbone_values, f"{kind} backbone config")
        heads = tuple(_from_mapping(HeadConfig, h, "head config") for h in values.get("heads", ()))
        lora_values = values.get("lora")
        lora = None if lora_values is None else _from_mapping(LoRAConfig, lora_values, "lora config")
        return cls(backbone=backbone, heads=heads, lora=lora)
