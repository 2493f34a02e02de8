"""LoRA adapters for fine-tuning a pretrained backbone with few trainable parameters.

``LoRALinear`` wraps an ``nn.Linear``: ``y = base(x) + (alpha / rank) · x Aᵀ Bᵀ`` with ``B = 0``
at initialisation (so the wrapped model is unchanged until trained) and the base weights frozen.
``merge_lora`` folds the adapters back into plain ``nn.Linear`` layers (for export or speed).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not math.isfinite(alpha):  # a NaN scale makes every output NaN
            raise ValueError(f"LoRA alpha must be a finite number, got {alpha}")
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``W + scale · B A`` (what a merged layer would hold)."""
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * nn.functional.linear(nn.functional.linear(x, self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None)
        layer = layer.to(dtype=self.base.weight.dtype, device=self.base.weight.device)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer


def apply_lora(module: nn.Module, rank: int = 4, alpha: float = 8.0) -> nn.Module:
    """Wrap every ``nn.Linear`` inside ``module`` (in place) and freeze all other parameters.

    Afterwards only the ``lora_a``/``lora_b`` tensors require gradients. Returns ``module``.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, LoRALinear(child, rank=rank, alpha=alpha))
        elif not isinstance(child, LoRALinear):
            apply_lora(child, rank=rank, alpha=alpha)
    return module


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` inside ``module`` (in place) by its merged ``nn.Linear``."""
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            setattr(module, name, child.merged())
        else:
            merge_lora(child)
    return module


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` contains LoRA adapters."""
    return any(isinstance(m, LoRALinear) for m in module.modules())
