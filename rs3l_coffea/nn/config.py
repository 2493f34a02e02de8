"""Architecture configurations: validated dataclasses that serialise to JSON and rebuild a model exactly.

A model file stores ``ModelConfig.to_dict()``; :func:`rs3l_coffea.nn.build_model` turns that
dictionary back into the same module tree, so weights load by name. The classes are pydantic
dataclasses (:mod:`rs3l_coffea.typed_config`): unknown keys, wrong types, non-finite numbers and
sizes outside the bounds below raise :class:`~rs3l_coffea.errors.ConfigError` naming the key,
before any layer is built (a typo in a card must not silently fall back to a default, and a
hand-edited card must not reach torch as a 10^9-wide allocation).

Bounds on sizes. They are far above anything trained here or published (RS3L: width 128, k 24,
3 EdgeConv layers, 8-d output; ParticleNet: width 256, k 16) and far below what crashes torch or
takes minutes to build, so a value outside them is an error in the card, not a design choice:

* feature and layer widths (``input_dim``, ``width``, ``d_model``, ``dim_feedforward``, hidden
  sizes, ``output_dim``) at most ``MAX_WIDTH`` = 8192: one 8192x8192 float32 Linear is 268 MB;
* ``k`` at most ``MAX_NEIGHBOURS`` = 1024 (jets are capped at 100 particles by default; the
  neighbour tensor is jets x particles x k x width);
* layer counts at most ``MAX_LAYERS`` = 64 (published models use 2-4);
* ``n_heads`` at most 256, LoRA ``rank`` at most 1024, at most 4096 classes per head;
* ``dropout`` in [0, 1); LoRA ``alpha`` and transformer ``beta`` finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features.names import N_FEATURES
from rs3l_coffea.typed_config import (
    Finite,
    PositiveInt,
    StrictBool,
    StrictInt,
    config_dataclass,
    int_between,
    validated,
)

MAX_WIDTH = 8192
MAX_NEIGHBOURS = 1024
MAX_LAYERS = 64
MAX_HEADS = 256
MAX_LORA_RANK = 1024
MAX_CLASSES = 4096

Width = Annotated[
    StrictInt,
    int_between(1, MAX_WIDTH, f"at most {MAX_WIDTH}: one {MAX_WIDTH}x{MAX_WIDTH} Linear is 268 MB"),
]
Layers = Annotated[
    StrictInt, int_between(1, MAX_LAYERS, f"published models use 2-4 layers; at most {MAX_LAYERS}")
]
LayersOrNone = Annotated[
    StrictInt, int_between(0, MAX_LAYERS, f"published models use 2-4 layers; at most {MAX_LAYERS}")
]
Neighbours = Annotated[
    StrictInt,
    int_between(1, MAX_NEIGHBOURS, f"published RS3L uses 24 neighbours; at most {MAX_NEIGHBOURS}"),
]
HeadCount = Annotated[StrictInt, int_between(1, MAX_HEADS, f"at most {MAX_HEADS} attention heads")]
LoRARank = Annotated[StrictInt, int_between(1, MAX_LORA_RANK, f"at most {MAX_LORA_RANK}")]
FeatureIndex = Annotated[
    StrictInt, int_between(0, MAX_WIDTH - 1, "a position in the feature vector")
]


def _hidden_sizes(values: tuple[int, ...]) -> tuple[int, ...]:
    if len(values) > MAX_LAYERS:
        raise ValueError(f"has {len(values)} hidden layers; at most {MAX_LAYERS}")
    return values


def _dropout(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError("must be in [0, 1) (a probability of dropping a unit)")
    return value


def _class_names(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(values) > MAX_CLASSES:
        raise ValueError(f"lists {len(values)} classes; at most {MAX_CLASSES}")
    return values


#: EdgeConv implementation: the max-aggregation shortcut or explicit edge messages.
EdgePath = Literal["algebraic", "general"]
HiddenSizes = Annotated[tuple[Width, ...], AfterValidator(_hidden_sizes)]
Dropout = Annotated[Finite, AfterValidator(_dropout)]


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{what} = {value!r} is not one of {list(choices)}")


@config_dataclass(frozen=True)
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

    ``max_particles`` caps the particles the network sees: only the first ``max_particles``
    slots of ``x (B, P, F)`` enter (rs3l features put the leading-pT particles first), in
    training and inference alike; ``None`` (default, the published model) uses every slot.
    The cost of a step grows with the particles of a jet (kNN quadratically), so a cap trades
    time for the soft tail of the jet.
    """

    input_dim: Width = N_FEATURES
    width: Width = 128
    embed_layers: Layers = 2
    conv_layers: LayersOrNone = 3
    k: Neighbours = 24
    output_hidden: HiddenSizes = (64, 32, 32)
    output_dim: Width = 8
    pool: Literal["sum", "mean"] = "sum"
    pool_first: StrictBool = True
    aggregation: Literal["max", "mean"] = "max"
    edge_path: EdgePath = "algebraic"
    #: Memory control, not architecture: no upper bound.
    gather_budget: PositiveInt = 1 << 23
    max_particles: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.edge_path == "algebraic" and self.aggregation != "max":
            raise ConfigError(
                "DGCNNConfig.edge_path='algebraic' needs aggregation='max' "
                "(the shortcut relies on max commuting with the monotonic ELU); use edge_path='general'"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists), with ``type: "dgcnn"``."""
        out = {"type": "dgcnn", **asdict(self)}
        out["output_hidden"] = list(self.output_hidden)
        return out


@config_dataclass(frozen=True)
class TransformerConfig:
    """Particle-transformer encoder backbone (no positional encoding: particles are a set).

    ``ir_safe=True`` is the JetCLR infrared-safe variant: attention logits get a bias
    ``beta · log pT_j`` of the key particle (so a particle's weight scales as pT^beta) and the
    pool is a pT-weighted mean; pT is recovered from the ``log_pt`` feature at
    ``pt_feature_index``.
    """

    input_dim: Width = N_FEATURES
    d_model: Width = 128
    n_heads: HeadCount = 8
    n_layers: Layers = 4
    dim_feedforward: Width = 256
    dropout: Dropout = 0.0
    output_hidden: HiddenSizes = (64,)
    output_dim: Width = 8
    pool: Literal["mean", "sum"] = "mean"
    ir_safe: StrictBool = False
    beta: Finite = 0.5
    pt_feature_index: FeatureIndex = 0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"TransformerConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if not 0 <= self.pt_feature_index < self.input_dim:
            raise ConfigError(f"TransformerConfig.pt_feature_index={self.pt_feature_index} out of range")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with ``type: "transformer"``."""
        out = {"type": "transformer", **asdict(self)}
        out["output_hidden"] = list(self.output_hidden)
        return out


@config_dataclass(frozen=True)
class HeadConfig:
    """A classification head on the embedding.

    ``kind="linear"`` is the paper's head (one Linear layer); ``"mlp"`` adds ELU hidden layers
    ``hidden``. One class name (default: the head name) → one sigmoid score column named after
    the head; several class names → softmax over them, columns ``"<head>:<class>"``.
    """

    name: str
    kind: Literal["linear", "mlp"] = "linear"
    hidden: HiddenSizes = ()
    classes: Annotated[tuple[str, ...], AfterValidator(_class_names)] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError(f"HeadConfig.name must be a non-empty string, got {self.name!r}")
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


@config_dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the backbone's Linear layers: ``W + (alpha/rank)·B·A``."""

    rank: LoRARank = 4
    alpha: Finite = 8.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


@config_dataclass(frozen=True)
class ModelConfig:
    """A whole :class:`~rs3l_coffea.nn.JetModel`: backbone, heads and optional LoRA adapters."""

    backbone: DGCNNConfig | TransformerConfig = field(default_factory=lambda: DGCNNConfig())
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
        backbone = validated(backbone_classes[kind], backbone_values, f"{kind} backbone config")
        heads_values = values.get("heads", ())
        if not isinstance(heads_values, list | tuple):
            raise ConfigError(f"model config heads must be a list, got {heads_values!r}")
        heads = tuple(validated(HeadConfig, h, "head config") for h in heads_values)
        lora_values = values.get("lora")
        lora = None if lora_values is None else validated(LoRAConfig, lora_values, "lora config")
        return cls(backbone=backbone, heads=heads, lora=lora)
