"""Transformer backbone (padding/order invariance, IR-safe variant) and LoRA adapters."""

from __future__ import annotations

import pytest
import torch

from rs3l_coffea.features.names import FEATURE_INDEX
from rs3l_coffea.nn import (
    DGCNNConfig,
    LoRAConfig,
    LoRALinear,
    ModelConfig,
    TransformerConfig,
    build_model,
    has_lora,
    merge_lora,
)

torch.set_num_threads(1)
PT = FEATURE_INDEX["log_pt"]


def transformer(ir_safe=False, seed=0, pool="mean"):
    torch.manual_seed(seed)
    config = TransformerConfig(d_model=16, n_heads=2, n_layers=2, dim_feedforward=32, output_dim=5, ir_safe=ir_safe, pool=pool)
    return build_model(ModelConfig(backbone=config)).double().eval()


def jets(multiplicities, n_slots, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(multiplicities), n_slots, 15, generator=generator, dtype=torch.float64)
    x[..., PT] = 2.0 + torch.rand(len(multiplicities), n_slots, generator=generator, dtype=torch.float64) * 3  # pT 7-150 GeV
    mask = torch.arange(n_slots) < torch.tensor(multiplicities)[:, None]
    return x, mask


@pytest.mark.parametrize("ir_safe", [False, True])
@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_transformer_padding_and_order_invariance(ir_safe, pool):
    model = transformer(ir_safe=ir_safe, pool=pool)
    multiplicities = [0, 1, 4, 9]
    x, mask = jets(multiplicities, 9)
    long_x, long_mask = jets(multiplicities, 16, seed=1)
    long_x[:, :9] = x
    long_x[~long_mask] = 1e20  # huge garbage under the mask
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = model(x, mask)[0]
        padded = model(long_x, long_mask)[0]
        permuted = model(long_x[:, perm], long_mask[:, perm])[0]
    assert torch.isfinite(base).all()
    torch.testing.assert_close(padded, base, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(permuted, base, rtol=1e-9, atol=1e-10)


def add_soft_particle(x, mask, log_pt):
    soft = torch.randn(x.shape[0], 1, 15, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    soft[..., PT] = log_pt
    return torch.cat([x, soft], dim=1), torch.cat([mask, torch.ones(x.shape[0], 1, dtype=torch.bool)], dim=1)


def test_ir_safe_transformer_ignores_extremely_soft_particle():
    x, mask = jets([5, 12, 30], 30)
    soft_x, soft_mask = add_soft_particle(x, mask, log_pt=torch.log(torch.tensor(1e-9)).item())
    safe, unsafe = transformer(ir_safe=True), transformer(ir_safe=False)
    with torch.no_grad():
        change_safe = (safe(soft_x, soft_mask)[0] - safe(x, mask)[0]).abs().max() / safe(x, mask)[0].abs().max()
        change_unsafe = (unsafe(soft_x, soft_mask)[0] - unsafe(x, mask)[0]).abs().max() / unsafe(x, mask)[0].abs().max()
    # weight of a 1e-9 GeV particle relative to ~10 GeV ones: (1e-10)^0.5 = 1e-5 in attention, 1e-10 in the pool
    assert change_safe < 1e-4
    assert change_unsafe > 100 * change_safe  # the plain transformer is not IR safe


def dgcnn_model(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone=DGCNNConfig(width=16, k=4, output_hidden=(8,), output_dim=4))).double()


def test_lora_init_equals_base_and_only_adapters_train():
    base = dgcnn_model()
    adapted = build_model(ModelConfig(backbone=base.config.backbone, lora=LoRAConfig(rank=2, alpha=4.0))).double()
    # LoRALinear keeps the base layer under `.base`: load base weights under the adapted names
    state = {k.replace(".weight", ".base.weight").replace(".bias", ".base.bias"): v for k, v in base.state_dict().items()}
    missing, unexpected = adapted.load_state_dict(state, strict=False)
    assert not unexpected and all("lora_" in k for k in missing)
    x, mask = jets([3, 7], 7)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x, mask)[0], base(x, mask)[0], rtol=1e-12, atol=0)
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert has_lora(adapted)
    # one optimisation step changes only the adapters, and merging keeps the function
    frozen_before = {n: p.clone() for n, p in adapted.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in adapted.parameters() if p.requires_grad], lr=0.1)
    adapted.train()
    adapted(x, mask)[0].square().mean().backward()
    optimizer.step()
    adapted.eval()
    for name, value in adapted.named_parameters():
        if name in frozen_before:
            assert torch.equal(value, frozen_before[name])
    with torch.no_grad():
        before_merge = adapted(x, mask)[0]
        assert not torch.allclose(before_merge, base(x, mask)[0])
        merge_lora(adapted)
        assert not has_lora(adapted)
        torch.testing.assert_close(adapted(x, mask)[0], before_merge, rtol=1e-10, atol=0)


def test_lora_linear_effective_weight():
    layer = torch.nn.Linear(5, 3).double()
    lora = LoRALinear(layer, rank=2, alpha=6.0).double()
    lora.lora_b.data.normal_()
    x = torch.randn(4, 5, dtype=torch.float64)
    expected = x @ (layer.weight + 3.0 * lora.lora_b @ lora.lora_a).T + layer.bias
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected)


@pytest.mark.parametrize("backbone", [DGCNNConfig(width=8, k=4), TransformerConfig(d_model=8, n_heads=2)])
def test_built_backbones_carry_the_attributes_jet_model_reads(backbone) -> None:
    from rs3l_coffea.nn import Backbone

    model = build_model(ModelConfig(backbone=backbone))
    assert isinstance(model.backbone, Backbone)
    assert model.backbone.config == backbone
    assert (model.backbone.input_dim, model.backbone.output_dim) == (backbone.input_dim, backbone.output_dim)
    assert model.input_convention is None  # set only by load_published_rs3l
