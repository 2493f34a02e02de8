"""One training step's pieces, shared by the trainer, the benchmarks and the DDP tests.

:class:`TrainingView` (the module DDP wraps: embeddings and head logits in one forward pass),
:class:`World` (the process group: rank and size, single-process by default),
:func:`contrastive_loss` (NT-Xent or VICReg on a pair batch, gathered over the ranks with
gradients) and :func:`classification_loss` (a labelled batch), and :func:`step_generator`
(the seeded RNG of one step, so that a resumed run draws the same augmentations).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rs3l_coffea.training.config import TrainConfig
from rs3l_coffea.training.losses import nt_xent, vicreg
from rs3l_coffea.training.partners import PartnerFn


class TrainingView(nn.Module):
    """``forward(x, mask) -> (embedding, logits)`` of a ``JetModel`` (head logits, not probabilities).

    The trainer optimises (and DDP wraps) this view so that every forward pass, including the
    heads' pre-activation outputs, goes through one ``nn.Module.__call__``.

    Padding costs compute (kNN and EdgeConv scale with the padded size), so with
    ``bucket_jets`` the jets are sorted by multiplicity and run through the backbone in buckets
    of that many jets, each trimmed to its largest jet; embeddings return in input order.
    Every jet's embedding depends on its own particles only, so this changes no result beyond
    float rounding (checked by a test).
    """

    def __init__(self, model: nn.Module, bucket_jets: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.bucket_jets = bucket_jets

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        backbone = getattr(self.model, "backbone", None)
        if backbone is None:
            out = self.model(x, mask)
            return out[0] if isinstance(out, tuple) else out
        # Slots needed per jet: up to its last real particle (masks may have holes, e.g. after
        # constituent dropout, so this is not the particle count).
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        needed = (mask * positions).amax(dim=1) if mask.shape[1] else mask.sum(dim=1)
        if self.bucket_jets is None or x.shape[0] <= self.bucket_jets:
            width = max(int(needed.max()), 1) if x.shape[0] else x.shape[1]
            return backbone(x[:, :width], mask[:, :width])
        # Stable sort: the bucketing, hence the rounding, is a pure function of the batch.
        order = torch.argsort(needed, stable=True)
        pieces = []
        for chunk in order.split(self.bucket_jets):
            width = max(int(needed[chunk].max()), 1)
            pieces.append(backbone(x[chunk, :width], mask[chunk, :width]))
        embedding = torch.cat(pieces)
        return embedding[torch.argsort(order)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(x, mask)
        heads = getattr(self.model, "heads", None)
        if not heads:
            return embedding, embedding.new_zeros((embedding.shape[0], 0))
        return embedding, torch.cat([head.logits(embedding) for head in heads], dim=1)


def model_input_dim(model: nn.Module) -> int | None:
    """Features per particle the model expects, when it says so."""
    value = getattr(model, "input_dim", None)
    return int(value) if value is not None else None


# --- distributed helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device: torch.device) -> World:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE > 1``), or stay single."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums, over ranks, the gradients of this rank's slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.size, ctx.n = dist.get_rank(), dist.get_world_size(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(ctx.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks in rank order, keeping the autograd graph.

    Every rank evaluates the same loss on the gathered (global) batch; the backward pass sums the
    gradients all ranks compute for this rank's slice (W times the single-process gradient), and
    DDP's averaging over W ranks brings it back: a DDP step over the gathered batch equals a
    single-process step over the same batch (checked by ``tests/test_training_ddp.py``).
    All ranks must hold the same number of rows.
    """
    if not world.distributed:
        return tensor
    return _GatherWithGrad.apply(tensor)


# --- losses per task ----------------------------------------------------------------------------


@overload
def contrastive_loss(
    view: nn.Module,
    batch: Mapping[str, torch.Tensor],
    partner_fn: PartnerFn,
    generator: torch.Generator,
    config: TrainConfig,
    world: World = ...,
    device: torch.device | None = ...,
    return_embeddings: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def contrastive_loss(
    view: nn.Module,
    batch: Mapping[str, torch.Tensor],
    partner_fn: PartnerFn,
    generator: torch.Generator,
    config: TrainConfig,
    world: World = ...,
    device: torch.device | None = ...,
    *,
    return_embeddings: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def contrastive_loss(
    view: nn.Module,
    batch: Mapping[str, torch.Tensor],
    partner_fn: PartnerFn,
    generator: torch.Generator,
    config: TrainConfig,
    world: World = World(),
    device: torch.device | None = None,
    return_embeddings: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NT-Xent (or VICReg) loss of one pair batch; with DDP over the batch of all ranks."""
    x_a, mask_a, x_b, mask_b = partner_fn(batch, generator)
    device = device or x_a.device
    x = torch.cat([x_a, x_b]).to(device, non_blocking=True)
    mask = torch.cat([mask_a, mask_b]).to(device, non_blocking=True)
    # One forward pass over both views: every jet's embedding is independent of the others.
    embedding, _ = view(x, mask)
    z_a, z_b = embedding.chunk(2)
    z_a = gather_with_grad(z_a, world)
    z_b = gather_with_grad(z_b, world)
    if config.loss.name == "ntxent":
        loss = nt_xent(z_a, z_b, config.loss.temperature)
    else:
        loss = vicreg(
            z_a, z_b, config.loss.vicreg_invariance, config.loss.vicreg_variance, config.loss.vicreg_covariance
        )
    if return_embeddings:
        return loss, z_a.detach(), z_b.detach()
    return loss


@overload
def classification_loss(
    view: nn.Module,
    batch: Mapping[str, torch.Tensor],
    device: torch.device | None = ...,
    return_logits: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def classification_loss(
    view: nn.Module,
    batch: Mapping[str, torch.Tensor],
    device: torch.device | None = ...,
    *,
    return_logits: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor]: ...


def classification_loss(
    view: nn.Module,
    batch: Mapping[str, torch.Tensor],
    device: torch.device | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Binary cross entropy (one logit column) or cross entropy (several) of a labelled batch."""
    device = device or batch["x"].device
    x = batch["x"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    _, logits = view(x, mask)
    logits = logits.float()
    if logits.shape[1] == 1:
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], label.float())
    else:
        loss = F.cross_entropy(logits, label)
    if return_logits:
        return loss, logits.detach()
    return loss


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, *keys)``: per-step augmentation randomness that
    does not depend on (or disturb) global RNG state."""
    entropy = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(entropy[0] >> np.uint64(1)))


# --- the trainer ---------------------------------------------------------------------------------
