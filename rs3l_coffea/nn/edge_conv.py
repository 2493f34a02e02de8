"""Dense, padded dynamic EdgeConv (the PyG ``DynamicEdgeConv`` of the published RS3L code).

Per layer: kNN in the current feature space among the real particles of each jet (the particle
itself included, as torch_cluster's ``knn`` does; fewer neighbours when a jet has fewer than
``k`` particles), message ``act(W [x_i, x_j − x_i] + b)``, aggregation over the neighbours.

Two numerically equivalent paths:

* ``algebraic`` (max aggregation, default): ``W [x_i, x_j − x_i] = (W_a − W_b) x_i + W_b x_j``,
  and a monotonic activation commutes with max, so
  ``max_j act(...) = act((W_a − W_b) x_i + b + max_j W_b x_j)``. Cost: two per-node projections,
  kNN, a gather-max of width ``out``; no edge tensor of width ``2·in`` is ever built.
* ``general``: explicit edge messages through the message MLP (max or mean aggregation).

Both process query rows in chunks of at most ``gather_budget`` gathered elements, so memory is
bounded for any batch; ``gather_budget = 0`` disables chunking (used for graph export, whose
shapes must not depend on a Python loop over a symbolic size).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch
from torch import nn


def pairwise_sq_distances(query: torch.Tensor, points: torch.Tensor, broadcast: bool = False) -> torch.Tensor:
    """Squared Euclidean distances ``(B, R, P)`` between ``query (B, R, C)`` and ``points (B, P, C)``.

    float64 inputs: exact differences (``cdist`` without the matmul shortcut, or an explicit
    difference tensor with ``broadcast=True``), as the PyG reference. Other dtypes: the
    ``|a|² + |b|² − 2 a·b`` expansion evaluated in float64. Its cancellation error,
    ~1e-16·|a|², lies far below the float32 rounding of exact float32 differences (~6e-8·d),
    so the neighbour sets equal those of exact differences except at ties closer than the
    float32 rounding of the distances themselves; it measured ~4× faster than the exact
    ``cdist`` kernel here. (The float32 expansion is what flips near-tied neighbours.) On 400
    random jets with the published weights, float32 embeddings from this path and from exact
    float32 differences both agreed with the float64 reference to 2.2e-6 relative.
    """
    if query.dtype == torch.float64:
        if broadcast:
            return (query.unsqueeze(2) - points.unsqueeze(1)).square().sum(dim=-1)
        return torch.cdist(query, points, compute_mode="donot_use_mm_for_euclid_dist").square()
    q = query.double()
    p = points.double()
    q_sq = (q * q).sum(dim=-1).unsqueeze(2)
    p_sq = (p * p).sum(dim=-1).unsqueeze(1)
    return torch.baddbmm(q_sq + p_sq, q, p.transpose(1, 2), alpha=-2.0)


def _neighbour_ranking_key(query: torch.Tensor, points: torch.Tensor, point_mask: torch.Tensor) -> torch.Tensor:
    """``|p|² − 2 q·p`` in float64, ``inf`` for padded points: orders each query row's points as
    the squared distances of :func:`pairwise_sq_distances` do (``|q|²`` is constant along a row,
    so dropping it changes no ranking), with one ``baddbmm`` and no masking pass over ``(B, R, P)``."""
    p = points.detach().double()
    q = p if query is points else query.detach().double()
    # The norm's one reduction pass, not a (B, P, C) product tensor and a sum (~3x faster).
    p_sq = torch.linalg.vector_norm(p, dim=-1).square().masked_fill(~point_mask, float("inf")).unsqueeze(1)
    return torch.baddbmm(p_sq, q, p.transpose(1, 2), alpha=-2.0)


def dense_knn(
    query: torch.Tensor, points: torch.Tensor, point_mask: torch.Tensor, k: int, export_mode: bool = False
) -> torch.Tensor:
    """Indices ``(B, R, k)`` of the ``k`` nearest real points of each query row.

    Distances as in :func:`pairwise_sq_distances` (no float32 ``|a|²+|b|²−2ab`` shortcut,
    whose rounding flips near-tied k-th neighbours). Slots without a real neighbour (jets with
    fewer than ``k`` particles) get the sentinel index ``P`` (= ``points.shape[1]``).
    ``export_mode``: graph-export friendly (no cdist; always the same op sequence whatever P).
    """
    found, index = _nearest_slots(query, points, point_mask, k, export_mode)
    return index.masked_fill(~found, points.shape[1])


def _nearest_slots(
    query: torch.Tensor, points: torch.Tensor, point_mask: torch.Tensor, k: int, export_mode: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(found, index)``, both ``(B, R, k)``: :func:`dense_knn`'s selection before the sentinel,
    ``found`` False where a slot holds no real point (an infinite distance; its index is then
    meaningless)."""
    n_points = points.shape[1]
    if export_mode or query.dtype == torch.float64:
        dist = pairwise_sq_distances(query.detach(), points.detach(), export_mode)
        dist = dist.masked_fill(~point_mask.unsqueeze(1), float("inf"))
    else:
        dist = _neighbour_ranking_key(query, points, point_mask)
    if export_mode or n_points < k:
        # Pad with k infinite columns so topk always has k candidates, also when P < k.
        filler = torch.full(
            (dist.shape[0], dist.shape[1], k), float("inf"), dtype=dist.dtype, device=dist.device
        )
        dist = torch.cat([dist, filler], dim=2)
    nearest, index = torch.topk(dist, k, dim=2, largest=False, sorted=False)
    return ~torch.isinf(nearest), index


def _neighbour_slots(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``table.reshape(B*N, C)`` to gather, one ``(B*R,)`` slab per neighbour slot: ``(k, B*R)``."""
    batch, n_rows, _ = table.shape
    offsets = torch.arange(batch, device=index.device).view(batch, 1, 1) * n_rows
    return (index + offsets).permute(2, 0, 1).reshape(index.shape[2], -1)


def _running_max(flat: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    best = flat.index_select(0, slots[0])
    for t in range(1, slots.shape[0]):
        best = torch.maximum(best, flat.index_select(0, slots[t]))
    return best


# float32 values widened to float64 leave the low 29 mantissa bits zero: the tagged gather-max
# stores the table row there, so one running maximum yields the value and the winning row.
_ROW_BITS = 29
_ROW_MASK = (1 << _ROW_BITS) - 1
# The largest finite float64 magnitude whose low 29 bits are zero; beyond float32's range, so it
# narrows back to ±inf (widened ±inf itself would turn into NaN once the row bits are set).
_TAG_LIMIT = struct.unpack("<d", struct.pack("<q", 0x7FEFFFFFE0000000))[0]
# Query rows per slab of the tagged running maximum: two float64 (rows, C) slabs stay in L2.
_TAG_CHUNK_ROWS = 256


def _tagged_gather_max(flat: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_t flat[slots[t]]`` (float32, exact) and the table row that holds each maximum.

    Each float32 value is widened to float64 (exact) and the index of its table row is written
    into the 29 mantissa bits that widening leaves zero. The tag changes a value by less than
    one float32 ulp, so the float64 maximum picks the same value as the float32 maximum and
    carries its row along; ties between equal values go to the larger row (positive values)
    or the smaller row (negative values) instead of the first neighbour slot. One
    ``index_select`` + ``maximum`` per neighbour slot; no comparison masks (whose kernels cost
    several times a ``maximum`` on CPU).
    """
    tagged = flat.to(torch.float64).clamp_(-_TAG_LIMIT, _TAG_LIMIT)
    rows = torch.arange(flat.shape[0], device=flat.device).unsqueeze(1)
    tagged.view(torch.int64).bitwise_or_(rows)
    n_out = slots.shape[1]
    best = torch.empty((n_out, flat.shape[1]), dtype=torch.float64, device=flat.device)
    for start in range(0, n_out, _TAG_CHUNK_ROWS):
        # Contiguous per-slot index rows: index_select copies a strided index on every call.
        neighbour_rows = slots[:, start : start + _TAG_CHUNK_ROWS].contiguous().unbind(0)
        out = best[start : start + neighbour_rows[0].shape[0]]
        torch.index_select(tagged, 0, neighbour_rows[0], out=out)
        candidate = torch.empty_like(out)
        for rows_t in neighbour_rows[1:]:
            torch.index_select(tagged, 0, rows_t, out=candidate)
            torch.maximum(out, candidate, out=out)
    bits = best.view(torch.int64)
    row_mask = torch.tensor(_ROW_MASK, dtype=torch.int64, device=flat.device)
    winner_rows = torch.bitwise_and(bits, row_mask)
    value = bits.bitwise_and_(torch.bitwise_not(row_mask)).view(torch.float64).to(torch.float32)
    return value, winner_rows


def _slot_gather_max(flat: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Any dtype: running maximum that tracks the winning slot (ties to the first slot)."""
    best = flat.index_select(0, slots[0])
    winner = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for t in range(1, slots.shape[0]):
        candidate = flat.index_select(0, slots[t])
        better = candidate > best
        best = torch.where(better, candidate, best)
        winner.masked_fill_(better, t)
    # Table row that won each output element: slots[winner[m, c], m].
    return best, slots.t().gather(1, winner.long())


class _GatherMaxFunction(torch.autograd.Function):
    """Running gather-max whose backward is one scatter into the winning rows.

    Autograd through :func:`_running_max` keeps k ``maximum`` nodes and k ``index_select``
    nodes, and their backward (tie masks, k scatters into full-size zero tables) cost ~5× the
    forward on CPU. Here the forward remembers which table row won each output element
    (float32: :func:`_tagged_gather_max`; other dtypes: :func:`_slot_gather_max`) and the
    backward scatters the gradient once. The result equals :func:`_running_max`; only
    tie-breaking of the gradient differs (all to one neighbour instead of split), as in PyG's
    scatter-max.
    """

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        if flat.dtype == torch.float32 and flat.shape[0] <= _ROW_MASK:
            best, rows = _tagged_gather_max(flat, slots)
        else:
            best, rows = _slot_gather_max(flat, slots)
        ctx.save_for_backward(rows)
        ctx.n_table_rows = flat.shape[0]
        return best

    @staticmethod
    def backward(ctx: Any, grad_best: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        grad_flat = grad_best.new_zeros((ctx.n_table_rows, grad_best.shape[1]))
        grad_flat.scatter_add_(0, rows, grad_best)
        return grad_flat, None


def _fused_kernels_apply(x: torch.Tensor, needs_grad: bool) -> bool:
    """The numba kernels serve training (a gradient is needed) on float32/float64 CPU tensors.

    Inference keeps the torch ops: the kernels gain little there with several torch threads
    (they run on one), and loading them starts LLVM's JIT, ~180 MB of RSS once per process,
    which the bounded-memory inference engine should not pay. Graph export keeps torch ops too."""
    return (
        torch.is_grad_enabled()
        and needs_grad
        and x.device.type == "cpu"
        and (x.dtype == torch.float32 or x.dtype == torch.float64)
    )


@torch.jit.unused
def _fused_center_plus_max(
    projections: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, k: int, rows: int
) -> torch.Tensor | None:
    """``center + bias + max_j neighbour[j]`` over each row's kNN (``gather_max_kernels``),
    exactly 0 on padded rows, for ``projections (B, P, 2C)`` = ``[center, neighbour]``;
    ``None`` when the projections hold a NaN (the kernels assume none; the torch path
    propagates it)."""
    from rs3l_coffea.nn.gather_max_kernels import FusedCenterPlusMax

    batch, n_particles, _ = projections.shape
    # A NaN makes the sum NaN (so does +inf beside -inf: that rare table takes the torch path too),
    # and one sum is several times cheaper than isnan().any().
    if math.isnan(float(projections.detach().sum())):
        return None
    offsets = torch.arange(batch, device=x.device).view(batch, 1, 1) * n_particles
    chunks: list[torch.Tensor] = []
    for start in range(0, n_particles, rows):
        # The whole x when one chunk covers it: the ranking key then converts x to float64 once.
        query = x if rows >= n_particles else x[:, start : start + rows]
        found, index = _nearest_slots(query, x, mask, k)
        chunks.append(torch.where(found, index + offsets, -1))  # -1: no neighbour, the kernels skip it
    table_rows = (chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)).reshape(-1, k)
    return FusedCenterPlusMax.apply(projections, bias, table_rows, mask)


@torch.jit.unused
def _gather_max_autograd(flat: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    return _GatherMaxFunction.apply(flat, slots)


def _gather_max(table: torch.Tensor, index: torch.Tensor, custom_backward: bool = True) -> torch.Tensor:
    """``out[b, r] = max_t table[b, index[b, r, t]]`` for ``table (B, N, C)``, ``index (B, R, k)``.

    A running maximum over the k neighbour slots: each step gathers one ``(B, R, C)`` slab,
    so the ``(B, R, k, C)`` neighbour tensor is never built (several times faster on CPU,
    where that tensor does not fit in cache). When gradients are needed the same loop runs
    inside :class:`_GatherMaxFunction`, whose backward is a single scatter; graph export passes
    ``custom_backward=False`` (the tagged float64 bit operations have no ONNX form).
    """
    batch, n_rows, width = table.shape
    flat = table.reshape(batch * n_rows, width)
    slots = _neighbour_slots(table, index)
    if (
        custom_backward
        and not torch.jit.is_scripting()
        and torch.is_grad_enabled()
        and flat.requires_grad
        and slots.shape[0] < 256
    ):
        best = _gather_max_autograd(flat, slots)
    else:
        best = _running_max(flat, slots)
    return best.view(index.shape[0], index.shape[1], width)


def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table (B, N, C)``, ``index (B, R, k)`` → ``(B, R, k, C)`` with ``out[b,r,t] = table[b, index[b,r,t]]``."""
    batch, n_rows, width = table.shape
    offsets = torch.arange(batch, device=index.device).view(batch, 1, 1) * n_rows
    flat = table.reshape(batch * n_rows, width).index_select(0, (index + offsets).reshape(-1))
    return flat.view(index.shape[0], index.shape[1], index.shape[2], width)


class DenseDynamicEdgeConv(nn.Module):
    """EdgeConv with the graph rebuilt from the input features (dense ``(B, P, C)`` layout).

    ``forward(x, mask)``: ``x (B, P, in_dim)``, ``mask (B, P)`` bool (True = real particle).
    Padded rows of ``x`` may hold any finite values: they are never neighbours, and their own
    outputs are discarded. Returns ``(B, P, out_dim)``, padded rows zero. The parameters
    live in ``message = Sequential(Linear(2·in_dim, out_dim), ELU())`` (PyG's ``nn`` argument).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        k: int,
        aggregation: str = "max",
        edge_path: str = "algebraic",
        gather_budget: int = 1 << 23,
    ) -> None:
        super().__init__()
        if aggregation not in ("max", "mean"):
            raise ValueError(f"aggregation must be 'max' or 'mean', got {aggregation!r}")
        if edge_path not in ("algebraic", "general"):
            raise ValueError(f"edge_path must be 'algebraic' or 'general', got {edge_path!r}")
        if edge_path == "algebraic" and aggregation != "max":
            raise ValueError("the algebraic edge path needs max aggregation")
        self.message = nn.Sequential(nn.Linear(2 * in_dim, out_dim), nn.ELU())
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.k = k
        self.use_max = aggregation == "max"
        self.algebraic = edge_path == "algebraic"
        self.gather_budget = gather_budget
        # Set by the ONNX export: no torch.cdist (not an ONNX operator), no shape-dependent branches.
        self.export_mode = False

    def _rows_per_chunk(self, batch: int, n_particles: int) -> int:
        """Query rows per chunk so that the per-chunk temporaries stay near ``gather_budget``."""
        if self.gather_budget <= 0:
            return n_particles
        if self.algebraic:  # distances (R, P + k) and one gathered (R, out) slab per row
            per_row = batch * max(n_particles + self.k, self.out_dim)
        else:  # explicit edge tensor (R, k, 2·in) and messages (R, k, out)
            per_row = batch * max(n_particles + self.k, self.k * (2 * self.in_dim + self.out_dim))
        return max(1, self.gather_budget // per_row)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n_particles = x.shape[1]
        rows = self._rows_per_chunk(x.shape[0], n_particles)
        if self.algebraic:
            out, padding_is_zero = self._forward_algebraic(x, mask, rows)
            if padding_is_zero:
                return out
        elif rows >= n_particles:
            out = self._aggregate_general(x, x, dense_knn(x, x, mask, self.k, self.export_mode))
        else:
            chunks: list[torch.Tensor] = []
            for start in range(0, n_particles, rows):
                query = x[:, start : start + rows]
                index = dense_knn(query, x, mask, self.k, self.export_mode)
                chunks.append(self._aggregate_general(x, query, index))
            out = torch.cat(chunks, dim=1)
        if self.algebraic:
            # In place: the activation's own output, which its backward does not need (ELU keeps
            # its input); the general path's max/mean output is kept by autograd, so copy there.
            return out.masked_fill_(~mask.unsqueeze(-1), 0.0)
        return out.masked_fill(~mask.unsqueeze(-1), 0.0)

    def _forward_algebraic(self, x: torch.Tensor, mask: torch.Tensor, rows: int) -> tuple[torch.Tensor, bool]:
        """``(out, padding_is_zero)``: the fused CPU kernels give exact zeros on padded rows
        (ELU(0) = 0), which spares the caller a masking pass forward and backward."""
        linear = self.message[0]  # nn.Linear, or LoRALinear (same weight and bias) before merging
        # torch types a submodule's attributes as ``Tensor | Module``; annotate states the types
        # (for TorchScript as well as for the type checker).
        weight = torch.jit.annotate(torch.Tensor, linear.weight)
        bias = torch.jit.annotate(torch.Tensor | None, linear.bias)
        weight_center = weight[:, : self.in_dim]
        weight_neighbour = weight[:, self.in_dim :]
        # Per-node projections, once per layer: W [x_i, x_j − x_i] = (W_a − W_b) x_i + W_b x_j.
        weight_center = weight_center - weight_neighbour
        needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        if not self.export_mode and not torch.jit.is_scripting() and _fused_kernels_apply(x, needs_grad):
            # Both projections in one matmul (one backward matmul for x, no gradient sum), read
            # in place by the kernels.
            projections = nn.functional.linear(x, torch.cat([weight_center, weight_neighbour]))
            center_bias = bias if bias is not None else projections.new_zeros(self.out_dim)
            fused = _fused_center_plus_max(projections, center_bias, x, mask, self.k, rows)
            if fused is not None:
                # ELU commutes with the max over neighbours (it is non-decreasing). In place: the
                # kernels' output is not kept for their backward, and ELU's backward then works
                # from its output (no exp). The message's activation is nn.ELU() (alpha 1).
                return nn.functional.elu(fused, inplace=True), True
            center, neighbour = projections.split(self.out_dim, dim=-1)
            center = center + center_bias
        else:
            center = nn.functional.linear(x, weight_center, bias)
            neighbour = nn.functional.linear(x, weight_neighbour)
        # Sentinel row P holds -inf: a missing neighbour never wins the max.
        sentinel = torch.full(
            (x.shape[0], 1, self.out_dim), float("-inf"), dtype=neighbour.dtype, device=x.device
        )
        table = torch.cat([neighbour, sentinel], dim=1)
        n_particles = x.shape[1]
        if rows >= n_particles:
            best = _gather_max(table, dense_knn(x, x, mask, self.k, self.export_mode), not self.export_mode)
        else:
            chunks: list[torch.Tensor] = []
            for start in range(0, n_particles, rows):
                index = dense_knn(x[:, start : start + rows], x, mask, self.k, self.export_mode)
                chunks.append(_gather_max(table, index, not self.export_mode))
            best = torch.cat(chunks, dim=1)
        # ELU (any non-decreasing activation) commutes with the max over neighbours.
        return self.message[1](center + best), False

    def _aggregate_general(self, x: torch.Tensor, query: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        zero_row = torch.zeros((x.shape[0], 1, x.shape[2]), dtype=x.dtype, device=x.device)
        neighbours = _gather_rows(torch.cat([x, zero_row], dim=1), index)
        center = query.unsqueeze(2).expand_as(neighbours)
        messages = self.message(torch.cat([center, neighbours - center], dim=-1))
        valid = (index < x.shape[1]).unsqueeze(-1)
        if self.use_max:
            fill = torch.full_like(messages, float("-inf"))
            return torch.where(valid, messages, fill).amax(dim=2)
        total = torch.where(valid, messages, torch.zeros_like(messages)).sum(dim=2)
        count = valid.sum(dim=2).clamp(min=1).to(messages.dtype)
        return total / count
