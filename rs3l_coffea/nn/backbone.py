"""``Backbone``: the base class of the modules a :class:`~rs3l_coffea.nn.JetModel` wraps.

A backbone maps ``forward(x (B, P, F) float, mask (B, P) bool) -> (B, output_dim)`` and carries
the configuration that rebuilds it (``config``) and its input and output widths. JetModel, the
exporters and the trainer read these three attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from rs3l_coffea.nn.config import DGCNNConfig, TransformerConfig


class Backbone(nn.Module):
    """Base class of DGCNN, ParticleTransformer and the published-checkpoint wrapper."""

    # Declared for the type checker only: class-level annotations on an nn.Module are read by
    # torch.jit.script as attribute types, and a configuration dataclass has no TorchScript type.
    if TYPE_CHECKING:
        config: DGCNNConfig | TransformerConfig
        input_dim: int
        output_dim: int
