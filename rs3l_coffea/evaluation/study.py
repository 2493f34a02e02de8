"""The RS3L comparison study end to end: ``rs3l report --config study.yaml --out DIR``.

Stages (each cached in ``DIR``; a marker ``DIR/stages/<stage>.json`` is written atomically when a
stage completes, so re-running skips it and a killed run loses only the stage in progress;
trainings also resume from their own checkpoints):

1. ``generate:<process>`` - ``rs3l_coffea.generation``: ZH(H→bb) signal, Z+jet (QCD-like
   q/c/b/g jets) background, each showered in every configured variant from one hard process;
   W→qq (``wz_qq``) as the out-of-domain signal.
2. ``ntuple`` - ``rs3l_coffea.training.build_ntuples``: nominal jets paired with their
   re-simulated counterparts.
3. ``split`` - pools disjoint by hard-event id (``rs3l_coffea.training.assign_split``, the same
   hash the trainer uses): the *pretraining* pool (H→bb and QCD jets; W→qq never enters
   pretraining) and the *fine-tuning* pool, cut into labelled training sets of each configured
   size (half signal, half background, the same jets for every model), a validation set and the
   held-out test sets (``test-hbb``: H→bb vs QCD, ``test-wqq``: W→qq vs QCD).
4. ``pretrain:<kind>`` - NT-Xent pretraining on re-simulated pairs (``resim``), and for the
   symmetry comparison (JetCLR augmentations only, ``symmetry``; both, ``resim+symmetry``).
5. ``train:<task>:<model>:<size>:s<seed>`` - RS3L fine-tuning (``fixed`` backbone and
   ``floating``) and the ``supervised`` baseline (same architecture, from scratch) per task,
   labelled size and seed.
6. ``score:*`` / ``embed:*`` / ``n2`` - scores and embeddings on the test sets, N2 from the
   test jets' stored constituents (fastjet energy correlator, the network's own inputs).
7. ``report`` - tables, figures, ``results.json`` and ``report.md`` through
   :func:`rs3l_coffea.evaluation.write_report`; redone whenever a stage ran, an input file or
   this module's code changed.

The configuration schema is :class:`StudyConfig` (YAML, see ``studies/tiny.yaml`` and
``studies/default.yaml``); unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.errors import ConfigError, InputFileError

PathLike = str | os.PathLike[str]
Log = Callable[[str], None]

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
    "n2": "N2 baseline",
}
PRETRAIN_KINDS: dict[str, str] = {
    "resim": "re-simulation only",
    "symmetry": "symmetry augmentations only",
    "resim+symmetry": "re-simulation + symmetry augmentations",
}
SIGNAL_EFFICIENCIES: tuple[float, ...] = (0.3, 0.5, 0.7)


# --- configuration ------------------------------------------------------------------------------


@dataclass
class GenerationSection:
    """Hard events per process and the variants showered from each."""

    #: Hard events per process (per variant); ``wz_qq`` is the out-of-domain W→qq signal.
    events: dict[str, int] = field(default_factory=lambda: {"zh_bb": 2000, "zj": 4000, "wz_qq": 1000})
    #: Variants of the in-domain samples (nominal must be first; vincia = alternative shower).
    variants: list[str] = field(default_factory=lambda: ["nominal", "seed", "fsr_up", "fsr_down", "vincia"])
    #: Variants of the out-of-domain sample (nominal is enough for testing; more cost time).
    ood_variants: list[str] = field(default_factory=lambda: ["nominal", "vincia"])
    chunk_size: int = 2000
    workers: int = 2
    eta_max: float | None = 2.0
    seed: int = 1


@dataclass
class SplitSection:
    """Pools and splits by hard-event id, and the labelled training-set sizes."""

    pretrain_fraction: float = 0.5
    val_fraction: float = 0.1
    test_fraction: float = 0.3
    salt: int = 0
    #: Labelled nominal jets for fine-tuning / supervised training (half signal, half QCD).
    labelled_sizes: list[int] = field(default_factory=lambda: [200, 1000])
    #: Cap on validation jets per labelled set.
    max_val_jets: int = 1000
    selection: str = "generated"
    shard_size: int = 5000


@dataclass
class PretrainSection:
    epochs: int = 5
    batch_size: int = 100
    lr: float = 1e-3
    temperature: float = 0.1
    max_steps_per_epoch: int | None = None
    #: Re-simulated variants used as positive partners.
    variants: list[str] = field(default_factory=lambda: ["seed", "fsr_up", "fsr_down", "vincia"])
    #: Also pretrain with symmetry augmentations only and with both (issue 10 comparison).
    symmetry_comparison: bool = True
    #: JetCLR augmentations for those runs (``rs3l_coffea.augment`` spec).
    symmetry_augmentations: str = "rotate,translate,smear"
    seed: int = 0
    #: Further trainer keys (``rs3l_coffea.training.config``), e.g. ``{scheduler: {name: cosine}}``.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassifierSection:
    """Fine-tuning (fixed, floating) and the supervised baseline share these settings."""

    epochs: int = 10
    #: Small labelled sets get more epochs: at least this many optimizer steps per training.
    min_steps: int = 0
    batch_size: int = 50
    lr: float = 1e-3
    #: Learning rate of the floating fine-tuning (the whole network; the paper uses a smaller one).
    floating_lr: float = 5e-4
    #: Learning rate of the head on the frozen backbone (None: ``lr``). The frozen embedding is
    #: small and clustered (unit-scale outputs of a contrastive model), so the head needs larger steps.
    fixed_lr: float | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    tasks: list[str] = field(default_factory=lambda: ["hbb", "wqq"])
    models: list[str] = field(default_factory=lambda: list(CLASSIFIERS))
    #: Also train on the re-simulated partners of the labelled jets (augmentation mix).
    use_partner_jets: bool = False
    early_stopping_patience: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationSection:
    tsne_points: int = 600
    corner_points: int = 800
    knn_k: int = 15
    anomaly_epochs: int = 40
    #: Particles per model call in the inference engine (memory bound).
    particle_budget: int = 4096


@dataclass
class StudyConfig:
    """Top-level schema of a study YAML file (``rs3l report --config``)."""

    name: str = "study"
    description: str = ""
    #: torch CPU threads for training and inference.
    threads: int = 2
    #: ``auto`` uses CUDA when present (the knob for GPU runs), else ``cpu``.
    device: str = "cpu"
    #: ``rs3l_coffea.nn.build_model`` configuration of the backbone (same for every model).
    model: dict[str, Any] = field(
        default_factory=lambda: {
            "backbone": {"width": 32, "k": 8, "conv_layers": 2, "output_hidden": [32, 16], "output_dim": 8}
        }
    )
    generation: GenerationSection = field(default_factory=GenerationSection)
    split: SplitSection = field(default_factory=SplitSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    classifier: ClassifierSection = field(default_factory=ClassifierSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    #: Free-text notes copied into the report (written before the run: no numbers here).
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build_section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"study config section {where or '<top level>'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown study config key {where + '.' if where else ''}{unknown[0]}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else fields[name].default  # type: ignore[misc]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build_section(type(default), value, key)
        else:
            kwargs[name] = _check_type(key, value, default)
    return cls(**kwargs)


def _check_type(key: str, value: Any, default: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"study config key {key}: expected {type(default).__name__}, got {value!r}")
    return value


def study_config_from_dict(raw: Mapping[str, Any]) -> StudyConfig:
    """Validate a nested mapping into a :class:`StudyConfig` (ConfigError naming the key)."""
    config = _build_section(StudyConfig, raw, "")
    _check_study(config)
    return config


def load_study_config(path: PathLike) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study configuration {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"study configuration {path} is not valid YAML: {error}") from error
    if not isinstance(raw, Mapping):
        raise ConfigError(f"study configuration {path} must hold a mapping, got {raw!r}")
    return study_config_from_dict(raw)


def _check_study(config: StudyConfig) -> None:
    from rs3l_coffea.generation import PROCESSES, VARIANTS

    gen = config.generation
    for process, n in gen.events.items():
        if process not in PROCESSES:
            raise ConfigError(f"study config key generation.events: unknown process {process!r}; valid: {sorted(PROCESSES)}")
        if not isinstance(n, int) or n <= 0:
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
    for name in config.pretrain.variants:
        if name not in gen.variants or name == "nominal":
            raise ConfigError(
                f"study config key pretrain.variants: {name!r} is not a generated non-nominal variant {gen.variants[1:]}"
            )
    if not config.pretrain.variants:
        raise ConfigError("study config key pretrain.variants: RS3L pretraining needs at least one variant")
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
    if not sizes or any((not isinstance(s, int)) or s < 2 for s in sizes):
        raise ConfigError(f"study config key split.labelled_sizes: need integers >= 2, got {sizes}")
    if config.device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"study config key device: {config.device!r} is not one of cpu, cuda, auto")
    if config.threads < 1:
        raise ConfigError(f"study config key threads: must be >= 1, got {config.threads}")
    sp = config.split
    if not 0 < sp.pretrain_fraction < 1 or sp.val_fraction + sp.test_fraction >= 1:
        raise ConfigError(
            f"study config key split: need 0 < pretrain_fraction < 1 and val_fraction + test_fraction < 1, got {sp}"
        )
    if config.pretrain.symmetry_comparison:
        from rs3l_coffea.augment.registry import build_augmentation

        build_augmentation(config.pretrain.symmetry_augmentations)


def file_digest(path: PathLike) -> str:
    """SHA-256 of a file's bytes (derived stages are redone when a model file changes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def slug(name: str) -> str:
    """A file- and stage-name-safe version of a display name."""
    import re

    return re.sub(r"[^a-z0-9+]+", "-", name.lower()).strip("-")


def fingerprint(value: Any) -> str:
    """A short stable hash of a JSON-able value (what a stage's result depends on)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- stage bookkeeping --------------------------------------------------------------------------


class Stages:
    """Run-once stages with atomic completion markers under ``<out>/stages``."""

    def __init__(self, out_dir: Path, log: Log) -> None:
        self.dir = out_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.wall: dict[str, float] = {}
        self.skipped: list[str] = []
        self.ran: list[str] = []

    def marker(self, name: str) -> Path:
        return self.dir / (name.replace(":", "__").replace("+", "_plus_").replace("/", "_") + ".json")

    def run(self, name: str, depends: Any, fn: Callable[[], Any], derived: bool = False) -> Any:
        """Run ``fn`` unless ``name`` completed with the same ``depends``; return its result.

        A finished stage whose ``depends`` changed is an error (the out dir holds another
        configuration's results), except for ``derived`` stages (scores, embeddings of a model
        file): those are recomputed when their input changed.
        """
        marker = self.marker(name)
        key = fingerprint(depends)
        if marker.is_file():
            record = json.loads(marker.read_text())
            if record["fingerprint"] != key and derived:
                self.log(f"[redo] {name}: its inputs changed")
                marker.unlink()
                return self.run(name, depends, fn, derived)
            if record["fingerprint"] != key:
                old = record.get("depends", {})
                changed = sorted(k for k in set(old) | set(depends) if old.get(k) != depends.get(k))
                raise ConfigError(
                    f"stage {name!r} in {self.dir.parent} was completed with a different configuration "
                    f"(changed: {changed}; marker {marker}); use a fresh --out directory or delete that "
                    "marker and its outputs"
                )
            self.wall[name] = float(record["wall_s"])
            self.skipped.append(name)
            self.log(f"[skip] {name} (done, {record['wall_s']:.1f} s)")
            return record["result"]
        self.log(f"[run ] {name}")
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
        with atomic_open(marker, "w") as handle:
            json.dump({"stage": name, "fingerprint": key, "depends": depends, "wall_s": wall, "result": result,
                       "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, handle, indent=1,
                      default=str)
        self.wall[name] = wall
        self.ran.append(name)
        self.log(f"[done] {name} in {wall:.1f} s")
        return result


# --- data ---------------------------------------------------------------------------------------


def _label_codes(names: Sequence[str]) -> list[int]:
    from rs3l_coffea.features import JetLabel

    return [int(JetLabel[n]) for n in names]


def _read_ntuple(directory: Path, branches: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    import uproot

    from rs3l_coffea.training.ntuple import BRANCHES, TREE_NAME

    shards = sorted(directory.glob("shard_*.root"))
    if not shards:
        raise InputFileError(f"no ntuple shards in {directory}")
    return uproot.concatenate([f"{s}:{TREE_NAME}" for s in shards], list(branches or BRANCHES), library="np")


def _shard_rows(directory: Path) -> Iterator[dict[str, np.ndarray]]:
    import uproot

    from rs3l_coffea.training.ntuple import BRANCHES, TREE_NAME

    for shard in sorted(directory.glob("shard_*.root")):
        with uproot.open(shard) as handle:
            yield handle[TREE_NAME].arrays(list(BRANCHES), library="np")


def _split_ntuples(config: StudyConfig, ntuple_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Write the pretraining, labelled, validation and test ntuples (see the module docstring)."""
    from rs3l_coffea.training.dataset import assign_split, event_uniform
    from rs3l_coffea.training.ntuple import write_shards

    sp = config.split
    qcd = _label_codes(QCD_LABELS)
    scalars = _read_ntuple(ntuple_dir, ["hard_event_id", "jet_index", "pair_rank", "jettype", "variant"])
    hid, jettype, rank = scalars["hard_event_id"], scalars["jettype"], scalars["pair_rank"]
    pool, split = assign_split(hid, sp.pretrain_fraction, sp.val_fraction, sp.test_fraction, sp.salt)
    is_qcd = np.isin(jettype, qcd)
    signal_code = {task: _label_codes([sig])[0] for task, sig in TASK_SIGNALS.items()}
    jet_key = hid * 64 + scalars["jet_index"].astype(np.int64)  # one key per nominal jet
    selections: dict[str, tuple[np.ndarray, int]] = {}  # output -> (row mask, signal code)
    selections["pretrain"] = ((pool == "pretrain") & (is_qcd | (jettype == signal_code["hbb"])), signal_code["hbb"])
    summary: dict[str, Any] = {"rows_total": len(hid)}
    order_value = event_uniform(jet_key, sp.salt + 7919)  # a fixed, seed-independent jet order
    for task in config.classifier.tasks:
        sig = signal_code[task]
        in_task = is_qcd | (jettype == sig)
        finetune = (pool == "finetune") & in_task
        selections[f"test-{task}"] = (finetune & (split == "test"), sig)
        nominal_train = finetune & (split == "train") & (rank == 0)
        nominal_val = finetune & (split == "val") & (rank == 0)
        val_keys = _first_jets(jet_key, order_value, nominal_val, sp.max_val_jets, None)
        for size in sp.labelled_sizes:
            chosen: list[np.ndarray] = []
            for cls_mask in (jettype == sig, is_qcd):
                chosen.append(_first_jets(jet_key, order_value, nominal_train & cls_mask, size // 2, None))
            n_signal, n_background = len(chosen[0]), len(chosen[1])
            if n_signal < size // 2 or n_background < size // 2:
                raise ConfigError(
                    f"labelled size {size} for task {task}: the fine-tuning pool holds only {n_signal} signal "
                    f"and {n_background} background training jets; generate more events or lower split.labelled_sizes"
                )
            keys = np.concatenate([*chosen, val_keys])
            selections[f"{task}-{size}"] = (finetune & np.isin(jet_key, keys) & (split != "test"), sig)
    for name, (mask, sig) in selections.items():
        if not mask.any():
            raise InputFileError(f"split {name!r} is empty: generate more events")
        rows = _select_rows(ntuple_dir, mask, sig, qcd)
        write_shards(rows, data_dir / name, shard_size=sp.shard_size, sources=[str(ntuple_dir)])
        summary[name] = {
            "rows": int(mask.sum()),
            "nominal_jets": int((mask & (rank == 0)).sum()),
            "signal_jets": int((mask & (rank == 0) & (jettype == sig)).sum()),
            "background_jets": int((mask & (rank == 0) & is_qcd).sum()),
            "train_nominal_jets": int((mask & (rank == 0) & (split == "train")).sum()),
            "val_nominal_jets": int((mask & (rank == 0) & (split == "val")).sum()),
        }
    return summary


def _first_jets(key: np.ndarray, order: np.ndarray, mask: np.ndarray, n: int, _unused: None) -> np.ndarray:
    """Keys of the first ``n`` jets of ``mask`` in the fixed hash order."""
    candidates = np.flatnonzero(mask)
    picked = candidates[np.argsort(order[candidates], kind="stable")[:n]]
    return key[picked]


def _select_rows(
    ntuple_dir: Path, mask: np.ndarray, signal_code: int, qcd_codes: Sequence[int]
) -> Iterator[dict[str, np.ndarray]]:
    """Rows of ``mask`` shard by shard, ``label`` rewritten to 1 signal / 0 QCD."""
    start = 0
    for rows in _shard_rows(ntuple_dir):
        n = len(rows["variant"])
        keep = mask[start : start + n]
        start += n
        if not keep.any():
            continue
        out = {k: v[keep] for k, v in rows.items()}
        jt = out["jettype"]
        out["label"] = np.where(jt == signal_code, 1, np.where(np.isin(jt, qcd_codes), 0, -1)).astype(np.int32)
        yield out


# --- training -----------------------------------------------------------------------------------


def _base_train_dict(config: StudyConfig, task: str, out_dir: Path, files: list[str], seed: int) -> dict[str, Any]:
    sp = config.split
    return {
        "task": task,
        "model": config.model,
        "seed": seed,
        "out_dir": str(out_dir),
        "threads": config.threads,
        "device": config.device,
        "progress": False,
        "data": {
            "files": files,
            "pretrain_fraction": sp.pretrain_fraction,
            "val_fraction": sp.val_fraction,
            "test_fraction": sp.test_fraction,
            "split_salt": sp.salt,
        },
    }


def pretrain_config(config: StudyConfig, kind: str, data_dir: Path, out_dir: Path) -> Any:
    """The trainer configuration of one pretraining (``resim``, ``symmetry``, ``resim+symmetry``)."""
    from rs3l_coffea.augment.registry import training_overrides
    from rs3l_coffea.training.config import VARIANT_CODES, load_config

    pre = config.pretrain
    base = _base_train_dict(config, "pretrain", out_dir, [str(data_dir / "pretrain")], pre.seed)
    base.update(epochs=pre.epochs, max_steps_per_epoch=pre.max_steps_per_epoch, early_stopping_patience=None)
    base["data"].update(batch_size=pre.batch_size, augmentations=list(pre.variants))
    base["optimizer"] = {"lr": pre.lr}
    base["loss"] = {"name": "ntxent", "temperature": pre.temperature}
    _merge(base, pre.extra)
    overrides: list[str] = []
    if kind != "resim":
        variants = [v for v in VARIANT_CODES if v != "nominal"]
        spec = pre.symmetry_augmentations if kind == "symmetry" else f"{','.join(pre.variants)},{pre.symmetry_augmentations}"
        overrides = training_overrides(spec, variants, task="pretrain")
    return load_config(None, overrides, base=base)


def classifier_epochs(cls: ClassifierSection, labelled_size: int) -> int:
    """``cls.epochs``, raised so that a small labelled set still gets ``cls.min_steps`` steps."""
    steps_per_epoch = max(1, labelled_size // cls.batch_size)
    return max(cls.epochs, -(-cls.min_steps // steps_per_epoch))


def classifier_config(
    config: StudyConfig, model: str, data_dir: Path, out_dir: Path, seed: int, backbone: Path | None,
    labelled_size: int,
) -> Any:
    """Trainer configuration of one fine-tuning (``fixed``/``floating``) or supervised training."""
    from rs3l_coffea.training.config import config_from_dict

    cls = config.classifier
    task = "supervised" if model == "supervised" else "finetune"
    base = _base_train_dict(config, task, out_dir, [str(data_dir)], seed)
    base.update(epochs=classifier_epochs(cls, labelled_size), early_stopping_patience=cls.early_stopping_patience)
    base["data"].update(
        batch_size=cls.batch_size, use_partner_jets=cls.use_partner_jets, balance_classes=True,
        augmentations=list(config.pretrain.variants),
    )
    lr = {"floating": cls.floating_lr, "fixed": cls.fixed_lr if cls.fixed_lr is not None else cls.lr}.get(model, cls.lr)
    base["optimizer"] = {"lr": lr}
    if task == "finetune":
        base["finetune"] = {"mode": model, "backbone": str(backbone)}
    _merge(base, cls.extra)
    return config_from_dict(base)


def _merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _train(train_config: Any, log: Log) -> dict[str, Any]:
    from rs3l_coffea.training.trainer import train

    out = Path(train_config.out_dir)
    resume = (out / "checkpoints" / "last.json").is_file()
    if resume:
        log(f"       resuming {out} from its last checkpoint")
    result = train(train_config, resume=resume)
    return {
        "model": str(result.model_path),
        "epochs": int(result.progress.epoch),
        "steps": int(result.progress.global_step),
        "stopped_early": bool(result.stopped_early),
    }


# --- scoring ------------------------------------------------------------------------------------


def _test_arrays(data_dir: Path, task: str) -> dict[str, np.ndarray]:
    return _read_ntuple(data_dir / f"test-{task}")


def _run_model(model_path: PathLike, x: np.ndarray, mask: np.ndarray, config: StudyConfig) -> tuple[np.ndarray, np.ndarray]:
    from rs3l_coffea.inference.engine import InferenceEngine
    from rs3l_coffea.nn import load_model

    model, _card = load_model(model_path)
    device = "auto" if config.device == "auto" else config.device
    engine = InferenceEngine(model, device=device, threads=config.threads,
                             particle_budget=config.evaluation.particle_budget)
    return engine.run(x, mask)


def n2_from_features(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """N2 (``e3^(2)/(e2^(1))^2``, beta = 1) of jets given by their stored constituents.

    Constituents are rebuilt as massless four-vectors from ``log_pt``, ``deta``, ``dphi`` (the
    jet axis shift does not change the angular distances N2 uses) and handed to
    :func:`rs3l_coffea.features.jet_observables` (fastjet's energy correlator). Uses the same
    (at most ``MAX_PARTICLES`` leading) particles the networks see. Jets with < 2 particles: 0.
    """
    import awkward as ak
    import vector

    from rs3l_coffea.features import jet_observables
    from rs3l_coffea.features.names import FEATURE_INDEX

    vector.register_awkward()
    counts = mask.sum(axis=1)
    flat = features[mask]
    pt = np.exp(flat[:, FEATURE_INDEX["log_pt"]].astype(np.float64))
    eta = flat[:, FEATURE_INDEX["deta"]].astype(np.float64)
    phi = flat[:, FEATURE_INDEX["dphi"]].astype(np.float64)
    parts = ak.unflatten(
        ak.zip({"pt": pt, "eta": eta, "phi": phi, "mass": np.zeros_like(pt)}, with_name="Momentum4D"), counts
    )
    jets = ak.zip(
        {
            "px": ak.sum(parts.px, axis=1),
            "py": ak.sum(parts.py, axis=1),
            "pz": ak.sum(parts.pz, axis=1),
            "E": ak.sum(parts.E, axis=1),
        },
        with_name="Momentum4D",
    )
    return np.asarray(jet_observables(jets, parts)["n2"], dtype=np.float64)


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class StudyResult:
    report: Path
    results: Path
    stages_run: list[str]
    stages_skipped: list[str]


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_study(
    config: StudyConfig | PathLike,
    out_dir: PathLike,
    *,
    log: Log | None = None,
    command: str | None = None,
) -> StudyResult:
    """Run (or resume) the whole study into ``out_dir`` and write ``out_dir/report.md``."""
    config_path = None
    if not isinstance(config, StudyConfig):
        config_path = Path(config)
        config = load_study_config(config_path)
    log = log or (lambda message: print(message, flush=True))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(f"cannot create the study output directory {out}: {error}") from error
    import torch

    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    stages = Stages(out, log)
    gen_dir, ntuple_dir, data_dir, train_dir, eval_dir = (out / d for d in ("gen", "ntuple", "data", "train", "eval"))
    gen = config.generation

    # 1. generation
    from rs3l_coffea.generation import GenerationConfig, generate

    gen_summary: dict[str, Any] = {}
    for process, n_events in gen.events.items():
        variants = tuple(gen.variants if process in ("zh_bb", "zj") else gen.ood_variants)
        gen_config = GenerationConfig(
            process=process, n_events=n_events, out_dir=gen_dir / process, variants=variants,
            seed=gen.seed, chunk_size=gen.chunk_size, eta_max=gen.eta_max,
        )

        def _generate(gen_config: GenerationConfig = gen_config) -> dict[str, Any]:
            paths = generate(gen_config, workers=gen.workers)
            return {"files": len(paths), "events": gen_config.n_events, "variants": list(gen_config.variants)}

        gen_summary[process] = stages.run(f"generate:{process}", {"gen": dataclasses.asdict(gen), "p": process}, _generate)

    # 2. ntuples
    def _ntuple() -> dict[str, Any]:
        from rs3l_coffea.training.build import build_ntuples

        shards = build_ntuples(
            [str(gen_dir / p / "*.root") for p in gen.events], ntuple_dir,
            selection=config.split.selection, shard_size=config.split.shard_size,
        )
        return {"shards": len(shards)}

    stages.run("ntuple", {"gen": dataclasses.asdict(gen), "sel": config.split.selection}, _ntuple)

    # 3. split
    split_depends = {"gen": dataclasses.asdict(gen), "split": dataclasses.asdict(config.split),
                     "tasks": config.classifier.tasks}
    split_summary = stages.run("split", split_depends, lambda: _split_ntuples(config, ntuple_dir, data_dir))

    # 4. pretraining
    kinds = ["resim"] + (["symmetry", "resim+symmetry"] if config.pretrain.symmetry_comparison else [])
    pretrained: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        tc = pretrain_config(config, kind, data_dir, train_dir / f"pretrain-{kind.replace('+', '_')}")
        # Depends on the study settings only (not on the trainer's derived dict, whose defaults
        # may grow with new code): a new trainer option must not invalidate finished stages.
        pretrain_settings = {k: v for k, v in dataclasses.asdict(config.pretrain).items() if k != "symmetry_comparison"}
        depends = {"split": split_depends, "model": config.model, "pretrain": pretrain_settings, "kind": kind}
        pretrained[kind] = stages.run(f"pretrain:{kind}", depends, lambda tc=tc: _train(tc, log))
    backbone = Path(pretrained["resim"]["model"])

    # 5. classifiers
    cls = config.classifier
    trained: dict[tuple[str, str, int, int], str] = {}
    for task in cls.tasks:
        for size in config.split.labelled_sizes:
            for seed in cls.seeds:
                for model in cls.models:
                    out_model = train_dir / task / f"{model}-{size}-s{seed}"
                    tc = classifier_config(config, model, data_dir / f"{task}-{size}", out_model, seed,
                                           backbone if model != "supervised" else None, size)
                    settings = {k: v for k, v in dataclasses.asdict(cls).items()
                                if k not in ("seeds", "tasks", "models", "fixed_lr")}
                    run = [task, model, size, seed]
                    if model == "fixed" and cls.fixed_lr is not None:
                        run.append({"fixed_lr": cls.fixed_lr})
                    depends = {"split": split_depends, "model": config.model, "classifier": settings,
                               "run": run,
                               "backbone": pretrain_settings if model != "supervised" else None}
                    record = stages.run(f"train:{task}:{model}:{size}:s{seed}", depends,
                                        lambda tc=tc: _train(tc, log))
                    trained[task, model, size, seed] = record["model"]

    # 6. scores, embeddings and N2 on the test sets
    eval_dir.mkdir(parents=True, exist_ok=True)
    tests = {task: _test_arrays(data_dir, task) for task in cls.tasks}

    def _n2() -> dict[str, Any]:
        from rs3l_coffea.training.dataset import assign_split

        sp = config.split
        for task, t in tests.items():
            n2_nominal = n2_from_features(t["features"], t["mask"])
            n2_partner = n2_from_features(t["partner_features"], t["partner_mask"])
            _save_npz(eval_dir / f"n2-{task}.npz", nominal=n2_nominal, partner=n2_partner)
            # The N2 cut direction is chosen on labelled training jets, never on the test set.
            labelled = _read_ntuple(data_dir / f"{task}-{max(sp.labelled_sizes)}",
                                    ["features", "mask", "label", "pair_rank", "hard_event_id"])
            _pool, split = assign_split(labelled["hard_event_id"], sp.pretrain_fraction, sp.val_fraction,
                                        sp.test_fraction, sp.salt)
            train_rows = (labelled["pair_rank"] == 0) & (split == "train")
            _save_npz(eval_dir / f"n2-{task}-labelled.npz",
                      n2=n2_from_features(labelled["features"][train_rows], labelled["mask"][train_rows]),
                      label=labelled["label"][train_rows])
        return {"tasks": list(tests)}

    stages.run("n2", split_depends, _n2)

    def _score(task: str, path: str, name: str) -> dict[str, Any]:
        t = tests[task]
        nominal = t["pair_rank"] == 0
        _emb, scores = _run_model(path, t["features"][nominal], t["mask"][nominal], config)
        _save_npz(eval_dir / f"{name}.npz", score=scores[:, 0])
        return {"n": int(nominal.sum())}

    for (task, model, size, seed), path in trained.items():
        name = f"score-{task}-{model}-{size}-s{seed}"
        stages.run(f"score:{task}:{model}:{size}:s{seed}", {"model": path, "weights": file_digest(path),
                                                              "split": split_depends},
                   lambda task=task, path=path, name=name: _score(task, path, name), derived=True)

    # Embeddings of the backbones (nominal + partner jets of the in-domain test set, W jets).
    embed_task = "hbb" if "hbb" in tests else cls.tasks[0]
    largest = max(config.split.labelled_sizes)
    seed0 = cls.seeds[0]
    backbones: dict[str, str | None] = {f"RS3L ({PRETRAIN_KINDS[k]})": pretrained[k]["model"] for k in kinds}
    for model in cls.models:  # fine-tuned / supervised models: embeddings and head scores
        if (embed_task, model, largest, seed0) in trained:
            backbones[f"{MODEL_TITLES[model]} (N={largest}, seed {seed0})"] = trained[embed_task, model, largest, seed0]
    backbones["random init"] = None

    def _embed(name: str, path: str | None) -> dict[str, Any]:
        t = tests[embed_task]
        if path is None:
            model_path = _random_model(config, eval_dir / "random-init")
        else:
            model_path = path
        emb, score = _run_model(model_path, t["features"], t["mask"], config)
        emb_p, score_p = _run_model(model_path, t["partner_features"], t["partner_mask"], config)
        arrays = {"nominal": emb, "partner": emb_p}
        if score.shape[1]:
            arrays.update(score_nominal=score[:, 0], score_partner=score_p[:, 0])
        if "wqq" in tests and embed_task != "wqq":
            w = tests["wqq"]
            w_nominal = (w["pair_rank"] == 0) & (w["label"] == 1)
            arrays["anomaly"] = _run_model(model_path, w["features"][w_nominal], w["mask"][w_nominal], config)[0]
        _save_npz(eval_dir / f"embed-{slug(name)}.npz", **arrays)
        return {"name": name}

    for name, path in backbones.items():
        stages.run(f"embed:{slug(name)}", {"name": name, "model": path, "split": split_depends,
                                            "weights": None if path is None else file_digest(path),
                                            "model_cfg": config.model},
                   lambda name=name, path=path: _embed(name, path), derived=True)

    # 7. report
    # Redone whenever any stage ran or changed, or the report code changed; else kept as it is.
    report_depends = {
        "stages": {name: json.loads(stages.marker(name).read_text())["fingerprint"] for name in stages.wall},
        "outputs": [file_digest(p) for p in sorted(eval_dir.glob("*.npz"))],
        "code": file_digest(__file__),
        "command": command,
    }
    wall_before_report = time.perf_counter() - start

    def _report() -> dict[str, str]:
        report, results = build_report(
            config=config, config_path=config_path, out=out, stages=stages, tests=tests, trained=trained,
            backbones=backbones, embed_task=embed_task, pretrained=pretrained, split_summary=split_summary,
            gen_summary=gen_summary, command=command or _default_command(config_path, out),
            git_commit=_git_commit(), wall_s=wall_before_report, log=log,
        )
        return {"report": str(report), "results": str(results)}

    paths = stages.run("report", report_depends, _report, derived=True)
    return StudyResult(report=Path(paths["report"]), results=Path(paths["results"]),
                       stages_run=stages.ran, stages_skipped=stages.skipped)


def _default_command(config_path: Path | None, out: Path) -> str:
    if config_path is None:
        return f"run_study(<StudyConfig>, {str(out)!r})"
    return f"rs3l report --config {config_path} --out {out}"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from rs3l_coffea.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _random_model(config: StudyConfig, stem: Path) -> str:
    """A randomly initialised backbone (seed 0): the representation baseline of the probes."""
    import torch

    from rs3l_coffea.nn import build_model, save_model
    from rs3l_coffea.nn.config import ModelConfig

    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        torch.manual_seed(0)
        model_config = dataclasses.replace(ModelConfig.from_dict(config.model), heads=(), lora=None)
        save_model(stem, build_model(model_config), {"description": "random initialisation (seed 0)"})
    return str(weights)


def environment_summary() -> dict[str, Any]:
    """Hardware facts recorded with the report."""
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


# --- report -------------------------------------------------------------------------------------


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _mean_std_json(value: Any) -> dict[str, float]:
    return {"mean": float(value.mean), "std": float(value.std), "n": int(value.n), "n_infinite": int(value.n_infinite)}


def _variant_hist(values_by_variant: Mapping[str, np.ndarray], name: str) -> Any:
    import hist

    nominal = values_by_variant["nominal"]
    low, high = np.quantile(nominal, [0.005, 0.995])
    if not high > low:
        low, high = float(nominal.min()) - 0.5, float(nominal.max()) + 0.5
    h = hist.Hist(hist.axis.StrCategory(list(values_by_variant), name="variant"),
                  hist.axis.Regular(30, float(low), float(high), name=name))
    for variant, values in values_by_variant.items():
        h.fill(variant=variant, **{name: values})
    return h


def build_report(
    *,
    config: StudyConfig,
    config_path: Path | None,
    out: Path,
    stages: Stages,
    tests: Mapping[str, Mapping[str, np.ndarray]],
    trained: Mapping[tuple[str, str, int, int], str],
    backbones: Mapping[str, str | None],
    embed_task: str,
    pretrained: Mapping[str, Mapping[str, Any]],
    split_summary: Mapping[str, Any],
    gen_summary: Mapping[str, Any],
    command: str,
    git_commit: str,
    wall_s: float,
    log: Log,
) -> tuple[Path, Path]:
    """Compute every table and figure from the cached stage outputs; write report.md + results.json."""
    from rs3l_coffea.evaluation import (
        anomaly_detection,
        background_rejection,
        knn_probe,
        linear_probe,
        package_versions,
        rejection_row,
        roc_curve,
        wasserstein_rows,
        wasserstein_unbinned_table,
        write_report,
    )
    from rs3l_coffea.evaluation.plots import (
        plot_convergence,
        plot_corner,
        plot_roc_bands,
        plot_tsne,
        plot_variant_ratios,
        tsne_embedding,
    )
    from rs3l_coffea.training.config import VARIANT_NAMES

    report_start = time.perf_counter()
    eval_dir, plots_dir = out / "eval", out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    cls, sizes = config.classifier, list(config.split.labelled_sizes)
    max(sizes)
    results: dict[str, Any] = {"name": config.name, "command": command, "git_commit": git_commit}
    plots: dict[str, Path] = {}
    notes = [f"Scale: {_scale_line(config)}.", *list(config.notes)]
    extra_tables: dict[str, list[dict[str, Any]]] = {}

    # -- rejection tables (N2 baseline + trained models) --
    rejection_rows = []
    results["rejection"] = {}
    results["n2_direction"] = {}
    roc_store: dict[tuple[str, str, int], list[Any]] = {}
    for task in cls.tasks:
        t = tests[task]
        nominal = t["pair_rank"] == 0
        is_signal = t["label"][nominal] == 1
        n2 = _load_npz(eval_dir / f"n2-{task}.npz")
        n2_train = _load_npz(eval_dir / f"n2-{task}-labelled.npz")
        auc_plus = roc_curve(n2_train["n2"], n2_train["label"] == 1).auc
        sign = 1.0 if auc_plus >= 0.5 else -1.0
        direction = "N2" if sign > 0 else "-N2"
        results["n2_direction"][task] = {
            "score": direction, "auc_of_plus_n2_on_labelled_training_jets": auc_plus,
            "labelled_training_jets": len(n2_train["n2"]),
        }
        n2_roc = roc_curve(sign * n2["nominal"][nominal], is_signal)
        roc_store[task, "n2", 0] = [n2_roc]
        rows = [rejection_row(f"{TASK_TITLES[task]}: N2 baseline (score {direction})", 0, [n2_roc], SIGNAL_EFFICIENCIES)]
        for size in sizes:
            for model in cls.models:
                rocs = []
                for seed in cls.seeds:
                    if (task, model, size, seed) not in trained:
                        continue
                    scores = _load_npz(eval_dir / f"score-{task}-{model}-{size}-s{seed}.npz")["score"]
                    rocs.append(roc_curve(scores, is_signal))
                roc_store[task, model, size] = rocs
                rows.append(rejection_row(f"{TASK_TITLES[task]}: {MODEL_TITLES[model]}", size, rocs, SIGNAL_EFFICIENCIES))
        rejection_rows += rows
        results["rejection"][task] = [
            {
                "model": row.model,
                "labelled_size": row.labelled_size,
                "auc": _mean_std_json(row.auc),
                "rejection": {f"{eff:g}": _mean_std_json(v) for eff, v in row.rejection.items()},
                "n_background": row.n_background,
                "low_statistics": sorted(row.low_statistics),
                "per_seed": [
                    {"seed": seed, "auc": roc.auc, "rejection": {
                        f"{p.signal_efficiency:g}": p.rejection
                        for p in background_rejection(roc, SIGNAL_EFFICIENCIES)}}
                    for seed, roc in zip(
                        cls.seeds, roc_store.get((task, _model_key(row.model), row.labelled_size), []), strict=False)
                ],
            }
            for row in rows
        ]
        for size in sizes:
            curves = {MODEL_TITLES[m]: roc_store[task, m, size] for m in cls.models if roc_store.get((task, m, size))}
            curves[f"N2 ({direction})"] = [n2_roc]
            path = plots_dir / f"roc-{task}-{size}.png"
            plot_roc_bands(curves, path, title=f"{TASK_TITLES[task]}, {size} labelled jets")
            plots[f"ROC, {TASK_TITLES[task]}, {size} labelled jets (band: min-max over {len(cls.seeds)} seeds)"] = path

    # -- embeddings: Wasserstein, ratios, corner, t-SNE, probes, anomaly --
    t = tests[embed_task]
    nominal = t["pair_rank"] == 0
    variant_codes = sorted({int(v) for v in np.unique(t["variant"]) if v >= 0})
    variant_names = [VARIANT_NAMES[c] for c in variant_codes]
    n2 = _load_npz(eval_dir / f"n2-{embed_task}.npz")
    embeds = {name: _load_npz(eval_dir / f"embed-{slug(name)}.npz") for name in backbones}
    w_models = [n for n in embeds if n.startswith(("RS3L fixed", "RS3L floating", "supervised"))]
    w_results: dict[str, Any] = {}
    wasserstein_table_rows = []
    mean_rows = []
    for name in w_models:
        e = embeds[name]
        samples: dict[str, dict[str, np.ndarray]] = {}
        for variant, rows_mask in [("nominal", nominal)] + [
            (VARIANT_NAMES[c], t["variant"] == c) for c in variant_codes
        ]:
            key = "nominal" if variant == "nominal" else "partner"
            unit = _unit(e[key][rows_mask])
            quantities = {f"z{i}": unit[:, i] for i in range(unit.shape[1])}
            if f"score_{key}" in e:
                quantities["score"] = e[f"score_{key}"][rows_mask]
            quantities["N2"] = n2[key][rows_mask]
            samples[variant] = quantities
        table = wasserstein_unbinned_table(samples, relative=True)
        for variant, row in table.items():
            dims = [v for q, v in row.items() if q.startswith("z")]
            row_dict = dict(row)
            row_dict["mean z"] = float(np.mean(dims))
            mean_rows.append({"model": name, "variant": variant, "mean relative W1 over z": float(np.mean(dims)),
                              "score": row.get("score", float("nan")), "N2": row["N2"]})
            table[variant] = row_dict
        w_results[name] = {v: dict(r) for v, r in table.items()}
        wasserstein_table_rows += wasserstein_rows(name, table)
    results["wasserstein_relative"] = w_results
    if mean_rows:
        extra_tables["Wasserstein-1 summary (relative to the nominal std; mean over embedding dimensions)"] = mean_rows

    rs3l_name = next(iter(backbones))  # the re-simulation-pretrained backbone
    rs3l = embeds[rs3l_name]
    labels_nominal = t["label"][nominal]
    class_names = {0: "QCD", 1: TASK_SIGNALS[embed_task].replace("_", "→").replace("H→BB", "H→bb").replace("W→QQ", "W→qq")}
    # Fig. 3: one embedding dimension and the head scores next to N2, per variant.
    ratio_hists = {}
    fixed_name = next((n for n in w_models if n.startswith("RS3L fixed")), None)
    by_variant = {"nominal": nominal, **{VARIANT_NAMES[c]: t["variant"] == c for c in variant_codes}}
    for label, source in (("RS3L embedding z0 (unit)", rs3l), ):
        values = {v: _unit(source["nominal" if v == "nominal" else "partner"][m])[:, 0] for v, m in by_variant.items()}
        ratio_hists[label] = _variant_hist(values, "z0")
    for name in (fixed_name, next((n for n in w_models if n.startswith("supervised")), None)):
        if name is not None and "score_nominal" in embeds[name]:
            e = embeds[name]
            values = {v: e["score_nominal" if v == "nominal" else "score_partner"][m] for v, m in by_variant.items()}
            ratio_hists[f"{name.split(' (')[0]} score"] = _variant_hist(values, "score")
    ratio_hists["N2"] = _variant_hist({v: n2["nominal" if v == "nominal" else "partner"][m] for v, m in by_variant.items()}, "N2")
    path = plots_dir / "variant-ratios.png"
    plot_variant_ratios(ratio_hists, path)
    plots["Nominal vs re-simulated variants: RS3L embedding, classifier scores and N2 (ratio to nominal)"] = path

    rng = np.random.default_rng(0)
    corner_idx = rng.permutation(int(nominal.sum()))[: config.evaluation.corner_points]
    path = plots_dir / "corner-rs3l.png"
    plot_corner(_unit(rs3l["nominal"][nominal])[corner_idx], labels_nominal[corner_idx], path, class_names=class_names)
    plots["Corner plot of the RS3L (re-simulation) embedding, unit-normalised, test jets by class"] = path

    half = config.evaluation.tsne_points // 2
    alt = "vincia" if "vincia" in variant_names else variant_names[-1]
    nominal_idx = rng.permutation(np.flatnonzero(nominal))[:half]
    alt_idx = rng.permutation(np.flatnonzero(t["variant"] == variant_codes[variant_names.index(alt)]))[:half]
    points = np.concatenate([_unit(rs3l["nominal"][nominal_idx]), _unit(rs3l["partner"][alt_idx])])
    coordinates = tsne_embedding(points, seed=0)
    path = plots_dir / "tsne-rs3l.png"
    plot_tsne(
        coordinates,
        {"class": np.concatenate([t["label"][nominal_idx], t["label"][alt_idx]]),
         "shower": np.array(["nominal"] * len(nominal_idx) + [alt] * len(alt_idx))},
        path, names={"class": class_names},
    )
    plots[f"t-SNE of the RS3L embedding: nominal jets and {alt} re-simulations, by class and by shower"] = path

    history = Path(pretrained["resim"]["model"]).parent / "metrics.csv"
    path = plots_dir / "convergence-pretrain.png"
    plot_convergence(history, path, class_names={"0": "QCD", "1": class_names[1]})
    plots["Pretraining convergence (re-simulation RS3L): loss and pair cosines per epoch"] = path

    probe_rows, anomaly_rows = [], []
    for name, e in embeds.items():
        x = e["nominal"][nominal]
        lin = linear_probe(x, labels_nominal, seed=0, l2_normalize=True)
        knn = knn_probe(x, labels_nominal, k=config.evaluation.knn_k, seed=0, l2_normalize=True)
        probe_rows.append({"embedding": name, "logistic AUC": lin["logistic"].auc, "LDA AUC": lin["lda"].auc,
                           "logistic accuracy": lin["logistic"].accuracy, "kNN accuracy": knn.accuracy,
                           "train/test jets": f"{lin['logistic'].n_train}/{lin['logistic'].n_test}"})
        if "anomaly" in e:
            result = anomaly_detection(_unit(x), _unit(e["anomaly"]), epochs=config.evaluation.anomaly_epochs, seed=0)
            anomaly_rows.append({"embedding": name, "anomaly AUC (W→qq vs SM)": result.auc,
                                 "SM train jets": result.n_train, "SM test jets": result.n_test_background,
                                 "W→qq jets": result.n_test_anomaly})
    extra_tables["Linear classifier test and kNN on frozen embeddings (H→bb vs QCD test jets, unit-normalised)"] = probe_rows
    results["probes"] = probe_rows
    if anomaly_rows:
        extra_tables["Anomaly detection: autoencoder on SM (H→bb + QCD) embeddings, W→qq as the anomaly"] = anomaly_rows
        results["anomaly"] = anomaly_rows

    checks = _expectation_checks(results, cls, sizes, w_results)
    extra_tables["Physics expectations (as in the paper) checked against this run"] = checks
    results["expectations"] = checks

    data_sizes: dict[str, int] = {}
    for process, summary in gen_summary.items():
        data_sizes[f"generated hard events {process} (x {len(summary['variants'])} variants: {', '.join(summary['variants'])})"] = summary["events"]
    data_sizes["ntuple rows (nominal jet x partner)"] = split_summary["rows_total"]
    for name, summary in split_summary.items():
        if isinstance(summary, Mapping):
            data_sizes[f"{name}: nominal jets (signal / QCD: {summary['signal_jets']} / {summary['background_jets']})"] = summary["nominal_jets"]
    results["data_sizes"] = data_sizes

    report_wall = time.perf_counter() - report_start
    results["stage_wall_s"] = {**{name: round(wall, 2) for name, wall in stages.wall.items()},
                               "report": round(report_wall, 2)}
    extra_tables["Wall time per stage (summed over runs; per-run times in results.json)"] = _stage_groups(
        stages, report_wall)
    total = sum(stages.wall.values()) + report_wall
    results["total_stage_wall_s"] = total

    reproduce = {
        "command": command,
        "git_commit": git_commit,
        "config_file": str(config_path) if config_path else None,
        "seeds": {"generation": config.generation.seed, "pretraining": config.pretrain.seed,
                  "classifiers": list(cls.seeds), "split_salt": config.split.salt,
                  "probes/anomaly/t-SNE": 0},
        "hardware": environment_summary(),
        "torch_threads": config.threads,
        "study": config.to_dict(),
        "trainer_configs": {
            "pretrain (resim)": _trainer_summary(Path(pretrained["resim"]["model"]).parent),
        },
    }
    results["reproduce"] = reproduce
    results["versions"] = package_versions()
    results["default_model_candidate"] = {
        task: {m: {str(size): trained.get((task, m, size, cls.seeds[0])) for size in sizes} for m in cls.models}
        for task in cls.tasks
    }
    results_path = out / "results.json"
    with atomic_open(results_path, "w") as handle:
        json.dump(results, handle, indent=1, default=_json_default)
    report = write_report(
        out / "report.md",
        rejection_rows,
        wasserstein_table_rows,
        plots={caption: path for caption, path in plots.items()},
        config=reproduce,
        data_sizes=data_sizes,
        wall_time_s=total,
        title=f"RS3L study report: {config.name}",
        notes=notes,
        extra_tables=extra_tables,
    )
    log(f"report: {report}")
    return report, results_path


def _stage_groups(stages: Stages, report_wall: float) -> list[dict[str, Any]]:
    """Stage wall times grouped: trainings by task and model, scoring and embedding together."""
    groups: dict[str, list[float]] = {}
    for name, wall in stages.wall.items():
        parts = name.split(":")
        if parts[0] == "train":
            key = f"train:{parts[1]}:{parts[2]} (all sizes and seeds)"
        elif parts[0] in ("score", "embed"):
            key = f"{parts[0]} (test-set inference)"
        else:
            key = name
        groups.setdefault(key, []).append(wall)
    rows = [{"stage": key, "runs": len(walls), "wall time [s]": round(sum(walls), 1)} for key, walls in groups.items()]
    rows.append({"stage": "report (metrics, figures)", "runs": 1, "wall time [s]": round(report_wall, 1)})
    return rows


def _model_key(title: str) -> str:
    for key, text in MODEL_TITLES.items():
        if title.endswith(text) or text in title:
            return key
    return title


def _trainer_summary(train_dir: Path) -> dict[str, Any]:
    from rs3l_coffea.nn.model_file import model_paths, read_card

    card = read_card(model_paths(train_dir / "model")[1])
    return dict(card.training.get("config", {}))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def _scale_line(config: StudyConfig) -> str:
    gen = config.generation
    events = ", ".join(f"{p} {n:,}" for p, n in gen.events.items())
    return (
        f"study '{config.name}': hard events {events}; variants {', '.join(gen.variants)} "
        f"(W sample: {', '.join(gen.ood_variants)}); pretraining {config.pretrain.epochs} epochs; "
        f"labelled sizes {config.split.labelled_sizes}; {len(config.classifier.seeds)} seeds per trained model; "
        f"{config.classifier.epochs} classifier epochs (at least {config.classifier.min_steps} steps); backbone {json.dumps(config.model)}; "
        f"{config.threads} CPU threads"
    )


def _expectation_checks(
    results: Mapping[str, Any], cls: ClassifierSection, sizes: Sequence[int], w_results: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for task, entries in results["rejection"].items():
        n2_entry = entries[0]
        n2_r = n2_entry["rejection"]["0.5"]["mean"]
        for entry in entries[1:]:
            if entry["labelled_size"] != max(sizes):
                continue
            r = entry["rejection"]["0.5"]["mean"]
            rows.append({"expectation": "network rejects QCD better than N2 (1/ε_B at ε_S=0.5, largest labelled size)",
                         "case": entry["model"], "measured": f"{r:.3g} vs N2 {n2_r:.3g}", "holds": bool(r > n2_r)})
        if "floating" in cls.models and "supervised" in cls.models:
            for size in sizes:
                floating = next(e for e in entries if e["labelled_size"] == size and e["model"].endswith(MODEL_TITLES["floating"]))
                supervised = next(e for e in entries if e["labelled_size"] == size and e["model"].endswith(MODEL_TITLES["supervised"]))
                fa, sa = floating["auc"], supervised["auc"]
                rows.append({"expectation": "RS3L floating ≥ supervised at the same labelled size (AUC)",
                             "case": f"{TASK_TITLES[task]}, {size} labelled jets",
                             "measured": f"{fa['mean']:.4f} ± {fa['std']:.4f} vs {sa['mean']:.4f} ± {sa['std']:.4f}",
                             "holds": bool(fa["mean"] >= sa["mean"])})
    alternative = "vincia"
    means = {m: float(np.mean([v for q, v in table[alternative].items() if q.startswith("z") and q != "z"]))
             for m, table in w_results.items() if alternative in table}
    if means:
        best = min(means, key=means.__getitem__)
        rows.append({"expectation": "fixed RS3L backbone has the smallest nominal-vs-alternative-shower (vincia) W1",
                     "case": "mean relative W1 over embedding dims: " + "; ".join(f"{m}: {v:.4f}" for m, v in means.items()),
                     "measured": f"smallest: {best}", "holds": bool(best.startswith("RS3L fixed"))})
    return rows


# --- the shipped default model ------------------------------------------------------------------


def evaluate_model(model_path: PathLike, test_ntuple: PathLike, *, threads: int | None = None) -> dict[str, Any]:
    """Re-score a classifier on a held-out test ntuple (nominal jets, ``label`` 1 signal / 0 QCD).

    Returns ``{"auc", "rejection": {"0.3": ..., "0.5": ..., "0.7": ...}, "n_signal",
    "n_background"}``: the numbers a model card quotes, recomputed from scratch.
    """
    from rs3l_coffea.evaluation import background_rejection, roc_curve
    from rs3l_coffea.inference.engine import InferenceEngine
    from rs3l_coffea.nn import load_model

    rows = _read_ntuple(Path(test_ntuple), ["features", "mask", "label", "pair_rank"])
    keep = (rows["pair_rank"] == 0) & (rows["label"] >= 0)
    model, _card = load_model(model_path)
    if not model.head_names:
        raise ConfigError(f"model {model_path} has no classification head to evaluate")
    _emb, scores = InferenceEngine(model, device="cpu", threads=threads).run(rows["features"][keep], rows["mask"][keep])
    is_signal = rows["label"][keep] == 1
    roc = roc_curve(scores[:, 0], is_signal)
    return {
        "auc": roc.auc,
        "rejection": {f"{p.signal_efficiency:g}": p.rejection for p in background_rejection(roc, SIGNAL_EFFICIENCIES)},
        "n_signal": int(is_signal.sum()),
        "n_background": int((~is_signal).sum()),
    }


def export_default_model(
    study_dir: PathLike,
    stems: PathLike | Sequence[PathLike],
    *,
    task: str = "hbb",
    model: str = "fixed",
    seed: int | None = None,
    size: int | None = None,
) -> list[Path]:
    """Save one fine-tuned model of a finished study with a full model card at each stem.

    Picks ``model`` (``fixed`` by default, the shipped default model; or ``floating``,
    ``supervised``) for ``task`` at the largest labelled size and the
    first seed unless given; the card records the architecture, feature order, preprocessing,
    training data and configuration, wall time, hardware, the report's metrics for this very
    model and for its row (mean ± std over seeds), and the command that reproduces them.
    """
    from rs3l_coffea.nn import load_model, save_model

    study_dir = Path(study_dir)
    results_path = study_dir / "results.json"
    if not results_path.is_file():
        raise InputFileError(f"{results_path} does not exist: run the study first (rs3l report)")
    results = json.loads(results_path.read_text())
    study = results["reproduce"]["study"]
    sizes = study["split"]["labelled_sizes"]
    size = max(sizes) if size is None else size
    seed = study["classifier"]["seeds"][0] if seed is None else seed
    path = results["default_model_candidate"].get(task, {}).get(model, {}).get(str(size))
    if path is None or not Path(path).is_file():
        raise InputFileError(f"study {study_dir} has no trained {model} model for task {task} at size {size}")
    if seed != study["classifier"]["seeds"][0]:
        path = str(Path(path).parent.parent / f"{model}-{size}-s{seed}" / "model.safetensors")
    network, card = load_model(path)
    row = next(r for r in results["rejection"][task]
               if r["labelled_size"] == size and r["model"].endswith(MODEL_TITLES[model]))
    this = next(p for p in row["per_seed"] if p["seed"] == seed)
    test_dir = study_dir / "data" / f"test-{task}"
    trainer_config = card.training.get("config", {})
    new_card = {
        "description": (
            f"RS3L {MODEL_TITLES[model]} fine-tuned tagger ({TASK_TITLES[task]}) from the study "
            f"'{results['name']}': DGCNN backbone pretrained contrastively (NT-Xent) on re-simulated "
            "Pythia8 jet pairs, then fine-tuned with a sigmoid head 'score' (1 = signal)."
        ),
        "preprocessing": {
            "features": "rs3l_coffea.features.build_features: the 15 FEATURE_NAMES per particle, "
                        "relative to the jet axis, leading-pT particles, zero-padded, boolean mask",
            "max_particles": 100,
            "jets": "anti-kT R = 0.8 reclustered from Delphes-layout EFlow candidates of the "
                    "parametric CMS-like detector (rs3l_coffea.detector)",
            "selection": f"JetSelection.named({study['split']['selection']!r}): pT > 450 GeV, m > 10 GeV, |eta| < 1.5",
        },
        "training": {
            "study": results["name"],
            "study_command": results["command"],
            "git_commit": results["git_commit"],
            "study_config": study,
            "trainer_config": trainer_config,
            "pretraining": results["reproduce"]["trainer_configs"],
            "labelled_size": size,
            "seed": seed,
            "data_sizes": results["data_sizes"],
            "stage_wall_s": results["stage_wall_s"],
            "total_study_wall_s": results["total_stage_wall_s"],
            "hardware": results["reproduce"]["hardware"],
            "versions": results["versions"],
        },
        "metrics": {
            "task": TASK_TITLES[task],
            "test_set": f"{test_dir} (nominal jets, fine-tuning pool test split): "
                        f"{row['n_background']} QCD jets",
            "this_model": {"auc": this["auc"], "rejection": this["rejection"]},
            "report_row": {"model": row["model"], "auc": row["auc"], "rejection": row["rejection"]},
            "evaluation_command": (
                f"rs3l evaluate --model <this model stem> --test {test_dir} "
                f"(after `{results['command']}`)"
            ),
            "tolerance": "AUC within 1e-4 and rejections within 1e-3 relative (float32 inference; "
                         "the same jets and weights give the same scores up to summation order)",
        },
    }
    if isinstance(stems, str | os.PathLike):
        stems = [stems]
    written: list[Path] = []
    for stem in stems:
        Path(stem).parent.mkdir(parents=True, exist_ok=True)
        written += list(save_model(stem, network, new_card))
    return written
