"""Particle-transformer backbone with padding masks; optional JetCLR infrared-safe variant."""

from __future__ import annotations

import torch
from torch import nn

from rs3l_coffea.nn.backbone import Backbone
from rs3l_coffea.nn.config import TransformerConfig
from rs3l_coffea.nn.dgcnn import feature_count_message, masked_pool
from rs3l_coffea.nn.mlp import elu_mlp


class EncoderBlock(nn.Module):
    """Pre-norm self-attention block (attention with an additive per-key bias) and GELU MLP.

    Written out instead of ``nn.TransformerEncoderLayer`` because that layer's inference fast
    path returns NaN with a float attention mask in eval/no-grad mode (torch 2.13).
    """

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, h: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """``h (B, P, D)``, ``key_bias (B, 1, 1, P)`` added to every attention logit of key j."""
        batch, n_particles, width = h.shape
        head_dim = width // self.n_heads
        qkv = self.qkv(self.norm1(h)).view(batch, n_particles, 3, self.n_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=key_bias, dropout_p=self.attention_dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, n_particles, width)
        h = h + self.dropout(self.proj(attended))
        return h + self.dropout(self.feed_forward(self.norm2(h)))


class ParticleTransformer(Backbone):
    """Linear embedding → pre-norm encoder blocks → pool over real particles → MLP.

    ``forward(x (B, P, F), mask (B, P) bool) -> (B, output_dim)``. Padded particles are masked
    out as attention keys and excluded from the pool. No positional encoding: outputs do not
    depend on particle order. With ``ir_safe`` the attention logits get ``beta · log pT_j``
    (key particle j, so softer particles get weight ∝ pT^beta) and the pool is the pT-weighted
    mean; an infinitely soft particle then has no influence. A jet with zero particles pools to
    0, so its embedding is ``output(0)``.
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        config = config or TransformerConfig()
        self.config = config
        self.input_proj = nn.Linear(config.input_dim, config.d_model)
        self.blocks = nn.ModuleList(
            EncoderBlock(config.d_model, config.n_heads, config.dim_feedforward, config.dropout)
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model)
        self.output = elu_mlp(config.d_model, config.output_hidden, config.output_dim)
        self.input_dim = config.input_dim
        self.output_dim = config.output_dim
        self.n_heads = config.n_heads
        self.ir_safe = config.ir_safe
        self.beta = float(config.beta)
        self.pt_index = config.pt_feature_index
        self.mean_pool = config.pool == "mean"
        self.feature_error = feature_count_message(config.input_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(self.feature_error + ", got " + str(x.shape[-1]))
        batch, n_particles = x.shape[0], x.shape[1]
        real = mask.unsqueeze(-1)
        x = torch.where(real, x, torch.zeros_like(x))
        # An empty jet would have no key to attend to (softmax of all -inf = NaN): let it attend
        # to its first (zero) slot; the pool ignores that slot anyway.
        first_slot = torch.arange(n_particles, device=x.device).unsqueeze(0) == 0
        keys = mask | (first_slot & ~mask.any(dim=1, keepdim=True))
        bias = torch.zeros((batch, n_particles), dtype=x.dtype, device=x.device)
        log_pt = x[..., self.pt_index]
        if self.ir_safe:
            bias = bias + self.beta * log_pt
        bias = bias.masked_fill(~keys, float("-inf"))
        key_bias = bias[:, None, None, :]
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, key_bias)
        h = self.final_norm(h)
        if self.ir_safe:
            weights = torch.softmax(log_pt.masked_fill(~mask, float("-inf")), dim=1)  # pT_i / Σ pT
            weights = torch.where(mask, weights, torch.zeros_like(weights))
            pooled = (weights.unsqueeze(-1) * h).sum(dim=1)
        else:
            pooled = masked_pool(h, mask, self.mean_pool)
        return self.output(pooled)
