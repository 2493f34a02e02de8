"""``JetModel``: a backbone plus named classification heads, the unit that is saved and served."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rs3l_coffea.nn.backbone import Backbone
from rs3l_coffea.nn.config import LoRAConfig, ModelConfig
from rs3l_coffea.nn.heads import ClassificationHead
from rs3l_coffea.nn.lora import LoRALinear


def _lora_config(backbone: Backbone) -> LoRAConfig | None:
    adapters = [m for m in backbone.modules() if isinstance(m, LoRALinear)]
    if not adapters:
        return None
    return LoRAConfig(rank=adapters[0].rank, alpha=adapters[0].scale * adapters[0].rank)


class JetModel(nn.Module):
    """Backbone and heads.

    ``forward(x (B, P, F) float, mask (B, P) bool) -> (embedding (B, D), scores (B, H))``:
    ``embedding`` is the backbone output (RS3L uses its direction), ``scores`` are
    probabilities: per head, one sigmoid column (single-class head) or a softmax block over its
    classes; ``head_names[i]`` names column ``i``. Without heads ``scores`` has shape ``(B, 0)``.
    ``config`` is the :class:`ModelConfig` that rebuilds this model (``build_model``); when not
    given it is derived from the backbone's and heads' configs (LoRA rank/alpha included).
    ``input_convention`` is ``None`` except for published checkpoints.
    """

    def __init__(
        self, backbone: Backbone, heads: list[ClassificationHead] | None = None, config: ModelConfig | None = None
    ) -> None:
        super().__init__()
        heads = list(heads or [])
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        if config is None:
            config = ModelConfig(
                backbone=backbone.config, heads=tuple(h.config for h in heads), lora=_lora_config(backbone)
            )
        self.config = config
        self.head_names = [c for h in config.heads for c in h.column_names]
        self.embedding_dim = int(config.backbone.output_dim)
        self.input_dim = int(config.backbone.input_dim)
        #: How the inputs map to what the backbone was trained on (published checkpoints,
        #: see ``nn.published``); written next to the feature names on export.
        self.input_convention: dict[str, Any] | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.backbone(x, mask)
        scores: list[torch.Tensor] = []
        for head in self.heads:
            scores.append(head(embedding))
        if len(scores) == 0:
            return embedding, torch.zeros((embedding.shape[0], 0), dtype=embedding.dtype, device=embedding.device)
        return embedding, torch.cat(scores, dim=1)
