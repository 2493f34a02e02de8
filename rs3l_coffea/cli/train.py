"""``rs3l train pretrain|finetune|supervised``: the standalone trainer on the command line.

Configuration: an optional YAML file (``--config``; schema ``rs3l_coffea.training.config``),
then the explicit options (set as typed fields), then ``--set key.path=value`` overrides
(applied last, YAML-parsed).

``--resume`` continues from the last checkpoint in ``--out`` only when the configuration equals
the checkpoint's (apart from ``epochs``, ``progress`` and ``threads``); otherwise it stops and
lists the keys that differ. ``--resume-with-changes`` resumes anyway: the checkpoint's
optimizer state is restored and then the new learning rate and weight decay are applied to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer

from rs3l_coffea.cli._common import check_output_path, user_errors

train_app = typer.Typer(
    help="Train RS3L models: contrastive pretraining, fine-tuning, supervised baseline.",
    no_args_is_help=True,
)

_CONFIG = typer.Option(None, "--config", "-c", help="YAML configuration file.", exists=False)
_DATA = typer.Option(None, "--data", "-d", help="Ntuple shards (globs or directories); repeatable.")
_OUT = typer.Option(None, "--out", "-o", help="Output directory (checkpoints, metrics, model).")
_EPOCHS = typer.Option(None, "--epochs", help="Number of epochs.")
_BATCH = typer.Option(None, "--batch-size", help="Jets (classification) or pairs (pretraining) per batch.")
_LR = typer.Option(None, "--lr", help="Learning rate.")
_SEED = typer.Option(None, "--seed", help="Random seed.")
_AUG = typer.Option(None, "--augmentations", help="Re-simulated variants (seed,fsr_up,fsr_down,vincia,...) and/or, for pretrain, symmetry augmentations (rotate,translate,smear,split,dropout).")
_SET = typer.Option(None, "--set", "-s", help="Override: key.path=value (repeatable), e.g. optimizer.lr=1e-3.")
_RESUME = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out (same configuration).")
_RESUME_CHANGED = typer.Option(
    False,
    "--resume-with-changes",
    help="Resume although the configuration differs from the checkpoint's (the differing keys are printed).",
)
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines.")


def _run(
    task: str,
    config: Path | None,
    data: list[str] | None,
    out: Path | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    augmentations: str | None,
    overrides: list[str] | None,
    resume: bool,
    quiet: bool,
    extra: Mapping[str, object] | None = None,
    resume_with_changes: bool = False,
    partner: str | None = None,
) -> None:
    from rs3l_coffea.training.config import load_config

    settings: dict[str, object] = {"task": task}
    explicit = {
        "data.files": list(data) if data else None,
        "out_dir": None if out is None else str(out),
        "epochs": epochs,
        "data.batch_size": batch_size,
        "optimizer.lr": lr,
        "seed": seed,
        **(extra or {}),
    }
    settings.update({key: value for key, value in explicit.items() if value is not None})
    if quiet:
        settings["progress"] = False
    with user_errors():
        if augmentations is not None:  # re-simulation variants and/or symmetry augmentations
            from rs3l_coffea.augment.registry import training_settings
            from rs3l_coffea.variants import VARIANT_CODES

            variants = [name for name in VARIANT_CODES if name != "nominal"]
            settings.update(training_settings(augmentations, variants, task=task, partner=partner))
        cfg = load_config(config, overrides or [], base={"task": task}, settings=settings)
        if cfg.task != task:
            from rs3l_coffea.errors import ConfigError

            raise ConfigError(f"config key task: {cfg.task!r} conflicts with the command 'rs3l train {task}'")
        check_output_path(cfg.out_dir, option="--out", directory=True)
        from rich.console import Console

        from rs3l_coffea.training.trainer import train

        console = Console(stderr=True)
        result = train(
            cfg,
            resume=resume or resume_with_changes,
            allow_changed_config=resume_with_changes,
            log=None if quiet else lambda line: console.print(line, markup=False),
        )
        typer.echo(str(result.model_path))


@train_app.command("pretrain")
def pretrain(
    config: Path | None = _CONFIG,
    data: list[str] | None = _DATA,
    out: Path | None = _OUT,
    epochs: int | None = _EPOCHS,
    batch_size: int | None = _BATCH,
    lr: float | None = _LR,
    seed: int | None = _SEED,
    augmentations: str | None = _AUG,
    loss: str | None = typer.Option(None, "--loss", help="ntxent (default) or vicreg."),
    temperature: float | None = typer.Option(None, "--temperature", help="NT-Xent temperature (0.1)."),
    partner: str | None = typer.Option(None, "--partner", help="resim, symmetry or resim+symmetry."),
    overrides: list[str] | None = _SET,
    resume: bool = _RESUME,
    resume_with_changes: bool = _RESUME_CHANGED,
    quiet: bool = _QUIET,
) -> None:
    """Contrastive pretraining on nominal / re-simulated jet pairs (NT-Xent or VICReg)."""
    extra = {"loss.name": loss, "loss.temperature": temperature, "data.partner": partner}
    _run("pretrain", config, data, out, epochs, batch_size, lr, seed, augmentations, overrides, resume, quiet, extra,
         resume_with_changes, partner=partner)


@train_app.command("finetune")
def finetune(
    backbone: Path | None = typer.Option(
        None,
        "--backbone",
        help="Pretrained model: the output directory of `rs3l train pretrain` or its model.safetensors / model.json.",
    ),
    mode: str | None = typer.Option(None, "--mode", help="fixed (default), floating or lora."),
    config: Path | None = _CONFIG,
    data: list[str] | None = _DATA,
    out: Path | None = _OUT,
    epochs: int | None = _EPOCHS,
    batch_size: int | None = _BATCH,
    lr: float | None = _LR,
    seed: int | None = _SEED,
    augmentations: str | None = _AUG,
    overrides: list[str] | None = _SET,
    resume: bool = _RESUME,
    resume_with_changes: bool = _RESUME_CHANGED,
    quiet: bool = _QUIET,
) -> None:
    """Train a classifier head on a pretrained backbone (frozen, floating or with LoRA adapters)."""
    extra = {"finetune.backbone": None if backbone is None else str(backbone), "finetune.mode": mode}
    _run("finetune", config, data, out, epochs, batch_size, lr, seed, augmentations, overrides, resume, quiet, extra,
         resume_with_changes)


@train_app.command("supervised")
def supervised(
    config: Path | None = _CONFIG,
    data: list[str] | None = _DATA,
    out: Path | None = _OUT,
    epochs: int | None = _EPOCHS,
    batch_size: int | None = _BATCH,
    lr: float | None = _LR,
    seed: int | None = _SEED,
    augmentations: str | None = _AUG,
    overrides: list[str] | None = _SET,
    resume: bool = _RESUME,
    resume_with_changes: bool = _RESUME_CHANGED,
    quiet: bool = _QUIET,
) -> None:
    """The fully supervised baseline: same architecture from scratch, same data and augmentation mix."""
    _run("supervised", config, data, out, epochs, batch_size, lr, seed, augmentations, overrides, resume, quiet,
         None, resume_with_changes)


def register(app: typer.Typer) -> None:
    """Add ``rs3l train`` to the root CLI."""
    app.add_typer(train_app, name="train")
