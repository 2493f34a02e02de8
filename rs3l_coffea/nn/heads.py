"""Classification heads on the jet embedding."""

from __future__ import annotations

import torch
from torch import nn

from rs3l_coffea.nn.config import HeadConfig
from rs3l_coffea.nn.mlp import elu_mlp


class ClassificationHead(nn.Module):
    """Linear (paper: one ``Linear(D → 1)`` + sigmoid) or MLP head returning probabilities.

    ``forward(embedding (B, D)) -> (B, C)``: sigmoid of one logit when the head has one class,
    softmax over the classes otherwise. ``logits`` gives the pre-activation values for training.
    """

    def __init__(self, embedding_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        n_out = max(1, len(config.classes))
        self.net = elu_mlp(embedding_dim, config.hidden, n_out)
        self.softmax = n_out > 1

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs ``(B, C)`` (use with BCE-with-logits / cross-entropy)."""
        return self.net(embedding)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        logits = self.net(embedding)
        if self.softmax:
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)
