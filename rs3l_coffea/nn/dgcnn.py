"""The DGCNN backbone of the published RS3L code, dense and padded (``forward(x, mask)``)."""

from __future__ import annotations

import torch
from torch import nn

from rs3l_coffea.features.names import FEATURE_NAMES
from rs3l_coffea.nn.backbone import Backbone
from rs3l_coffea.nn.config import DGCNNConfig
from rs3l_coffea.nn.edge_conv import DenseDynamicEdgeConv
from rs3l_coffea.nn.mlp import elu_mlp


def feature_count_message(expected: int) -> str:
    """Error text for inputs with the wrong number of per-particle features."""
    if expected == len(FEATURE_NAMES):
        return f"expected {expected} features per particle, in this order: {', '.join(FEATURE_NAMES)}"
    return f"expected {expected} features per particle"


def masked_pool(h: torch.Tensor, mask: torch.Tensor, mean: bool, padding_is_zero: bool = False) -> torch.Tensor:
    """Sum (or mean) of ``h (B, P, C)`` over real particles; a jet without particles pools to 0.

    ``padding_is_zero``: the caller guarantees zeros on padded rows (no masking pass)."""
    total = (h if padding_is_zero else h.masked_fill(~mask.unsqueeze(-1), 0.0)).sum(dim=1)
    if mean:
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(h.dtype)
        return total / count
    return total


class DGCNN(Backbone):
    """Embedding MLP → dynamic EdgeConv layers → pool and output MLP (order per config).

    ``forward(x (B, P, F) float, mask (B, P) bool) -> (B, output_dim)``; with
    ``config.max_particles`` only the first that many slots of ``P`` are used. Padded particles
    (mask False) never enter the kNN graph nor the pool, whatever values they hold. A jet with
    zero particles pools to the zero vector, so its embedding is ``output(0)`` with
    ``pool_first=True`` (the published order) and exactly 0 with ``pool_first=False``.
    Module names mirror the published checkpoint (``embed`` ↔ ``pf_encode``, ``convs.i.message``
    ↔ ``conv{i+1}.nn``, ``output`` ↔ ``output``).
    """

    def __init__(self, config: DGCNNConfig | None = None) -> None:
        super().__init__()
        config = config or DGCNNConfig()
        self.config = config
        layers: list[nn.Module] = []
        width_in = config.input_dim
        for _ in range(config.embed_layers):
            layers += [nn.Linear(width_in, config.width), nn.ELU()]
            width_in = config.width
        self.embed = nn.Sequential(*layers)
        self.convs = nn.ModuleList(
            DenseDynamicEdgeConv(
                config.width,
                config.width,
                config.k,
                aggregation=config.aggregation,
                edge_path=config.edge_path,
                gather_budget=config.gather_budget,
            )
            for _ in range(config.conv_layers)
        )
        self.output = elu_mlp(width_in, config.output_hidden, config.output_dim)
        self.input_dim = config.input_dim
        self.output_dim = config.output_dim
        self.pool_first = config.pool_first
        self.mean_pool = config.pool == "mean"
        self.feature_error = feature_count_message(config.input_dim)
        self.max_particles = config.max_particles

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(self.feature_error + ", got " + str(x.shape[-1]))
        if self.max_particles is not None:
            x, mask = x[:, : self.max_particles], mask[:, : self.max_particles]
        # masked_fill, not torch.where: one pass, no zero tensor to fill (as in every layer below).
        padding = ~mask.unsqueeze(-1)
        h = x.masked_fill(padding, 0.0)  # padding may hold anything, even inf/NaN
        h = self.embed(h)
        # Padded rows of h are now finite but not zero (the embedding's biases). An EdgeConv reads
        # them only as queries whose outputs it zeroes, so they reach no real particle; without
        # one they would reach the pool.
        if len(self.convs) == 0:
            h = h.masked_fill_(padding, 0.0)  # in place: the embedding's own output (ELU keeps its input)
        for conv in self.convs:
            h = conv(h, mask)
        if self.pool_first:
            # Padded rows are zero here (every EdgeConv zeroes its padded outputs).
            return self.output(masked_pool(h, mask, self.mean_pool, padding_is_zero=True))
        return masked_pool(self.output(h), mask, self.mean_pool)
