"""The study configuration: a pydantic schema of the YAML file given to ``rs3l report --config``.

Unknown keys and wrongly typed values are :class:`~rs3l_coffea.errors.ConfigError`\\ s that name
the dotted key (``classifier.epochs``) and, when read from a file, the file. Cross-field rules
(variant names, tasks, fractions) are checked after the types, before any stage runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from rs3l_coffea.errors import ConfigError

PathLike = str | os.PathLike[str]

#: Background jets: every QCD-like truth label (``rs3l_coffea.features.JetLabel`` names).
QCD_LABELS: tuple[str, ...] = ("LIGHT", "C", "B", "G_QQ", "G_CC", "G_BB", "G_GG")
#: Signal truth label per task; ``hbb`` is in-domain (pretraining sees H→bb and QCD jets),
#: ``wqq`` out-of-domain (no W jet enters pretraining).
TASK_SIGNALS: dict[str, str] = {"hbb": "H_BB", "wqq": "W_QQ"}
TASK_TITLES: dict[str, str] = {"hbb": "H→bb vs QCD (in-domain)", "wqq": "W→qq vs QCD (out-of-domain)"}
#: Classifier models trained per task, labelled size and seed.
CLASSIFIERS: tuple[str, ...] = ("fixed", "floating", "supervised")
MODEL_TITLES: dict[str, str] = {
    "fixed": "RS3L fixed",
    "floating": "RS3L floating",
    "supervised": "supervised",
    "n2": "N2 baseline (groomed, CMS n2b1)",
}
PRETRAIN_KINDS: dict[str, str] = {
    "resim": "re-simulation only",
    "symmetry": "symmetry augmentations only",
    "resim+symmetry": "re-simulation + symmetry augmentations",
}
SIGNAL_EFFICIENCIES: tuple[float, ...] = (0.3, 0.5, 0.7)


def _no_bool(value: Any) -> Any:
    # pydantic's lax float takes True as 1.0; a YAML boolean where a number belongs is a typo.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


#: A float that also takes YAML's ``1e-3`` (a string to PyYAML) and integers, never booleans.
Number = Annotated[float, Field(strict=False), BeforeValidator(_no_bool)]
#: Learning rates, temperatures: finite and > 0 (checked when the study starts, not hours later
#: when the trainer gets them).
PositiveNumber = Annotated[float, Field(strict=False, gt=0, allow_inf_nan=False), BeforeValidator(_no_bool)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


class GenerationSection(_Section):
    """Hard events per process and the variants showered from each."""

    #: Hard events per process (per variant); ``wz_qq`` is the out-of-domain W→qq signal.
    events: dict[str, int] = Field(default_factory=lambda: {"zh_bb": 2000, "zj": 4000, "wz_qq": 1000})
    #: Variants of the in-domain samples (nominal must be first; vincia = alternative shower).
    variants: list[str] = Field(default_factory=lambda: ["nominal", "seed", "fsr_up", "fsr_down", "vincia"])
    #: Variants of the out-of-domain sample (nominal is enough for testing; more cost time).
    ood_variants: list[str] = Field(default_factory=lambda: ["nominal", "vincia"])
    chunk_size: int = 2000
    workers: int = 2
    eta_max: Number | None = 2.0
    seed: int = 1
    #: Keep the generated ROOT files. By default each chunk is turned into ntuples as soon as it
    #: exists and its ROOT files (~9 KB per event and variant) are deleted: peak disk use is one
    #: chunk of ROOT plus the ntuples. Does not change any result, so it is not part of a
    #: stage's fingerprint.
    keep_root: bool = False


class SplitSection(_Section):
    """Pools and splits by hard-event id, and the labelled training-set sizes."""

    pretrain_fraction: Number = 0.5
    val_fraction: Number = 0.1
    test_fraction: Number = 0.3
    salt: int = 0
    #: Labelled nominal jets for fine-tuning / supervised training (half signal, half QCD).
    labelled_sizes: list[int] = Field(default_factory=lambda: [200, 1000])
    #: Cap on validation jets per labelled set.
    max_val_jets: int = 1000
    selection: str = "generated"
    shard_size: int = 5000


class PretrainSection(_Section):
    epochs: PositiveInt = 5
    batch_size: PositiveInt = 100
    lr: PositiveNumber = 1e-3
    temperature: PositiveNumber = 0.1
    max_steps_per_epoch: PositiveInt | None = None
    #: Re-simulated variants used as positive partners.
    variants: list[str] = Field(default_factory=lambda: ["seed", "fsr_up", "fsr_down", "vincia"])
    #: Also pretrain with symmetry augmentations only and with both (issue 10 comparison).
    symmetry_comparison: bool = True
    #: JetCLR augmentations for those runs (``rs3l_coffea.augment`` spec).
    symmetry_augmentations: str = "rotate,translate,smear"
    seed: int = 0
    #: Further trainer keys (``rs3l_coffea.training.config``), e.g. ``{scheduler: {name: cosine}}``.
    extra: dict[str, Any] = Field(default_factory=dict)
    #: Further re-simulated pairs pretrained on beside the study's own pool: ntuple directories or
    #: files of ``rs3l ntuple`` (``~`` expanded; relative paths from the working directory), e.g.
    #: W→qq jets generated in every variant. The trainer keeps their jets whose hard event falls in
    #: the pretraining pool (``split.pretrain_fraction`` of them) as it does the study's own.
    extra_pairs: list[str] = Field(default_factory=list)


class ClassifierSection(_Section):
    """Fine-tuning (fixed, floating) and the supervised baseline share these settings."""

    epochs: PositiveInt = 10
    #: Small labelled sets get more epochs: at least this many optimizer steps per training.
    min_steps: NonNegativeInt = 0
    batch_size: PositiveInt = 50
    lr: PositiveNumber = 1e-3
    #: Learning rate of the floating fine-tuning (the whole network; the paper uses a smaller one).
    floating_lr: PositiveNumber = 5e-4
    #: Learning rate of the head on the frozen backbone (None: ``lr``). The frozen embedding is
    #: small and clustered (unit-scale outputs of a contrastive model), so the head needs larger steps.
    fixed_lr: PositiveNumber | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    tasks: list[str] = Field(default_factory=lambda: ["hbb", "wqq"])
    models: list[str] = Field(default_factory=lambda: list(CLASSIFIERS))
    #: Also train on the re-simulated partners of the labelled jets (augmentation mix).
    use_partner_jets: bool = False
    early_stopping_patience: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class EvaluationSection(_Section):
    tsne_points: int = 600
    corner_points: int = 800
    knn_k: int = 15
    anomaly_epochs: int = 40
    #: Particles per model call in the inference engine (memory bound).
    particle_budget: int = 4096
    #: Bootstrap resamples behind every W1 uncertainty and statistical floor (docs/evaluation.md).
    bootstrap: int = 50


class StudyConfig(_Section):
    """Top-level schema of a study YAML file (``rs3l report --config``)."""

    name: str = "study"
    description: str = ""
    #: torch CPU threads for training and inference.
    threads: int = 2
    #: ``auto`` uses CUDA when present (the knob for GPU runs), else ``cpu``.
    device: str = "cpu"
    #: ``rs3l_coffea.nn.build_model`` configuration of the backbone (same for every model).
    model: dict[str, Any] = Field(
        default_factory=lambda: {
            "backbone": {"width": 32, "k": 8, "conv_layers": 2, "output_hidden": [32, 16], "output_dim": 8}
        }
    )
    generation: GenerationSection = Field(default_factory=GenerationSection)
    split: SplitSection = Field(default_factory=SplitSection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    classifier: ClassifierSection = Field(default_factory=ClassifierSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    #: Free-text notes copied into the report (written before the run: no numbers here).
    notes: list[str] = Field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The whole configuration as plain JSON-able data (recorded in the report)."""
        return self.model_dump()


def config_error(error: ValidationError, source: str, what: str = "study config") -> ConfigError:
    """The first validation problem as one line naming the dotted key (and the file)."""
    problem = error.errors()[0]
    key = ".".join(str(part) for part in problem["loc"]) or "<top level>"
    where = f" in {source}" if source else ""
    if problem["type"] == "extra_forbidden":
        return ConfigError(f"unknown {what} key {key}{where}")
    return ConfigError(f"{what} key {key}{where}: {problem['msg']}, got {problem.get('input')!r}")


def read_yaml(path: PathLike, what: str = "study configuration") -> Any:
    """The parsed YAML of ``path`` (ConfigError naming the file when it is missing or not YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from error


def study_config_from_dict(raw: Mapping[str, Any], source: str = "") -> StudyConfig:
    """Validate a nested mapping into a :class:`StudyConfig` (ConfigError naming the key)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"study configuration {source or ''} must hold a mapping, got {raw!r}")
    try:
        config = StudyConfig.model_validate(dict(raw))
    except ValidationError as error:
        raise config_error(error, source) from None
    try:
        _check_study(config)
    except ConfigError as error:
        if source:
            raise ConfigError(f"{error} (in {source})") from None
        raise
    return config


def load_study_config(path: PathLike) -> StudyConfig:
    """Read and validate a study YAML file."""
    return study_config_from_dict(read_yaml(path), source=str(path))


def _check_generation(config: StudyConfig) -> None:
    from rs3l_coffea.generation import PROCESSES, VARIANTS

    gen = config.generation
    for process, n in gen.events.items():
        if process not in PROCESSES:
            raise ConfigError(f"study config key generation.events: unknown process {process!r}; valid: {sorted(PROCESSES)}")
        if n <= 0:
            raise ConfigError(f"study config key generation.events.{process}: need a positive integer, got {n!r}")
    for needed in ("zh_bb", "zj"):
        if needed not in gen.events:
            raise ConfigError(f"study config key generation.events: the study needs {needed!r}")
    for key in ("variants", "ood_variants"):
        names = getattr(gen, key)
        if not names or names[0] != "nominal":
            raise ConfigError(f"study config key generation.{key}: must start with 'nominal', got {names}")
        for name in names:
            if name not in VARIANTS:
                raise ConfigError(f"study config key generation.{key}: unknown variant {name!r}; valid: {list(VARIANTS)}")
    if gen.chunk_size < 1 or gen.workers < 1:
        raise ConfigError(f"study config key generation: chunk_size and workers must be >= 1, got {gen.chunk_size}, {gen.workers}")


def _check_study(config: StudyConfig) -> None:
    _check_generation(config)
    gen = config.generation
    if not config.pretrain.variants:
        raise ConfigError("study config key pretrain.variants: RS3L pretraining needs at least one variant")
    for name in config.pretrain.variants:
        if name not in gen.variants or name == "nominal":
            raise ConfigError(
                f"study config key pretrain.variants: {name!r} is not a generated non-nominal variant {gen.variants[1:]}"
            )
    cls = config.classifier
    for task in cls.tasks:
        if task not in TASK_SIGNALS:
            raise ConfigError(f"study config key classifier.tasks: unknown task {task!r}; valid: {list(TASK_SIGNALS)}")
    if "wqq" in cls.tasks and "wz_qq" not in gen.events and "wj_qq" not in gen.events:
        raise ConfigError("study config: task 'wqq' needs generation.events.wz_qq (or wj_qq)")
    for model in cls.models:
        if model not in CLASSIFIERS:
            raise ConfigError(f"study config key classifier.models: unknown model {model!r}; valid: {list(CLASSIFIERS)}")
    if len(cls.seeds) < 1 or len(set(cls.seeds)) != len(cls.seeds):
        raise ConfigError(f"study config key classifier.seeds: need distinct seeds, got {cls.seeds}")
    sizes = config.split.labelled_sizes
    if not sizes or any(s < 2 for s in sizes):
        raise ConfigError(f"study config key split.labelled_sizes: need integers >= 2, got {sizes}")
    if config.device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"study config key device: {config.device!r} is not one of cpu, cuda, auto")
    if config.threads < 1:
        raise ConfigError(f"study config key threads: must be >= 1, got {config.threads}")
    if config.evaluation.bootstrap < 2:
        raise ConfigError(f"study config key evaluation.bootstrap: need >= 2 resamples, got {config.evaluation.bootstrap}")
    sp = config.split
    if not 0 < sp.pretrain_fraction < 1 or sp.val_fraction + sp.test_fraction >= 1:
        raise ConfigError(
            f"study config key split: need 0 < pretrain_fraction < 1 and val_fraction + test_fraction < 1, got {sp}"
        )
    if config.pretrain.symmetry_comparison:
        from rs3l_coffea.augment.registry import build_augmentation

        build_augmentation(config.pretrain.symmetry_augmentations)
