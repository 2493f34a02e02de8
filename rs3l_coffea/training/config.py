"""Training configuration: a typed schema, YAML loading and ``--set key.path=value`` overrides.

The schema is a set of pydantic dataclasses (:mod:`rs3l_coffea.typed_config`). Every value is
checked before any data is read or any model is built: an unknown key, a wrong type, a
non-finite number or a value outside its range raises :class:`ConfigError` naming the dotted
key, the offending value and what would have been valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator

from rs3l_coffea.errors import ConfigError
from rs3l_coffea.typed_config import (
    Finite,
    NonNegativeFinite,
    NonNegativeInt,
    PositiveFinite,
    PositiveInt,
    SplitCommas,
    StrictBool,
    config_dataclass,
    deep_merge,
    parse_override,
    read_yaml_mapping,
    set_dotted,
)
from rs3l_coffea.variants import VARIANT_NAMES as VARIANT_NAMES  # re-exported
from rs3l_coffea.variants import AugmentationName

Task = Literal["pretrain", "finetune", "supervised"]

# Re-simulation variant names and codes: one list, in rs3l_coffea.variants (re-exported here).
_KEY = "config key"


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be in [0, 1]")
    return value


Fraction = Annotated[Finite, AfterValidator(_fraction)]


@config_dataclass(key_prefix=_KEY)
class DataConfig:
    """Where the training ntuples are and how they are streamed."""

    #: Ntuple shard paths or glob patterns (ROOT files written by ``rs3l ntuple``).
    files: Annotated[list[str], SplitCommas] = field(default_factory=list)
    #: Re-simulated variants used as positive partners / augmentation mix.
    augmentations: Annotated[list[AugmentationName], SplitCommas] = field(
        default_factory=lambda: list(get_args(AugmentationName))
    )
    #: Jets per batch for classification, pairs per batch (P) for pretraining (paper: 100).
    batch_size: PositiveInt = 100
    #: Size of the streaming shuffle buffer (rows held in memory per worker).
    shuffle_buffer: PositiveInt = 2000
    #: Rows read per uproot chunk.
    step_size: PositiveInt = 1000
    #: Decompressed ntuple chunks kept in memory (MB, per process; 0: none). A small labelled set
    #: is read every epoch and every validation; kept, it is decompressed once. Memory, not
    #: results: the batches are the same either way.
    read_cache_mb: NonNegativeInt = 1024
    #: DataLoader worker processes; shards are split between them.
    num_workers: NonNegativeInt = 0
    #: Fine-tuning / supervised: draw classes with equal probability.
    balance_classes: StrictBool = True
    #: Fine-tuning / supervised: also train on the re-simulated partner jets (augmentation mix).
    use_partner_jets: StrictBool = True
    #: Fraction of hard events reserved for pretraining; the rest form the fine-tuning pool.
    pretrain_fraction: Fraction = 0.5
    #: Fractions of each pool going to validation and test (the rest is training).
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    #: Salt of the hard-event-id hash deciding pools and splits (change to reshuffle splits).
    split_salt: NonNegativeInt = 0
    #: How a pretraining jet's positive partner is made (see ``training.partners``).
    partner: Literal["resim", "symmetry", "resim+symmetry"] = "resim"
    #: Symmetry augmentations (``rs3l_coffea.augment``) for ``symmetry`` partners.
    symmetry_augmentations: Annotated[list[str], SplitCommas] = field(default_factory=list)
    symmetry_params: dict[str, Any] = field(default_factory=dict)
    #: Number of classes (truth labels 0..n_classes-1); others are dropped.
    n_classes: PositiveInt = 2


@config_dataclass(key_prefix=_KEY)
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFinite = 1e-3
    weight_decay: NonNegativeFinite = 0.0
    momentum: NonNegativeFinite = 0.9


@config_dataclass(key_prefix=_KEY)
class SchedulerConfig:
    #: ``step``: StepLR(step_size, gamma) per epoch as the paper (50, 0.5); ``cosine``: to 0.
    name: Literal["step", "cosine", "none"] = "step"
    step_size: PositiveInt = 50
    gamma: PositiveFinite = 0.5


@config_dataclass(key_prefix=_KEY)
class LossConfig:
    name: Literal["ntxent", "vicreg"] = "ntxent"
    temperature: PositiveFinite = 0.1
    #: VICReg term weights: a negative weight would reward what the term penalises.
    vicreg_invariance: NonNegativeFinite = 25.0
    vicreg_variance: NonNegativeFinite = 25.0
    vicreg_covariance: NonNegativeFinite = 1.0


@config_dataclass(key_prefix=_KEY)
class FinetuneConfig:
    #: fixed: backbone frozen, head trained; floating: all trained; lora: adapters + head.
    mode: Literal["fixed", "floating", "lora"] = "fixed"
    #: Pretrained model (``rs3l_coffea.nn.save_model`` file) for ``rs3l train finetune``.
    backbone: str | None = None
    lora_rank: PositiveInt = 4
    lora_alpha: Finite = 8.0


@config_dataclass(key_prefix=_KEY)
class TrainConfig:
    """Top-level schema of a training YAML file."""

    task: Task = "pretrain"
    #: Passed to ``rs3l_coffea.nn.build_model`` unchanged (the nn package validates it).
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    #: Seeds torch, numpy and the data stream (>= 0: numpy and torch generators need it).
    seed: NonNegativeInt = 0
    epochs: PositiveInt = 10
    #: Stop an epoch after this many steps (None: the whole stream).
    max_steps_per_epoch: PositiveInt | None = None
    #: Validation batches per epoch (None: the whole validation stream).
    max_val_steps: PositiveInt | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Mixed precision (autocast) — only ever applied on CUDA.
    amp: StrictBool = True
    #: Write a checkpoint every N optimizer steps (and at every epoch end).
    checkpoint_every: PositiveInt = 200
    #: Stop when the validation loss has not improved for this many epochs (None: never).
    early_stopping_patience: PositiveInt | None = 10
    #: Run the backbone on jets sorted by multiplicity in buckets of this many jets, each trimmed
    #: to its largest jet (less padding, same results); None: one batch trimmed to its largest jet.
    bucket_jets: PositiveInt | None = 32
    #: torch CPU threads (None: leave torch's default).
    threads: PositiveInt | None = None
    #: Rich progress bars.
    progress: StrictBool = True
    #: Output directory: checkpoints/, metrics.csv, metrics.jsonl, model.safetensors.
    out_dir: str = "train-output"

    def __post_init__(self) -> None:
        data = self.data
        if data.val_fraction + data.test_fraction >= 1.0:
            raise ConfigError(
                f"config keys data.val_fraction + data.test_fraction = "
                f"{data.val_fraction + data.test_fraction!r}; must be < 1"
            )
        if self.model:
            from rs3l_coffea.nn.config import ModelConfig

            try:
                ModelConfig.from_dict(self.model)
            except ConfigError as error:
                raise ConfigError(f"config key model: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-serialisable)."""
        return asdict(self)


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Layer ``base``, the YAML file ``path``, typed ``settings`` and ``overrides``; validate.

    ``settings`` maps dotted keys to typed values (what the command line's options set);
    ``overrides`` are ``key.path=value`` strings whose values are parsed as YAML (``1e-3``,
    ``true``, ``[seed, fsr_up]``), applied last.
    """
    raw: dict[str, Any] = deep_merge({}, base or {})
    if path is not None:
        deep_merge(raw, read_yaml_mapping(path))
    for key, value in (settings or {}).items():
        set_dotted(raw, key, value, "setting")
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value, "override")
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"training configuration must be a mapping, got {raw!r}")
    return TrainConfig(**raw)
