"""Training configuration: a dataclass schema, YAML loading and ``--set key.path=value`` overrides.

Every value is checked against the schema before any data is read or any model is built:
an unknown key, a wrong type or a value outside its choices raises :class:`ConfigError`
naming the dotted key, the offending value and what would have been valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from rs3l_coffea.errors import ConfigError

Task = Literal["pretrain", "finetune", "supervised"]

#: Re-simulation variant names accepted by ``data.augmentations`` and their ntuple codes: the
#: codes ``Event.VariantCode`` of ``rs3l_coffea.generation`` writes (a test checks they agree;
#: kept as a literal here so that reading a config does not import the generation stack).
#: -1..2 follow the published RS3L ``vartype``; 3 was their Herwig slot, here Vincia shower +
#: alternative string fragmentation; 4 Vincia alone; 5 re-hadronization of the nominal shower.
VARIANT_CODES: dict[str, int] = {
    "nominal": -1,
    "seed": 0,
    "fsr_up": 1,
    "fsr_down": 2,
    "vincia_althad": 3,
    "vincia": 4,
    "rehadronize": 5,
}
VARIANT_NAMES: dict[int, str] = {code: name for name, code in VARIANT_CODES.items()}


@dataclass
class DataConfig:
    """Where the training ntuples are and how they are streamed."""

    #: Ntuple shard paths or glob patterns (ROOT files written by ``rs3l ntuple``).
    files: list[str] = field(default_factory=list)
    #: Re-simulated variants used as positive partners / augmentation mix.
    augmentations: list[str] = field(
        default_factory=lambda: [name for name in VARIANT_CODES if name != "nominal"]
    )
    #: Jets per batch for classification, pairs per batch (P) for pretraining (paper: 100).
    batch_size: int = 100
    #: Size of the streaming shuffle buffer (rows held in memory per worker).
    shuffle_buffer: int = 2000
    #: Rows read per uproot chunk.
    step_size: int = 1000
    #: DataLoader worker processes; shards are split between them.
    num_workers: int = 0
    #: Fine-tuning / supervised: draw classes with equal probability.
    balance_classes: bool = True
    #: Fine-tuning / supervised: also train on the re-simulated partner jets (augmentation mix).
    use_partner_jets: bool = True
    #: Fraction of hard events reserved for pretraining; the rest form the fine-tuning pool.
    pretrain_fraction: float = 0.5
    #: Fractions of each pool going to validation and test (the rest is training).
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    #: Salt of the hard-event-id hash deciding pools and splits (change to reshuffle splits).
    split_salt: int = 0
    #: How a pretraining jet's positive partner is made (see ``training.partners``).
    partner: Literal["resim", "symmetry", "resim+symmetry"] = "resim"
    #: Symmetry augmentations (``rs3l_coffea.augment``) for ``symmetry`` partners.
    symmetry_augmentations: list[str] = field(default_factory=list)
    symmetry_params: dict[str, Any] = field(default_factory=dict)
    #: Number of classes (truth labels 0..n_classes-1); others are dropped.
    n_classes: int = 2


@dataclass
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9


@dataclass
class SchedulerConfig:
    #: ``step``: StepLR(step_size, gamma) per epoch as the paper (50, 0.5); ``cosine``: to 0.
    name: Literal["step", "cosine", "none"] = "step"
    step_size: int = 50
    gamma: float = 0.5


@dataclass
class LossConfig:
    name: Literal["ntxent", "vicreg"] = "ntxent"
    temperature: float = 0.1
    vicreg_invariance: float = 25.0
    vicreg_variance: float = 25.0
    vicreg_covariance: float = 1.0


@dataclass
class FinetuneConfig:
    #: fixed: backbone frozen, head trained; floating: all trained; lora: adapters + head.
    mode: Literal["fixed", "floating", "lora"] = "fixed"
    #: Pretrained model (``rs3l_coffea.nn.save_model`` file) for ``rs3l train finetune``.
    backbone: str | None = None
    lora_rank: int = 4
    lora_alpha: float = 8.0


@dataclass
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
    seed: int = 0
    epochs: int = 10
    #: Stop an epoch after this many steps (None: the whole stream).
    max_steps_per_epoch: int | None = None
    #: Validation batches per epoch (None: the whole validation stream).
    max_val_steps: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Mixed precision (autocast) — only ever applied on CUDA.
    amp: bool = True
    #: Write a checkpoint every N optimizer steps (and at every epoch end).
    checkpoint_every: int = 200
    #: Stop when the validation loss has not improved for this many epochs (None: never).
    early_stopping_patience: int | None = 10
    #: Run the backbone on jets sorted by multiplicity in buckets of this many jets, each trimmed
    #: to its largest jet (less padding, same results); None: one batch trimmed to its largest jet.
    bucket_jets: int | None = 32
    #: torch CPU threads (None: leave torch's default).
    threads: int | None = None
    #: Rich progress bars.
    progress: bool = True
    #: Output directory: checkpoints/, metrics.csv, metrics.jsonl, model.safetensors.
    out_dir: str = "train-output"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-serialisable)."""
        return dataclasses.asdict(self)


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Read a YAML file (optional), merge ``base`` and ``key.path=value`` overrides, validate.

    Override values are parsed as YAML (``1e-3``, ``true``, ``[seed, fsr_up]``).
    """
    raw: dict[str, Any] = {}
    if base:
        _deep_merge(raw, dict(base))
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping, got {loaded!r}")
        _deep_merge(raw, loaded)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: value is not valid YAML") from error
        _set_dotted(raw, key.strip(), value)
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping."""
    config = _build(TrainConfig, raw, prefix="")
    _check_values(config)
    return config


def _deep_merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config section {where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; valid keys in {where}: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"config key {key}: invalid value {value!r}; valid choices: {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"config key {key}: invalid value {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        (item_hint,) = get_args(hint) or (Any,)
        return [_coerce(item_hint, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept what float() accepts.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key {key}: unsupported type {hint!r}")  # pragma: no cover


def _positive(value: float | int | None, key: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key {key}: invalid value {value!r}; must be {bound}")


def _check_values(config: TrainConfig) -> None:
    """Range checks the type system cannot express."""
    data = config.data
    for i, name in enumerate(data.augmentations):
        if name not in VARIANT_CODES or name == "nominal":
            valid = [n for n in VARIANT_CODES if n != "nominal"]
            raise ConfigError(
                f"config key data.augmentations[{i}]: invalid value {name!r}; valid choices: {valid}"
            )
    _positive(data.batch_size, "data.batch_size")
    _positive(data.shuffle_buffer, "data.shuffle_buffer")
    _positive(data.step_size, "data.step_size")
    _positive(data.num_workers, "data.num_workers", allow_zero=True)
    _positive(data.n_classes, "data.n_classes")
    for key in ("pretrain_fraction", "val_fraction", "test_fraction"):
        value = getattr(data, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"config key data.{key}: invalid value {value!r}; must be in [0, 1]")
    if data.val_fraction + data.test_fraction >= 1.0:
        raise ConfigError(
            f"config keys data.val_fraction + data.test_fraction = "
            f"{data.val_fraction + data.test_fraction!r}; must be < 1"
        )
    _positive(config.optimizer.lr, "optimizer.lr")
    _positive(config.optimizer.weight_decay, "optimizer.weight_decay", allow_zero=True)
    _positive(config.scheduler.step_size, "scheduler.step_size")
    _positive(config.scheduler.gamma, "scheduler.gamma")
    _positive(config.loss.temperature, "loss.temperature")
    _positive(config.finetune.lora_rank, "finetune.lora_rank")
    _positive(config.epochs, "epochs")
    _positive(config.max_steps_per_epoch, "max_steps_per_epoch")
    _positive(config.max_val_steps, "max_val_steps")
    _positive(config.checkpoint_every, "checkpoint_every")
    _positive(config.early_stopping_patience, "early_stopping_patience")
    _positive(config.threads, "threads")
    _positive(config.bucket_jets, "bucket_jets")
