"""Trainer configurations of the study's pretrainings and classifiers, and running them.

``pretrain:<kind>``: NT-Xent pretraining on re-simulated pairs (``resim``), and for the symmetry
comparison on JetCLR augmentations only (``symmetry``) and both (``resim+symmetry``).
``train:<task>:<model>:<size>:s<seed>``: RS3L fine-tuning (``fixed`` backbone, ``floating``) and
the ``supervised`` baseline (same architecture, from scratch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rs3l_coffea.errors import InputFileError
from rs3l_coffea.study.config import ClassifierSection, StudyConfig
from rs3l_coffea.study.layout import RunKey, StudyLayout
from rs3l_coffea.typed_config import deep_merge

Log = Callable[[str], None]


def pretrain_kinds(config: StudyConfig) -> list[str]:
    return ["resim"] + (["symmetry", "resim+symmetry"] if config.pretrain.symmetry_comparison else [])


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


def pretrain_config(config: StudyConfig, kind: str, layout: StudyLayout) -> Any:
    """The trainer configuration of one pretraining (``resim``, ``symmetry``, ``resim+symmetry``)."""
    from rs3l_coffea.augment.registry import training_overrides
    from rs3l_coffea.training.config import load_config
    from rs3l_coffea.variants import VARIANT_CODES

    pre = config.pretrain
    files = [str(layout.pretrain_data()), *(str(path) for path in extra_pair_paths(config))]
    base = _base_train_dict(config, "pretrain", layout.pretrain_dir(kind), files, pre.seed)
    base.update(epochs=pre.epochs, max_steps_per_epoch=pre.max_steps_per_epoch, early_stopping_patience=None)
    # The pretraining pool's own "test" share is never tested on (test sets come from the
    # fine-tuning pool): train on it too, keeping only the validation share aside.
    base["data"]["test_fraction"] = 0.0
    base["data"].update(batch_size=pre.batch_size, augmentations=list(pre.variants))
    base["optimizer"] = {"lr": pre.lr}
    base["loss"] = {"name": "ntxent", "temperature": pre.temperature}
    deep_merge(base, pre.extra)
    overrides: list[str] = []
    if kind != "resim":
        variants = [v for v in VARIANT_CODES if v != "nominal"]
        spec = pre.symmetry_augmentations if kind == "symmetry" else f"{','.join(pre.variants)},{pre.symmetry_augmentations}"
        overrides = training_overrides(spec, variants, task="pretrain")
    return load_config(None, overrides, base=base)


def extra_pair_paths(config: StudyConfig) -> list[Path]:
    """``pretrain.extra_pairs`` as paths, each checked to exist (before any stage runs)."""
    paths = [Path(entry).expanduser() for entry in config.pretrain.extra_pairs]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise InputFileError(f"pretrain.extra_pairs: {', '.join(missing)} not found (make them with "
                             "`rs3l generate` in every variant and `rs3l ntuple`)")
    return paths


def pretrain_settings(config: StudyConfig) -> dict[str, Any]:
    """The pretraining settings every pretraining and fine-tuning stage depends on.

    Keys a study leaves at their empty default are left out, so that a new option does not
    invalidate stages finished before it existed."""
    settings = config.pretrain.model_dump(exclude={"symmetry_comparison"})
    if not settings["extra_pairs"]:
        del settings["extra_pairs"]
    return settings


def classifier_epochs(cls: ClassifierSection, labelled_size: int) -> int:
    """``cls.epochs``, raised so that a small labelled set still gets ``cls.min_steps`` steps."""
    steps_per_epoch = max(1, labelled_size // cls.batch_size)
    return max(cls.epochs, -(-cls.min_steps // steps_per_epoch))


def classifier_config(config: StudyConfig, key: RunKey, layout: StudyLayout, backbone: Path | None) -> Any:
    """Trainer configuration of one fine-tuning (``fixed``/``floating``) or supervised training."""
    from rs3l_coffea.training.config import config_from_dict

    cls = config.classifier
    task = "supervised" if key.model == "supervised" else "finetune"
    data = layout.labelled_data(key.task, key.labelled_size)
    base = _base_train_dict(config, task, layout.model_dir(key), [str(data)], key.seed)
    base.update(epochs=classifier_epochs(cls, key.labelled_size), early_stopping_patience=cls.early_stopping_patience)
    base["data"].update(
        batch_size=cls.batch_size, use_partner_jets=cls.use_partner_jets, balance_classes=True,
        augmentations=list(config.pretrain.variants),
    )
    lr = {"floating": cls.floating_lr, "fixed": cls.fixed_lr if cls.fixed_lr is not None else cls.lr}.get(key.model, cls.lr)
    base["optimizer"] = {"lr": lr}
    if task == "finetune":
        base["finetune"] = {"mode": key.model, "backbone": str(backbone)}
    deep_merge(base, cls.extra)
    return config_from_dict(base)


def train_model(train_config: Any, log: Log) -> dict[str, Any]:
    """Train (resuming from the run's last checkpoint when there is one); a stage result."""
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


def trainer_summary(train_dir: Path) -> dict[str, Any]:
    """The trainer configuration recorded in a trained model's card."""
    from rs3l_coffea.nn.model_file import model_paths, read_card

    card = read_card(model_paths(train_dir / "model")[1])
    return dict(card.training.get("config", {}))
