"""The training loop for ``pretrain`` (contrastive), ``finetune`` and ``supervised`` tasks.

One :class:`Trainer` serves the three tasks; what differs is the data mode (pairs vs labelled
jets), the loss and which parameters train. It runs single-process or under ``torchrun``
(DDP; gloo on CPU, NCCL on CUDA), uses autocast only on CUDA, and checkpoints every
``checkpoint_every`` optimizer steps and at each epoch end such that ``resume=True`` reproduces
the losses of an uninterrupted run exactly (model, optimizer, scheduler, RNG states and the
position in the deterministic data stream are all restored).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.errors import ConfigError, InputFileError, ModelFormatError, RS3LError
from rs3l_coffea.training.checkpoint import (
    TrainingProgress,
    capture_rng_state,
    checkpoint_dir,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rs3l_coffea.training.config import TrainConfig
from rs3l_coffea.training.dataset import JetStream, Split, expand_files, inspect_shards
from rs3l_coffea.training.partners import PartnerFn, make_partner_fn
from rs3l_coffea.training.steps import (  # re-exported: the trainer's public step API
    TrainingView as TrainingView,
)
from rs3l_coffea.training.steps import (
    World as World,
)
from rs3l_coffea.training.steps import (
    classification_loss as classification_loss,
)
from rs3l_coffea.training.steps import (
    contrastive_loss as contrastive_loss,
)
from rs3l_coffea.training.steps import (
    gather_with_grad as gather_with_grad,
)
from rs3l_coffea.training.steps import (
    init_world as init_world,
)
from rs3l_coffea.training.steps import (
    model_input_dim as model_input_dim,
)
from rs3l_coffea.training.steps import (
    step_generator as step_generator,
)

if TYPE_CHECKING:  # the nn stack is imported where it is used (it is heavy)
    from rs3l_coffea.nn.jet_model import JetModel

MODEL_NAME = "model"  # -> model.safetensors + model.json (rs3l_coffea.nn.save_model)

#: Keys that may change between a run and its ``--resume`` without changing what is computed:
#: more epochs continue the same run, the rest only changes reporting or speed.
RESUMABLE_CHANGES = ("epochs", "progress", "threads", "out_dir", "data.read_cache_mb")


class NonFiniteLossError(RS3LError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and epoch."""


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested configuration dicts: ``{key: (old, new)}``."""
    differences: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differences.update(config_differences(a, b, dotted + "."))
        elif a != b:
            differences[dotted] = (a, b)
    return differences


# --- models as the trainer sees them ------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path | None
    progress: TrainingProgress
    stopped_early: bool


class Trainer:
    """Train a ``JetModel`` as configured; see :func:`rs3l_coffea.training.train`.

    ``model``: a prebuilt model (default: built from ``config.model``, or for ``finetune``
    loaded from ``config.finetune.backbone``). ``partner_fn``: the positive-partner hook
    (default from ``config.data.partner``). ``on_step(step, loss)`` is called after every step.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: JetModel | None = None,
        partner_fn: PartnerFn | None = None,
        on_step: Callable[[int, float], None] | None = None,
        log: Callable[[str], None] | None = None,
        allow_changed_config: bool = False,
    ) -> None:
        self.config = config
        self.allow_changed_config = allow_changed_config
        self.on_step = on_step
        self._log = log
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.device = _pick_device(config.device)
        self.world = init_world(self.device)
        self.out_dir = Path(config.out_dir)
        self.checkpoint_root = self.out_dir / "checkpoints"
        torch.manual_seed(config.seed + self.world.rank)
        np.random.seed((config.seed + self.world.rank) % 2**32)  # noqa: NPY002 - for code we call

        # Everything that can fail on bad input fails here, before the first step.
        self.model = model if model is not None else build_task_model(config)
        self.shards = inspect_shards(expand_files(config.data.files), model_input_dim(self.model))
        self.partner_fn = partner_fn or (
            make_partner_fn(
                config.data.partner,
                augmentation_names=config.data.symmetry_augmentations,
                augmentation_params=config.data.symmetry_params,
            )
            if config.task == "pretrain"
            else None
        )
        if config.task != "pretrain":
            _check_head(self.model, config)
        self.model.to(self.device)
        # The bare view serves validation (no DDP gradient hooks); ``view`` is what trains.
        self.bare_view = TrainingView(self.model, config.bucket_jets)
        self.view: nn.Module = self.bare_view
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.view = DistributedDataParallel(
                self.view, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError(f"task {config.task!r}: the model has no trainable parameters")
        self.optimizer = build_optimizer(config, trainable)
        self.scheduler = build_scheduler(config, self.optimizer)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = (
            torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.train_stream = self._stream("train")
        self.val_stream = self._stream("val")
        self.progress = TrainingProgress(config=config.to_dict())

    # -- construction helpers --

    def _stream(self, split: Split) -> JetStream:
        c = self.config
        data = c.data
        pretrain = c.task == "pretrain"
        # The supervised baseline sees exactly the fine-tuning data (same pool, same splits), so
        # the two compare on equal terms and the fine-tuning test split stays unseen by both.
        pool: Literal["pretrain", "finetune"] = "pretrain" if pretrain else "finetune"
        return JetStream(
            self.shards,
            mode="pairs" if pretrain else "jets",
            split=split,
            pool=pool,
            variants=data.augmentations,
            batch_size=data.batch_size,
            shuffle_buffer=data.shuffle_buffer,
            step_size=data.step_size,
            n_classes=data.n_classes,
            balance_classes=data.balance_classes and not pretrain and split == "train",
            use_partner_jets=data.use_partner_jets and split == "train",
            require_partner=not (pretrain and data.partner == "symmetry"),
            drop_last=split == "train",
            pretrain_fraction=data.pretrain_fraction,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            split_salt=data.split_salt,
            seed=c.seed,
            rank=self.world.rank,
            world_size=self.world.size,
            read_cache_mb=data.read_cache_mb,
        )

    def _loader(self, stream: JetStream, epoch: int) -> torch.utils.data.DataLoader:
        stream.set_epoch(epoch)
        workers = self.config.data.num_workers
        return torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            # A private generator: creating the iterator must not consume global RNG state.
            generator=torch.Generator().manual_seed(self.config.seed + epoch),
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            multiprocessing_context="spawn" if workers and self.device.type == "cuda" else None,
        )

    def log(self, message: str) -> None:
        if self.world.is_main and self._log is not None:
            self._log(message)

    # -- resume --

    def _resume(self) -> dict[str, Any] | None:
        directory = checkpoint_dir(self.checkpoint_root, "last")
        if directory is None:
            self.log(f"no checkpoint in {self.checkpoint_root}; starting from scratch")
            return None
        loaded = load_checkpoint(directory)
        changed = self._config_changes(loaded.progress.config)
        if changed and not self.allow_changed_config:
            lines = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise ConfigError(
                f"--resume: the configuration differs from the one checkpoint {directory} was "
                f"written with ({lines}); rerun with the checkpoint's settings, use a new --out, "
                "or pass --resume-with-changes (Python: allow_changed_config=True) to resume anyway"
            )
        try:
            self.model.load_state_dict(loaded.model_state)
        except RuntimeError as error:
            raise ModelFormatError(f"checkpoint {directory} does not fit the model: {error}") from error
        state = loaded.tensors_state
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.progress = loaded.progress
        if changed:
            self._apply_optimizer_settings()
            self.progress.config = self.config.to_dict()
            self.log(f"resuming with a changed configuration: {', '.join(changed)}")
        self.log(
            f"resuming from {directory.name}: epoch {self.progress.epoch}, "
            f"{self.progress.batches_in_epoch} batches into it, step {self.progress.global_step}"
        )
        rng = state["rng"]
        return rng[self.world.rank] if isinstance(rng, list) else rng

    def _config_changes(self, saved: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        if not saved:  # a checkpoint that recorded no configuration: nothing to compare with
            self.log("the checkpoint records no configuration; resuming without comparing it")
            return {}
        current = json.loads(json.dumps(self.config.to_dict()))
        return {
            key: values
            for key, values in config_differences(saved, current).items()
            if key not in RESUMABLE_CHANGES and key.split(".")[0] not in RESUMABLE_CHANGES
        }

    def _apply_optimizer_settings(self) -> None:
        """After a resume with changed settings: the new lr / weight decay / momentum, at the same
        position of the learning-rate schedule (the restored optimizer state holds the old ones)."""
        o = self.config.optimizer
        scheduler = self.scheduler
        base_lrs = scheduler.base_lrs if scheduler is not None else None
        for i, group in enumerate(self.optimizer.param_groups):
            old_base = base_lrs[i] if base_lrs is not None else group.get("initial_lr", group["lr"])
            ratio = group["lr"] / old_base if old_base else 1.0
            group["lr"] = o.lr * ratio
            group["initial_lr"] = o.lr
            group["weight_decay"] = o.weight_decay
            if "momentum" in group:
                group["momentum"] = o.momentum
        if scheduler is not None:
            scheduler.base_lrs = [o.lr] * len(self.optimizer.param_groups)

    def _tensors_state(self) -> dict[str, Any]:
        rng: dict[str, Any] | list[Any] = capture_rng_state()
        if self.world.distributed:
            import torch.distributed as dist

            every: list[Any] = [None] * self.world.size
            dist.all_gather_object(every, rng)
            rng = every
        state = {"optimizer": self.optimizer.state_dict(), "rng": rng, "scaler": self.scaler.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def _checkpoint(self, is_best: bool = False) -> None:
        state = self._tensors_state()  # collective in DDP: every rank takes part
        if self.world.is_main:
            save_checkpoint(self.checkpoint_root, self.model, state, self.progress, is_best=is_best)
            self._write_step_log()

    # -- the loop --

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (or until early stopping); write the final model."""
        c = self.config
        rng_to_restore = self._resume() if resume else None
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.out_dir / "config.json") as handle:
                json.dump(c.to_dict(), handle, indent=2)
        stopped_early = self._stopping_reached()
        with _progress_bar(c.progress and self.world.is_main) as bar:
            while self.progress.epoch < c.epochs and not stopped_early:
                epoch = self.progress.epoch
                train_loss = self._train_epoch(epoch, bar, rng_to_restore)
                rng_to_restore = None
                record = {"epoch": epoch, "step": self.progress.global_step, "train_loss": train_loss}
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                record.update(self._validate())
                if self.scheduler is not None:
                    self.scheduler.step()
                monitored = record.get("val_loss")
                if monitored is None or not math.isfinite(monitored):
                    monitored = train_loss
                improved = self.progress.best_val_loss is None or monitored < self.progress.best_val_loss
                if improved:
                    self.progress.best_val_loss = float(monitored)
                    self.progress.best_epoch = epoch
                    self.progress.epochs_without_improvement = 0
                else:
                    self.progress.epochs_without_improvement += 1
                self.progress.history.append(record)
                self.progress.epoch = epoch + 1
                self.progress.batches_in_epoch = 0
                self._checkpoint(is_best=improved)
                self._write_metrics(record)
                self.log(_format_record(record))
                stopped_early = self._stopping_reached()
        model_path = self._save_final() if self.world.is_main else None
        if self.world.distributed:
            import torch.distributed as dist

            dist.barrier()
        return TrainResult(self.out_dir, model_path, self.progress, stopped_early)

    def _stopping_reached(self) -> bool:
        patience = self.config.early_stopping_patience
        return patience is not None and self.progress.epochs_without_improvement >= patience

    def _batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        loader = iter(self._loader(self.train_stream, epoch))
        for _ in range(skip):
            if next(loader, None) is None:
                return
        yield from loader

    def _train_epoch(self, epoch: int, bar: Any, rng_to_restore: dict[str, Any] | None) -> float:
        c = self.config
        self.view.train()
        skip = self.progress.batches_in_epoch
        limit = c.max_steps_per_epoch
        batches = self._batches(epoch, skip)
        # Restore RNG states only now: building the loader and skipping batches must not shift them.
        if rng_to_restore is not None:
            restore_rng_state(rng_to_restore)
        epoch_losses = self.progress.step_losses[len(self.progress.step_losses) - skip :] if skip else []
        task = bar.add_task(f"epoch {epoch}", total=limit) if bar is not None else None
        while limit is None or self.progress.batches_in_epoch < limit:
            batch = next(batches, None)
            # Every rank takes part in the collective; ``batch is None`` then only narrows the type.
            if not self._all_ranks_have(batch is not None) or batch is None:
                break
            loss = self._train_step(batch)
            self.progress.global_step += 1
            self.progress.batches_in_epoch += 1
            self.progress.step_losses.append(loss)
            epoch_losses.append(loss)
            if self.on_step is not None:
                self.on_step(self.progress.global_step, loss)
            if bar is not None:
                bar.update(task, advance=1, description=f"epoch {epoch} loss {loss:.4f}")
            if self.progress.global_step % c.checkpoint_every == 0:
                self._checkpoint()
        if not epoch_losses:
            raise InputFileError(
                f"epoch {epoch}: the training stream gave no complete batch of {c.data.batch_size} "
                f"(files {[str(s.path) for s in self.shards]}, task {c.task}); use more data or a smaller batch"
            )
        return float(np.mean(epoch_losses))

    def _all_ranks_have(self, have: bool) -> bool:
        """True when every rank still has a batch (DDP ranks must take the same number of steps)."""
        if not self.world.distributed:
            return have
        import torch.distributed as dist

        flag = torch.tensor([1 if have else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _train_step(self, batch: Mapping[str, torch.Tensor]) -> float:
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            if c.task == "pretrain":
                generator = step_generator(c.seed, 1, self.world.rank, self.progress.global_step)
                assert self.partner_fn is not None  # set in __init__ for pretraining
                loss = contrastive_loss(
                    self.view, batch, self.partner_fn, generator, c, self.world, self.device
                )
            else:
                loss = classification_loss(self.view, batch, self.device)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss {loss.item()} at step {self.progress.global_step + 1} "
                f"(epoch {self.progress.epoch}, batch {self.progress.batches_in_epoch + 1}); nothing "
                f"was written for this step: lower optimizer.lr (now {c.optimizer.lr!r}) or check the inputs"
            )
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    # -- validation and diagnostics --

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        c = self.config
        self.view.eval()
        # Validation runs the bare view: no DDP gradient hooks, every rank its own shard of data.
        view = self.bare_view
        losses, weights = [], []
        labels, z_as, z_bs, scores = [], [], [], []
        # The same validation batches every epoch (NT-Xent depends on the batch composition),
        # so that epochs compare and early stopping sees the model change, not the data.
        loader = self._loader(self.val_stream, 0)
        for i, batch in enumerate(loader):
            if c.max_val_steps is not None and i >= c.max_val_steps:
                break
            if c.task == "pretrain" and len(batch["label"]) < 2:
                continue  # a lone pair has no negatives (and no variance for VICReg)
            with self._autocast():
                if c.task == "pretrain":
                    generator = step_generator(c.seed, 2, self.world.rank, i)
                    assert self.partner_fn is not None  # set in __init__ for pretraining
                    loss, z_a, z_b = contrastive_loss(
                        view, batch, self.partner_fn, generator, c, World(), self.device, return_embeddings=True
                    )
                    z_as.append(z_a.float().cpu())
                    z_bs.append(z_b.float().cpu())
                else:
                    loss, logits = classification_loss(view, batch, self.device, return_logits=True)
                    scores.append(logits.float().cpu())
            losses.append(float(loss))
            weights.append(len(batch["label"]))
            labels.append(batch["label"])
        self.view.train()
        totals = torch.tensor([sum(loss * n for loss, n in zip(losses, weights, strict=True)), sum(weights)], dtype=torch.float64)
        if self.world.distributed:
            import torch.distributed as dist

            dist.all_reduce(totals)
        if totals[1] == 0:
            return {}
        record: dict[str, float] = {"val_loss": float(totals[0] / totals[1])}
        if not self.world.is_main:
            return record
        label = torch.cat(labels).numpy()
        if c.task == "pretrain":
            record.update(convergence_diagnostics(torch.cat(z_as), torch.cat(z_bs), label))
        else:
            record.update(classification_metrics(torch.cat(scores), label))
        return record

    # -- outputs --

    def _write_metrics(self, record: dict[str, Any]) -> None:
        if not self.world.is_main:
            return
        history = self.progress.history
        with atomic_open(self.out_dir / "metrics.jsonl") as handle:
            for row in history:
                handle.write(json.dumps(row) + "\n")
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
        with atomic_open(self.out_dir / "metrics.csv") as handle:
            handle.write(buffer.getvalue())
        _tensorboard_log(self.out_dir, record)

    def _write_step_log(self) -> None:
        with atomic_open(self.out_dir / "steps.csv") as handle:
            handle.write("step,loss\n")
            for step, loss in enumerate(self.progress.step_losses, start=1):
                handle.write(f"{step},{loss!r}\n")

    def _save_final(self) -> Path:
        """The best (else last) weights as ``<out>/model.safetensors`` + ``model.json`` (nn format)."""
        from rs3l_coffea.nn import save_model

        best = checkpoint_dir(self.checkpoint_root, "best")
        if best is not None:
            self.model.load_state_dict(load_checkpoint(best).model_state)
        last = self.progress.history[-1] if self.progress.history else {}
        card = {
            "description": f"rs3l-coffea {self.config.task} model",
            "training": {
                "task": self.config.task,
                "trained_epochs": self.progress.epoch,
                "global_steps": self.progress.global_step,
                "best_epoch": self.progress.best_epoch,
                "config": self.config.to_dict(),
                "ntuples": [str(s.path) for s in self.shards],
            },
            "metrics": {"best_val_loss": self.progress.best_val_loss, "last_epoch": last},
        }
        weights, _card = save_model(self.out_dir / MODEL_NAME, self.model, card)
        return weights


# --- builders -----------------------------------------------------------------------------------


def _pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def build_optimizer(config: TrainConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.name == "adam":
        return torch.optim.Adam(parameters, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(parameters, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(parameters, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-epoch LR schedule: StepLR(step_size, gamma) (paper: 50, 0.5) or cosine to zero."""
    s = config.scheduler
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


def default_head(config: TrainConfig) -> Any:
    """The classification head used when the model config names none: one sigmoid column for
    two classes (label 1 = signal), a softmax block for more."""
    from rs3l_coffea.nn.config import HeadConfig

    n = config.data.n_classes
    classes = () if n == 2 else tuple(f"class{i}" for i in range(n))
    return HeadConfig(name="score", classes=classes)


def build_task_model(config: TrainConfig) -> JetModel:
    """Model for the task: fresh for pretrain/supervised, pretrained backbone + head for finetune."""
    from rs3l_coffea.nn import build_model
    from rs3l_coffea.nn.config import LoRAConfig, ModelConfig

    model_config = ModelConfig.from_dict(config.model) if config.model else ModelConfig()
    if config.task == "pretrain":
        return build_model(dataclasses.replace(model_config, heads=(), lora=None))
    heads = model_config.heads or (default_head(config),)
    if config.task == "supervised":
        return build_model(dataclasses.replace(model_config, heads=heads, lora=None))

    from rs3l_coffea.nn import load_model
    from rs3l_coffea.nn.lora import apply_lora

    path = pretrained_model_path(config.finetune.backbone)
    pretrained, _card = load_model(path)
    base_config = dataclasses.replace(pretrained.config, heads=heads, lora=None)
    model = build_model(base_config)
    model.backbone.load_state_dict(pretrained.backbone.state_dict())
    mode = config.finetune.mode
    if mode == "fixed":
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    elif mode == "lora":
        lora = LoRAConfig(rank=config.finetune.lora_rank, alpha=config.finetune.lora_alpha)
        apply_lora(model.backbone, rank=lora.rank, alpha=lora.alpha)
        # Record the adapters in the model's config so the saved file rebuilds the same tree.
        model.config = dataclasses.replace(model.config, lora=lora)
    return model


def pretrained_model_path(backbone: str | None) -> Path:
    """The model stem that ``finetune.backbone`` names: a ``rs3l train pretrain`` output directory
    (its ``model.safetensors`` + ``model.json``), either of those two files, or their stem."""
    from rs3l_coffea.nn.model_file import model_paths

    if not backbone:
        raise ConfigError("config key finetune.backbone: fine-tuning needs a pretrained model file (--backbone)")
    path = Path(backbone)
    expected = (
        "expected the output directory of `rs3l train pretrain` (holding model.safetensors and "
        "model.json) or one of those two files"
    )
    if path.is_dir():
        stem = path / MODEL_NAME
        missing = [str(file) for file in model_paths(stem) if not file.is_file()]
        if missing:
            raise InputFileError(
                f"pretrained backbone directory {path} holds no trained model: {', '.join(missing)} "
                f"missing; {expected} (has `rs3l train pretrain --out {path}` finished?)"
            )
        return stem
    weights, card = model_paths(path)
    if not weights.is_file() and not card.is_file():
        raise InputFileError(f"pretrained backbone file {path} does not exist; {expected}")
    for file in (weights, card):
        if not file.is_file():
            raise InputFileError(f"pretrained backbone {path}: {file} is missing; {expected}")
    return weights.with_suffix("")


def _check_head(model: nn.Module, config: TrainConfig) -> None:
    heads = getattr(model, "heads", None)
    if heads is None:
        return
    width = sum(max(1, len(h.config.classes)) for h in heads)
    expected = 1 if config.data.n_classes == 2 else config.data.n_classes
    if width != expected:
        raise ConfigError(
            f"config key data.n_classes = {config.data.n_classes} needs {expected} head output(s), "
            f"the model has {width}"
        )


def convergence_diagnostics(z_a: torch.Tensor, z_b: torch.Tensor, label: np.ndarray) -> dict[str, float]:
    """The paper's per-epoch diagnostics on validation pairs.

    ``pos_cos/<class>``: mean cosine similarity of positive pairs per truth class (rising as
    the representation becomes invariant); ``class_mean_cos/<a>_<b>``: cosine between the mean
    normalised embeddings of two classes (falling as classes separate); plus
    ``pos_cos/all`` and ``neg_cos/all`` (a jet against the partner of another pair).
    """
    a = F.normalize(z_a, dim=1)
    b = F.normalize(z_b, dim=1)
    positive = (a * b).sum(dim=1)
    out = {"pos_cos/all": float(positive.mean())}
    if len(a) > 1:
        out["neg_cos/all"] = float((a * b.roll(1, dims=0)).sum(dim=1).mean())
    classes = sorted(int(c) for c in np.unique(label))
    means = {}
    for c in classes:
        selected = torch.from_numpy(label == c)
        out[f"pos_cos/{c}"] = float(positive[selected].mean())
        means[c] = F.normalize(torch.cat([a[selected], b[selected]]).mean(dim=0), dim=0)
    for i, ci in enumerate(classes):
        for cj in classes[i + 1 :]:
            out[f"class_mean_cos/{ci}_{cj}"] = float((means[ci] * means[cj]).sum())
    return out


def classification_metrics(logits: torch.Tensor, label: np.ndarray) -> dict[str, float]:
    """Validation accuracy and (binary) ROC AUC."""
    if logits.shape[1] == 1:
        score = logits[:, 0].numpy()
        predicted = (score > 0).astype(int)
    else:
        score = None
        predicted = logits.argmax(dim=1).numpy()
    out = {"val_accuracy": float(np.mean(predicted == label))}
    if score is not None and len(np.unique(label)) == 2:
        from sklearn.metrics import roc_auc_score

        out["val_auc"] = float(roc_auc_score(label, score))
    return out


def _format_record(record: Mapping[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
    return " ".join(parts)


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        yield bar


_TB_WRITERS: dict[str, Any] = {}


def _tensorboard_log(out_dir: Path, record: Mapping[str, Any]) -> None:
    """Scalars to TensorBoard when the ``tensorboard`` package is installed (optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    key = str(out_dir)
    if key not in _TB_WRITERS:
        _TB_WRITERS[key] = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
    writer = _TB_WRITERS[key]
    for name, value in record.items():
        if isinstance(value, float | int) and name not in ("epoch", "step"):
            writer.add_scalar(name, value, record["epoch"])
    writer.flush()


def train(
    config: TrainConfig,
    resume: bool = False,
    model: JetModel | None = None,
    partner_fn: PartnerFn | None = None,
    on_step: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
    allow_changed_config: bool = False,
) -> TrainResult:
    """Validate everything, then train; the one entry point behind ``rs3l train``.

    ``resume=True`` continues from the last checkpoint in ``config.out_dir`` and refuses (listing
    the differing keys) when the configuration differs from the checkpoint's in anything but
    :data:`RESUMABLE_CHANGES`, unless ``allow_changed_config`` (``--resume-with-changes``).
    """
    start = time.perf_counter()
    trainer = Trainer(
        config, model=model, partner_fn=partner_fn, on_step=on_step, log=log, allow_changed_config=allow_changed_config
    )
    result = trainer.fit(resume=resume)
    trainer.log(f"done in {time.perf_counter() - start:.1f} s; model: {result.model_path}")
    return result
