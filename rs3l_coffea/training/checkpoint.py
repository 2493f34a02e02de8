"""Training checkpoints that resume exactly and load without unpickling arbitrary objects.

A checkpoint is a directory ``<out>/checkpoints/ckpt-e<epoch>-s<step>/`` holding

- ``model.safetensors``: the model's state dict (safetensors);
- ``training_state.pt``: optimizer, scheduler and grad-scaler state dicts and the RNG states,
  made only of tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
  reads it;
- ``state.json``: epoch, batches consumed in that epoch (the data-stream position), global
  step, per-step losses, per-epoch history, best validation loss, early-stopping counter and the
  resolved training configuration.

``last.json`` and ``best.json`` in ``<out>/checkpoints/`` name the newest and the best
checkpoint directory. Every file is written atomically and a checkpoint directory is complete
before a pointer names it; older directories are deleted only after the pointer moved, so a
SIGKILL at any moment leaves a loadable checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.errors import ModelFormatError
from rs3l_coffea.nn.model_file import check_finite

LAST = "last.json"
BEST = "best.json"


@dataclass
class TrainingProgress:
    """Everything besides tensors that a resumed run needs to continue where it stopped."""

    epoch: int = 0
    batches_in_epoch: int = 0
    global_step: int = 0
    step_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU, CUDA if present, numpy legacy, python) as weights-only data."""
    numpy_state = np.random.get_state()  # noqa: NPY002 - third-party code may use the global state
    assert isinstance(numpy_state, tuple)  # the legacy form, which get_state() returns by default
    python_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": numpy_state[0],
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": {"version": python_state[0], "internal": list(python_state[1]), "gauss": python_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoint_root: str | Path,
    model: torch.nn.Module,
    tensors_state: dict[str, Any],
    progress: TrainingProgress,
    is_best: bool = False,
) -> Path:
    """Write a checkpoint directory, then move ``last.json`` (and ``best.json``) onto it."""
    root = Path(checkpoint_root)
    root.mkdir(parents=True, exist_ok=True)
    directory = root / f"ckpt-e{progress.epoch:04d}-b{progress.batches_in_epoch:06d}-s{progress.global_step:08d}"
    directory.mkdir(exist_ok=True)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(state_dict, directory / "model.safetensors", action="refusing to write the checkpoint")
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state_dict, str(tmp))
    with atomic_path(directory / "training_state.pt") as tmp:
        torch.save(tensors_state, tmp)
    with atomic_open(directory / "state.json") as handle:
        json.dump(progress.to_json(), handle)
    _point(root / LAST, directory)
    if is_best:
        _point(root / BEST, directory)
    _prune(root)
    return directory


def _point(pointer: Path, directory: Path) -> None:
    with atomic_open(pointer) as handle:
        json.dump({"checkpoint": directory.name}, handle)


def _referenced(root: Path) -> set[str]:
    names = set()
    for pointer in (LAST, BEST):
        path = root / pointer
        if path.is_file():
            names.add(json.loads(path.read_text())["checkpoint"])
    return names


def _prune(root: Path) -> None:
    keep = _referenced(root)
    for directory in root.glob("ckpt-*"):
        if directory.is_dir() and directory.name not in keep:
            shutil.rmtree(directory, ignore_errors=True)


def checkpoint_dir(checkpoint_root: str | Path, which: str = "last") -> Path | None:
    """The checkpoint directory ``last.json``/``best.json`` points to (None if none was written)."""
    pointer = Path(checkpoint_root) / (LAST if which == "last" else BEST)
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as error:
        raise ModelFormatError(f"checkpoint pointer {pointer} is unreadable: {error}") from error
    directory = Path(checkpoint_root) / name
    if not directory.is_dir():
        raise ModelFormatError(f"checkpoint pointer {pointer} names {directory}, which does not exist")
    return directory


@dataclass
class LoadedCheckpoint:
    directory: Path
    model_state: dict[str, torch.Tensor]
    tensors_state: dict[str, Any]
    progress: TrainingProgress


def load_checkpoint(directory: str | Path) -> LoadedCheckpoint:
    """Read a checkpoint directory (safetensors, ``weights_only=True`` torch file and JSON)."""
    directory = Path(directory)
    for name in ("model.safetensors", "training_state.pt", "state.json"):
        if not (directory / name).is_file():
            raise ModelFormatError(f"checkpoint {directory} lacks {name}")
    try:
        model_state = load_file(str(directory / "model.safetensors"))
        tensors_state = torch.load(directory / "training_state.pt", map_location="cpu", weights_only=True)
        progress = TrainingProgress(**json.loads((directory / "state.json").read_text()))
    except Exception as error:
        raise ModelFormatError(f"checkpoint {directory} cannot be read: {error}") from error
    return LoadedCheckpoint(directory, model_state, tensors_state, progress)
