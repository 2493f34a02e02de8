"""``build_model``: the one place that turns a configuration into modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rs3l_coffea.nn.backbone import Backbone
from rs3l_coffea.nn.config import DGCNNConfig, ModelConfig, TransformerConfig
from rs3l_coffea.nn.dgcnn import DGCNN
from rs3l_coffea.nn.heads import ClassificationHead
from rs3l_coffea.nn.jet_model import JetModel
from rs3l_coffea.nn.lora import apply_lora
from rs3l_coffea.nn.transformer import ParticleTransformer


def build_backbone(config: DGCNNConfig | TransformerConfig) -> Backbone:
    """The backbone module for a backbone config."""
    if isinstance(config, DGCNNConfig):
        return DGCNN(config)
    return ParticleTransformer(config)


def build_model(config: ModelConfig | Mapping[str, Any] | None = None) -> JetModel:
    """Build a freshly initialised :class:`JetModel` from a config (object or ``to_dict()`` form).

    The same config always yields the same module tree and parameter names, so a state dict
    saved from one build loads into another. With ``config.lora`` the backbone's Linear layers
    are wrapped in LoRA adapters and frozen (heads stay trainable).
    """
    if config is None:
        config = ModelConfig()
    elif not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    backbone = build_backbone(config.backbone)
    if config.lora is not None:
        apply_lora(backbone, rank=config.lora.rank, alpha=config.lora.alpha)
    heads = [ClassificationHead(config.backbone.output_dim, head) for head in config.heads]
    return JetModel(backbone, heads, config)
