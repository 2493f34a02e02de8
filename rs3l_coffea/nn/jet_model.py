"""``JetModel``: a backbone plus named classification heads, the unit that is saved and served."""

from __future__ import annotations

import torch
from torch import nn

from rs3l_coffea.nn.config import ModelConfig
from rs3l_coffea.nn.heads import ClassificationHead


class JetModel(nn.Module):
    """Backbone and heads.

    ``forward(x (B, P, F) float, mask (B, P) bool) -> (embedding (B, D), scores (B, H))``:
    ``embedding`` is the backbone output (RS3L uses its direction), ``scores`` are
    probabilities: per head, one sigmoid column (single-class head) or a softmax block over its
    classes; ``head_names[i]`` names column ``i``. Without heads ``scores`` has shape ``(B, 0)``.
    ``config`` is the :class:`ModelConfig` that rebuilds this model (``build_model``).
    """

    def __init__(self, backbone: nn.Module, heads: list[ClassificationHead], config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        self.config = config
        self.head_names = [c for h in config.heads for c in h.column_names]
        self.embedding_dim = int(config.backbone.output_dim)
        self.input_dim = int(config.backbone.input_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.backbone(x, mask)
        scores: list[torch.Tensor] = []
        for head in self.heads:
            scores.append(head(embedding))
        if len(scores) == 0:
            return embedding, torch.zeros((embedding.shape[0], 0), dtype=embedding.dtype, device=embedding.device)
        return embedding, torch.cat(scores, dim=1)
