"""The plain ELU multilayer perceptron used by the output blocks and the heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def elu_mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """``Linear-ELU`` for each width in ``hidden``, then a final ``Linear`` (no activation).

    The layout (and so the state-dict keys ``0.weight``, ``2.weight``, ...) matches the
    published RS3L output MLP, so published checkpoints load unchanged.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ELU()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)
