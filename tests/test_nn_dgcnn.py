"""DGCNN backbone: published-weight parity against an independent per-jet reference, masking,
permutation and padding invariance, algebraic == general EdgeConv path."""

from __future__ import annotations

import pytest
import torch

from rs3l_coffea.errors import ModelFormatError
from rs3l_coffea.features.names import FEATURE_NAMES
from rs3l_coffea.nn import DGCNNConfig, ModelConfig, build_model, load_published_rs3l

torch.set_num_threads(1)


def reference_published_embedding(state: dict[str, torch.Tensor], jet: torch.Tensor, k: int = 24) -> torch.Tensor:
    """The published RS3L forward pass for ONE jet (n, 15), written from the PyG semantics.

    pf_encode MLP; three DynamicEdgeConv: kNN by exact pairwise distance in the current
    features, the point itself included, min(k, n) neighbours, message ELU(W [x_i, x_j - x_i] + b)
    for every edge explicitly, max over neighbours; global sum pool; output MLP.
    Uses the checkpoint's own key names, independently of our module layout.
    """
    elu = torch.nn.functional.elu

    def lin(h, name):
        return h @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    h = elu(lin(elu(lin(jet, "pf_encode.0")), "pf_encode.2"))
    n = h.shape[0]
    for conv in ("conv1", "conv2", "conv3"):
        dist = ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
        neighbours = torch.topk(dist, min(k, n), dim=1, largest=False).indices
        new = torch.empty_like(h)
        for i in range(n):
            xi = h[i].expand(neighbours.shape[1], -1)
            xj = h[neighbours[i]]
            messages = elu(lin(torch.cat([xi, xj - xi], dim=1), f"{conv}.nn.0"))
            new[i] = messages.max(dim=0).values
        h = new
    pooled = h.sum(dim=0)
    out = elu(lin(pooled, "output.0"))
    out = elu(lin(out, "output.2"))
    out = elu(lin(out, "output.4"))
    return lin(out, "output.6")


def ragged_batch(multiplicities, generator, pad_to=None, dtype=torch.float64):
    n_max = pad_to or max(max(multiplicities), 1)
    x = torch.randn(len(multiplicities), n_max, len(FEATURE_NAMES), generator=generator, dtype=dtype)
    mask = torch.zeros(len(multiplicities), n_max, dtype=torch.bool)
    for row, n in enumerate(multiplicities):
        mask[row, :n] = True
    return x, mask


@pytest.fixture(scope="module")
def published(published_checkpoint):
    state = torch.load(published_checkpoint, map_location="cpu", weights_only=True)["model"]
    state64 = {k: v.double() for k, v in state.items()}
    return state64, load_published_rs3l(published_checkpoint, adapt_inputs=False).double()


def test_published_parity_ragged_jets(published):
    state64, model = published
    generator = torch.Generator().manual_seed(1)
    multiplicities = [1, 2, 5, 23, 24, 25, 37, 60, 100]
    x, mask = ragged_batch(multiplicities, generator)
    with torch.no_grad():
        ours, scores = model(x, mask)
    assert scores.shape == (len(multiplicities), 0)
    for row, n in enumerate(multiplicities):
        expected = reference_published_embedding(state64, x[row, :n])
        rel = (ours[row] - expected).abs().max() / expected.abs().max()
        assert rel < 1e-4, (n, float(rel))


def test_published_128_dim_variant(published_checkpoint):
    path = published_checkpoint.with_name("mar20_run0_128outputdims.pt")
    if not path.is_file():
        pytest.skip("128-d checkpoint absent")
    model = load_published_rs3l(path, adapt_inputs=False).double()
    state = {k: v.double() for k, v in torch.load(path, map_location="cpu", weights_only=True)["model"].items()}
    x, mask = ragged_batch([7, 30], torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x, mask)[0]
    assert ours.shape == (2, 128)
    for row, n in enumerate([7, 30]):
        expected = reference_published_embedding(state, x[row, :n])
        assert (ours[row] - expected).abs().max() / expected.abs().max() < 1e-4


def test_torch_geometric_edgeconv_parity(published):
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    state64, model = published
    x, mask = ragged_batch([12, 40], torch.Generator().manual_seed(3))
    elu = torch.nn.ELU()
    for row, n in enumerate([12, 40]):
        h = x[row, :n]
        h = elu(h @ state64["pf_encode.0.weight"].T + state64["pf_encode.0.bias"])
        h = elu(h @ state64["pf_encode.2.weight"].T + state64["pf_encode.2.bias"])
        for conv in ("conv1", "conv2", "conv3"):
            lin = torch.nn.Linear(256, 128).double()
            edge_conv = pyg_nn.EdgeConv(torch.nn.Sequential(lin, elu), aggr="max")
            with torch.no_grad():  # after construction: EdgeConv re-initialises its nn in __init__
                lin.weight.copy_(state64[f"{conv}.nn.0.weight"])
                lin.bias.copy_(state64[f"{conv}.nn.0.bias"])
            dist = ((h[:, None] - h[None]) ** 2).sum(-1)
            nbr = torch.topk(dist, min(24, n), dim=1, largest=False).indices
            edge_index = torch.stack([nbr.reshape(-1), torch.arange(n).repeat_interleave(nbr.shape[1])])
            h = edge_conv(h, edge_index)
        out = h.sum(0)
        for i, name in enumerate(("output.0", "output.2", "output.4", "output.6")):
            out = out @ state64[f"{name}.weight"].T + state64[f"{name}.bias"]
            if i < 3:
                out = elu(out)
        ours = model(x[row : row + 1, :n], mask[row : row + 1, :n])[0][0]
        assert (ours - out).abs().max() / out.abs().max() < 1e-4


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = DGCNNConfig(width=16, k=5, output_hidden=(8,), output_dim=4, **overrides)
    return build_model(ModelConfig(backbone=config)).double().eval()


def test_padding_length_particle_order_and_masked_values():
    model = small_model()
    generator = torch.Generator().manual_seed(4)
    multiplicities = [0, 1, 3, 6, 11]
    x, mask = ragged_batch(multiplicities, generator)
    with torch.no_grad():
        base = model(x, mask)[0]
        # longer padding, filled with huge garbage (and inf/NaN) under mask=False
        x_long, mask_long = ragged_batch(multiplicities, generator, pad_to=20)
        x_long[:, : x.shape[1]] = x
        x_long[~mask_long] = torch.randn(int((~mask_long).sum()), 15, dtype=torch.float64) * 1e30
        x_long[0, 0, 0] = float("nan")
        x_long[1, 5, 3] = float("inf")
        padded = model(x_long, mask_long)[0]
        # permute the particles of each jet (real and padded slots together)
        perm = torch.stack([torch.randperm(20, generator=generator) for _ in multiplicities])
        rows = torch.arange(len(multiplicities))[:, None]
        permuted = model(x_long[rows, perm], mask_long[rows, perm])[0]
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded, base, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(permuted, base, rtol=1e-10, atol=1e-12)


def test_particle_cap_sees_only_the_leading_slots_in_training_and_export(tmp_path):
    """``max_particles = 4``: the network's output equals the uncapped network (same weights) on
    the first 4 slots of every jet; the slots behind the cap never matter, in eager and TorchScript."""
    from rs3l_coffea.nn.export import script_model

    capped, full = small_model(max_particles=4), small_model()
    capped.load_state_dict(full.state_dict())
    generator = torch.Generator().manual_seed(8)
    x, mask = ragged_batch([0, 2, 4, 7, 12], generator)
    with torch.no_grad():
        expected = full(x[:, :4], mask[:, :4])[0]
        got = capped(x, mask)[0]
        x_changed = x.clone()
        x_changed[:, 4:] = torch.randn(x[:, 4:].shape, generator=generator, dtype=x.dtype) * 100
        changed = capped(x_changed, mask)[0]
        scripted = script_model(capped)(x, mask)[0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(changed, got, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scripted, got, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(full(x, mask)[0], got)  # the cap does change jets with more particles
    with pytest.raises(Exception, match="max_particles"):
        DGCNNConfig(max_particles=0)


def test_empty_jet_is_output_of_zero_pool():
    model = small_model()
    x = torch.full((2, 4, 15), 7.0, dtype=torch.float64)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    with torch.no_grad():
        out = model(x, mask)[0]
        expected = model.backbone.output(torch.zeros(1, 16, dtype=torch.float64))
    torch.testing.assert_close(out, expected.expand(2, -1))
    mlp_first = small_model(pool_first=False)
    assert torch.equal(mlp_first(x, mask)[0], torch.zeros(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("pool_first", [True, False])
def test_algebraic_path_equals_general_path(pool_first):
    algebraic = small_model(seed=5, pool_first=pool_first)
    general = small_model(seed=5, pool_first=pool_first, edge_path="general")
    general.load_state_dict(algebraic.state_dict())
    x, mask = ragged_batch([1, 4, 5, 9, 17], torch.Generator().manual_seed(6))
    with torch.no_grad():
        a, g = algebraic(x, mask)[0], general(x, mask)[0]
    torch.testing.assert_close(a, g, rtol=1e-10, atol=0)


def test_chunked_rows_equal_unchunked():
    whole = small_model(seed=7, gather_budget=1 << 30)
    chunked = small_model(seed=7, gather_budget=50)  # forces one query row per chunk
    x, mask = ragged_batch([3, 13, 30], torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(chunked(x, mask)[0], whole(x, mask)[0], rtol=1e-12, atol=0)


def test_mean_aggregation_matches_reference():
    model = small_model(seed=9, aggregation="mean", edge_path="general", conv_layers=1, embed_layers=1)
    x, mask = ragged_batch([3, 8], torch.Generator().manual_seed(10))
    bb = model.backbone
    with torch.no_grad():
        ours = model(x, mask)[0]
        for row, n in enumerate([3, 8]):
            h = bb.embed(x[row, :n])
            dist = ((h[:, None] - h[None]) ** 2).sum(-1)
            nbr = torch.topk(dist, min(5, n), dim=1, largest=False).indices
            xi = h[:, None].expand(-1, nbr.shape[1], -1)
            h = bb.convs[0].message(torch.cat([xi, h[nbr] - xi], -1)).mean(1)
            torch.testing.assert_close(ours[row], bb.output(h.sum(0)), rtol=1e-10, atol=1e-12)


def test_wrong_feature_count_names_features():
    model = small_model()
    with pytest.raises(ValueError, match=r"expected 15 features.*log_pt, log_pt_rel"):
        model(torch.zeros(1, 3, 14, dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool))


def test_published_loader_rejects_pickle_and_other_layout(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    evil.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ModelFormatError, match=r"evil\.pt"):
        load_published_rs3l(evil)
    assert not marker.exists()
    other = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(ModelFormatError, match=r"fc\.weight"):
        load_published_rs3l(other)


def test_gradients_finite_with_empty_jets_and_nan_padding():
    torch.manual_seed(11)
    model = build_model(ModelConfig(backbone=DGCNNConfig(width=16, k=4, output_hidden=(8,), output_dim=4)))
    x = torch.randn(3, 6, 15)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, :2] = True
    mask[2, :] = True
    x[~mask] = float("nan")
    model(x, mask)[0].sum().backward()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


def test_float32_published_model_matches_float64(published_checkpoint):
    # float32 kNN distances use the float64 expansion (edge_conv.pairwise_sq_distances);
    # the float64 model (exact differences) is checked against the per-jet reference above.
    model32 = load_published_rs3l(published_checkpoint, adapt_inputs=False)
    model64 = load_published_rs3l(published_checkpoint, adapt_inputs=False).double()
    generator = torch.Generator().manual_seed(12)
    multiplicities = torch.randint(1, 101, (48,), generator=generator).tolist()
    x, mask = ragged_batch(multiplicities, generator, dtype=torch.float32)
    with torch.no_grad():
        z32 = model32(x, mask)[0].double()
        z64 = model64(x.double(), mask)[0]
    rel = (z32 - z64).abs().amax(dim=1) / z64.abs().amax(dim=1)
    assert rel.max() < 1e-4, rel.max()


def _small_gather_inputs(seed):
    """float64 table rows of 3 jets x 9 particles (width 5), 4 neighbour slots for 7 query rows
    each (as ``(k, rows)`` slots), the table to differentiate, loss weights, the generator."""
    from rs3l_coffea.nn.edge_conv import _neighbour_slots

    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(3, 9, 5, dtype=torch.float64, generator=generator)
    index = torch.randint(0, 9, (3, 7, 4), generator=generator)
    slots = _neighbour_slots(table, index)
    flat = table.reshape(-1, 5).clone().requires_grad_(True)
    weights = torch.randn(3 * 7, 5, dtype=torch.float64, generator=generator)
    return slots, flat, weights, generator


def test_gather_max_backward_matches_autograd_of_running_max():
    # The single-scatter backward must give the gradient autograd computes through the plain
    # running maximum (no ties with continuous random inputs), and pass gradcheck.
    from rs3l_coffea.nn.edge_conv import _GatherMaxFunction, _running_max

    slots, flat, weights, _generator = _small_gather_inputs(3)

    (grad_custom,) = torch.autograd.grad((_GatherMaxFunction.apply(flat, slots) * weights).sum(), flat)
    (grad_reference,) = torch.autograd.grad((_running_max(flat, slots) * weights).sum(), flat)
    torch.testing.assert_close(grad_custom, grad_reference, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda f: _GatherMaxFunction.apply(f, slots), (flat,))


def _slot_reference(flat, slots):
    from rs3l_coffea.nn.edge_conv import _slot_gather_max

    return _slot_gather_max(flat, slots)


def test_tagged_gather_max_equals_slot_tracking_in_float32():
    # The float32 training path (row tag in the float64 mantissa) must return bit-identical
    # maxima and the same winning rows as the plain comparison loop, including -inf sentinels,
    # +inf, signed zeros, and several query chunks.
    from rs3l_coffea.nn.edge_conv import _TAG_CHUNK_ROWS, _neighbour_slots, _tagged_gather_max

    generator = torch.Generator().manual_seed(21)
    n_rows = 2 * _TAG_CHUNK_ROWS + 37
    table = torch.randn(2, n_rows + 1, 6, generator=generator) * 1e3
    table[:, -1] = float("-inf")  # sentinel row, as in DenseDynamicEdgeConv
    table[0, 3, 2] = float("inf")
    table[1, 5, :] = torch.finfo(torch.float32).tiny / 4  # subnormals
    table[1, 6, 1] = -torch.finfo(torch.float32).max
    index = torch.randint(0, n_rows + 1, (2, n_rows, 7), generator=generator)
    index[0, 0, :] = n_rows  # a row whose neighbours are all missing
    slots = _neighbour_slots(table, index)
    flat = table.reshape(-1, 6)
    value, rows = _tagged_gather_max(flat, slots)
    ref_value, ref_rows = _slot_reference(flat, slots)
    assert value.dtype == torch.float32
    assert torch.equal(value, ref_value)
    assert torch.equal(rows, ref_rows)
    # The winning row really holds the maximum (an independent check of the row decoding).
    assert torch.equal(flat.gather(0, rows), value)


def test_tagged_gather_max_ties_send_the_gradient_to_one_tied_row():
    from rs3l_coffea.nn.edge_conv import _GatherMaxFunction

    flat = torch.tensor([[1.0, -2.0], [1.0, -2.0], [0.5, -3.0]], requires_grad=True)
    slots = torch.tensor([[0], [1], [2]])  # one output row, neighbours 0, 1, 2 (0 and 1 tie)
    out = _GatherMaxFunction.apply(flat, slots)
    torch.testing.assert_close(out.detach(), torch.tensor([[1.0, -2.0]]), rtol=0, atol=0)
    out.sum().backward()
    grad = flat.grad
    # Each channel's unit gradient lands whole on exactly one of the two tied rows.
    assert torch.equal(grad[:2].sum(0), torch.ones(2)) and torch.equal(grad[2], torch.zeros(2))
    assert set(grad[:2].flatten().tolist()) == {0.0, 1.0}


def test_float32_training_gradients_match_float64_reference_formulation():
    # The float32 training path (tagged gather-max, ranking-key kNN) against the float64
    # model, whose EdgeConv runs the comparison loop and exact-difference kNN: same loss
    # gradients up to float32 rounding.
    torch.manual_seed(23)
    model32 = build_model(ModelConfig(backbone=DGCNNConfig(width=32, k=6, output_hidden=(16,), output_dim=4)))
    model64 = build_model(ModelConfig(backbone=DGCNNConfig(width=32, k=6, output_hidden=(16,), output_dim=4)))
    model64.load_state_dict(model32.state_dict())
    model64.double()
    x, mask = ragged_batch([2, 5, 9, 17, 30], torch.Generator().manual_seed(24), dtype=torch.float32)
    weights = torch.randn(5, 4, generator=torch.Generator().manual_seed(25))
    (model32(x, mask)[0] * weights).sum().backward()
    (model64(x.double(), mask)[0] * weights.double()).sum().backward()
    for (name, p32), p64 in zip(model32.named_parameters(), model64.parameters(), strict=True):
        scale = p64.grad.abs().max()
        assert (p32.grad.double() - p64.grad).abs().max() <= 1e-4 * scale, name


def test_ranking_key_knn_equals_exact_difference_knn():
    from rs3l_coffea.nn.edge_conv import dense_knn

    generator = torch.Generator().manual_seed(26)
    x = torch.randn(4, 40, 16, generator=generator)
    mask = torch.rand(4, 40, generator=generator) < 0.8
    mask[3] = False
    mask[3, :5] = True  # fewer real points than k
    fast = dense_knn(x, x, mask, 8)
    exact = dense_knn(x.double(), x.double(), mask, 8)
    assert torch.equal(fast.sort(dim=2).values, exact.sort(dim=2).values)
    chunk = dense_knn(x[:, 10:20], x, mask, 8)
    assert torch.equal(chunk.sort(dim=2).values, exact[:, 10:20].sort(dim=2).values)


def _fused(table, kernel_rows, center, query_mask=None, bias=None):
    """``FusedCenterPlusMax`` on a table and query rows of different lengths: both padded to one
    ``(N, 2C)`` projections tensor (extra query rows masked out), built with torch ops so that
    gradients reach ``table`` and ``center``."""
    from rs3l_coffea.nn.gather_max_kernels import FusedCenterPlusMax

    n_rows = max(table.shape[0], center.shape[0])

    def pad(tensor, value=0):
        return torch.cat([tensor, tensor.new_full((n_rows - tensor.shape[0], tensor.shape[1]), value)])

    mask = torch.zeros(n_rows, dtype=torch.bool)
    mask[: center.shape[0]] = True if query_mask is None else query_mask
    projections = torch.cat([pad(center), pad(table)], dim=1)
    bias = center.new_zeros(center.shape[1]) if bias is None else bias
    return FusedCenterPlusMax.apply(projections, bias, pad(kernel_rows, -1), mask)[: center.shape[0]]


def _fused_reference_inputs(dtype, n_rows=301, width=7, k=9, seed=31):
    """A table with -inf sentinel rows, +inf, the largest negative value, subnormals and planted
    ties; neighbour indices into it; the same indices with -1 for the sentinel (kernel layout)."""
    from rs3l_coffea.nn.edge_conv import _neighbour_slots

    generator = torch.Generator().manual_seed(seed)
    table = (torch.randn(2, n_rows + 1, width, generator=generator) * 1e3).to(dtype)
    table[:, -1] = float("-inf")
    table[0, 3, 2] = float("inf")
    table[1, 5, :] = torch.finfo(dtype).tiny / 4
    table[1, 6, 1] = -torch.finfo(dtype).max
    table[0, 10] = table[0, 11]  # exact ties between two rows
    index = torch.randint(0, n_rows + 1, (2, n_rows, k), generator=generator)
    index[0, 0, :] = n_rows  # every neighbour missing
    index[0, 1, :] = torch.tensor([10, 11] + [n_rows] * (k - 2))  # only the tied rows: the first slot (10) wins
    slots = _neighbour_slots(table, index)
    flat = table.reshape(-1, width)
    kernel_rows = torch.where(slots.t() % (n_rows + 1) == n_rows, -1, slots.t())
    center = torch.randn(2 * n_rows, width, generator=generator).to(dtype)
    return flat, slots, kernel_rows, center, generator


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_center_plus_max_equals_the_torch_comparison_loop(dtype):
    # The numba kernel against the torch comparison loop plus the center: bit-identical values
    # (a max is exact and the addition one float add, documented in gather_max_kernels) and the
    # same winning rows (both take the first slot on ties).
    from rs3l_coffea.nn.edge_conv import _slot_gather_max

    flat, slots, kernel_rows, center, generator = _fused_reference_inputs(dtype)
    ref_max, ref_rows = _slot_gather_max(flat, slots)
    expected = center + ref_max
    value = _fused(flat, kernel_rows, center)
    assert value.dtype == dtype
    assert torch.equal(value, expected)
    assert torch.equal(value[0], torch.full_like(value[0], float("-inf")))  # a row without neighbours
    # The winners, read back through the backward: each gradient lands on its winning row (none
    # for the row without neighbours), and the center's gradient is the output's.
    weights = torch.rand(expected.shape, generator=generator, dtype=dtype)
    table_grad = flat.clone().requires_grad_(True)
    center_grad = center.clone().requires_grad_(True)
    (_fused(table_grad, kernel_rows, center_grad) * weights).sum().backward()
    has_winner = ref_max > float("-inf")
    expected_grad = torch.zeros_like(flat).index_put_(
        (ref_rows[has_winner], torch.arange(flat.shape[1]).expand_as(ref_rows)[has_winner]),
        weights[has_winner], accumulate=True)
    torch.testing.assert_close(table_grad.grad, expected_grad, rtol=1e-6, atol=1e-6)
    assert torch.equal(center_grad.grad, weights)


def test_fused_center_plus_max_zeroes_masked_rows_forward_and_backward():
    # Padded query rows: output exactly 0 and no gradient to their center row nor to any table
    # row through them; the unmasked rows are those of the unmasked call. Exact comparisons: the
    # gather_max_kernels contract makes a masked row an exact 0, an unmasked row an exact max
    # plus two float adds of its own inputs (the same in both calls), and passes the output
    # gradient to the center unchanged.

    flat, _, kernel_rows, center, generator = _fused_reference_inputs(torch.float32)
    query_mask = torch.rand(center.shape[0], generator=generator) < 0.6
    weights = torch.rand(center.shape, generator=generator)
    grads = []
    for row_mask in (None, query_mask):
        table_grad = flat.clone().requires_grad_(True)
        center_grad = center.clone().requires_grad_(True)
        value = _fused(table_grad, kernel_rows, center_grad, row_mask)
        (value * weights).sum().backward()
        grads.append((value.detach(), table_grad.grad, center_grad.grad))
    (full, _, _), (masked, masked_table_grad, masked_center_grad) = grads
    assert torch.equal(masked[query_mask], full[query_mask])
    assert torch.equal(masked[~query_mask], torch.zeros_like(masked[~query_mask]))
    assert torch.equal(masked_center_grad[~query_mask], torch.zeros_like(masked_center_grad[~query_mask]))
    assert torch.equal(masked_center_grad[query_mask], weights[query_mask])
    # The table gradient is the one of the unmasked rows alone.
    table_grad = flat.clone().requires_grad_(True)
    kept = _fused(table_grad, kernel_rows[query_mask], center[query_mask])
    (kept * weights[query_mask]).sum().backward()
    torch.testing.assert_close(masked_table_grad, table_grad.grad, rtol=1e-6, atol=1e-6)


def test_fused_center_plus_max_passes_gradcheck_and_matches_autograd():
    from rs3l_coffea.nn.edge_conv import _running_max

    slots, flat, weights, generator = _small_gather_inputs(32)
    center = torch.randn(3 * 7, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
    query_mask = torch.rand(3 * 7, generator=generator) < 0.7
    inputs = (flat, center, bias)
    fused = torch.autograd.grad((_fused(flat, slots.t(), center, query_mask, bias) * weights).sum(), inputs)
    reference_value = (center + bias + _running_max(flat, slots)).masked_fill(~query_mask.unsqueeze(1), 0.0)
    reference = torch.autograd.grad((reference_value * weights).sum(), inputs)
    for got, want in zip(fused, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda f, c, b: _fused(f, slots.t(), c, query_mask, b), inputs)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_edge_conv_propagates_nan_in_the_neighbour_table(requires_grad):
    # The fused kernels assume no NaN in the neighbour table: such a table takes the torch path,
    # so a NaN particle gives the same NaN pattern as graph export's plain torch ops (which
    # torch.maximum propagates), and the two paths agree where there is no NaN.
    from rs3l_coffea.nn.edge_conv import DenseDynamicEdgeConv

    torch.manual_seed(41)
    conv = DenseDynamicEdgeConv(4, 6, k=3)
    x = torch.randn(2, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.set_grad_enabled(requires_grad):
        clean = conv(x, mask)
        conv.export_mode = True  # the plain torch ops of graph export
        clean_torch = conv(x, mask)
        conv.export_mode = False
        torch.testing.assert_close(clean, clean_torch, rtol=1e-6, atol=1e-6)
        poisoned = x.clone()
        poisoned[0, 2, 1] = float("nan")
        out = conv(poisoned, mask)
        conv.export_mode = True
        out_torch = conv(poisoned, mask)
        conv.export_mode = False
    assert torch.equal(torch.isnan(out), torch.isnan(out_torch))
    assert torch.isnan(out[0, 2]).all() and torch.isfinite(out[1]).all()
    torch.testing.assert_close(out.nan_to_num(), out_torch.nan_to_num(), rtol=1e-6, atol=1e-6)
    # The kernels are never handed a table with a NaN (whose max they would not propagate).
    from rs3l_coffea.nn.edge_conv import _fused_center_plus_max

    table = torch.randn(2, 5, 6, requires_grad=requires_grad)
    center = torch.randn(2, 5, 6)
    with torch.no_grad():
        table[1, 3, 0] = float("nan")
    with torch.set_grad_enabled(requires_grad):
        bias = torch.zeros(6)
        assert _fused_center_plus_max(torch.cat([center, table], dim=-1), bias, x, mask, 3, 5) is None
        clean = torch.cat([center, table.detach().nan_to_num()], dim=-1)
        assert _fused_center_plus_max(clean, bias, x, mask, 3, 5) is not None


def test_fused_kernels_refuse_what_they_cannot_index():
    from rs3l_coffea.nn.gather_max_kernels import FusedCenterPlusMax

    rows = torch.zeros(3, 2, dtype=torch.int64)
    mask = torch.ones(3, dtype=torch.bool)
    with pytest.raises(TypeError, match="int64 rows"):
        FusedCenterPlusMax.apply(torch.zeros(3, 4), torch.zeros(2), rows.int(), mask)
    with pytest.raises(TypeError, match="int64 rows"):
        FusedCenterPlusMax.apply(torch.zeros(3, 4), torch.zeros(2), rows[:2], mask)
    with pytest.raises(TypeError, match="float32/float64"):
        FusedCenterPlusMax.apply(torch.zeros(3, 4, dtype=torch.float16), torch.zeros(2, dtype=torch.float16), rows, mask)
    with pytest.raises(TypeError, match=r"shape \(\.\.\., 2C\)"):
        FusedCenterPlusMax.apply(torch.zeros(3, 5), torch.zeros(2), rows, mask)
    with pytest.raises(TypeError, match="bool query mask"):
        FusedCenterPlusMax.apply(torch.zeros(3, 4), torch.zeros(2), rows, mask.to(torch.uint8))
    with pytest.raises(TypeError, match="bias of shape"):
        FusedCenterPlusMax.apply(torch.zeros(3, 4), torch.zeros(3), rows, mask)


def test_training_takes_the_fused_kernels_and_inference_the_torch_ops(monkeypatch):
    # Training (a gradient is needed) runs the numba kernels; inference keeps torch's ops (no
    # LLVM JIT in the inference engine's process) and gives the same embedding.
    from rs3l_coffea.nn import edge_conv

    calls = []
    original = edge_conv._fused_center_plus_max
    monkeypatch.setattr(edge_conv, "_fused_center_plus_max", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(42)
    model = build_model(ModelConfig(backbone=DGCNNConfig(width=16, k=4, output_hidden=(8,), output_dim=4)))
    x, mask = ragged_batch([3, 7, 12], torch.Generator().manual_seed(43), dtype=torch.float32)
    with torch.no_grad():
        inferred = model(x, mask)[0]
    assert not calls
    trained = model(x, mask)[0]
    assert len(calls) == model.backbone.config.conv_layers
    torch.testing.assert_close(trained.detach(), inferred, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("dtype", "gather_budget"), [(torch.float32, 1 << 23), (torch.float64, 1 << 23),
                                                    (torch.float32, 40)])
def test_fused_edge_conv_equals_the_torch_ops_with_gradients(dtype, gather_budget):
    # One EdgeConv layer, fused CPU path (training) against graph export's plain torch ops, on
    # ragged jets (padded rows holding arbitrary finite values, a jet with fewer particles than
    # k, an empty jet), in one query chunk or in chunks of one row (gather_budget 40): same
    # output, padded rows exactly zero, same gradients for the input and the weights.
    from rs3l_coffea.nn.edge_conv import DenseDynamicEdgeConv

    torch.manual_seed(44)
    conv = DenseDynamicEdgeConv(6, 8, k=4, gather_budget=gather_budget).to(dtype)
    assert (conv._rows_per_chunk(5, 13) >= 13) == (gather_budget > 40)
    x, mask = ragged_batch([0, 2, 5, 9, 13], torch.Generator().manual_seed(45), dtype=dtype)
    x = x[..., :6]
    assert x[~mask].abs().sum() > 0  # padding is not zero: it must not matter
    weights = torch.randn(x.shape[0], x.shape[1], 8, generator=torch.Generator().manual_seed(46)).to(dtype)
    results = []
    for export_mode in (False, True):
        conv.export_mode = export_mode
        conv.zero_grad()
        x_grad = x.clone().requires_grad_(True)
        out = conv(x_grad, mask)
        (out * weights).sum().backward()
        results.append((out.detach(), x_grad.grad, [p.grad.clone() for p in conv.parameters()]))
    (fused, fused_x, fused_w), (plain, plain_x, plain_w) = results
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(fused, plain, **tolerance)
    assert torch.equal(fused[~mask], torch.zeros_like(fused[~mask]))
    torch.testing.assert_close(fused_x, plain_x, **tolerance)
    for got, want in zip(fused_w, plain_w, strict=True):
        torch.testing.assert_close(got, want, **tolerance)
