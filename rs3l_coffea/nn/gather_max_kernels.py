"""Fused CPU kernels of the EdgeConv gather-max for training (numba; compiled on first use, cached on disk).

The max-aggregated EdgeConv (``edge_conv``, algebraic path) needs, before its activation,

    out[r, c] = (center[r, c] + bias[c]) + max_t table[rows[r, t], c]

for every query row ``r`` and its ``k`` neighbour rows (``table`` = the neighbour projections
``W_b x_j``, ``center`` = ``(W_a − W_b) x_i``). In eager torch the max is one ``index_select``
and one ``maximum`` per neighbour slot, each a pass over an ``(R, C)`` slab in memory, plus the
bookkeeping of the winning row for the backward, then a concatenated sentinel row and the
addition as further passes; here one loop reads each neighbour row once (a jet's table,
``P x C`` floats, stays in the first cache levels), keeps value and winner in place and adds
the center while the row is still in cache.

Contract, for ``projections (..., 2C) = [center, table]`` float32 or float64 with ``N`` rows
(the product of the leading axes; both projections of one matmul, so that the backward is one
gradient of that shape: one matmul for the input's gradient, no sum of two), the center's
``bias (C,)`` (added here, which spares the matmul a pass that copies it into its output),
``rows (N, k)`` int64 with entries in ``[0, N)`` or ``-1`` for a missing neighbour and
``query_mask (...)`` bool (the leading axes):

* the table holds no NaN (the caller checks: ``edge_conv`` sends a table with a NaN to the
  torch path, whose ``torch.maximum`` propagates it; a NaN test inside the loop made it ~1.5x
  slower);
* a masked-out query row (a padded particle) gives exactly 0, is not computed, and passes no
  gradient to the table, its center row or the bias, so that a non-decreasing activation ``f``
  with ``f(0) = 0`` (ELU) leaves padding at zero without a masking pass forward or backward;
* for the other rows the max equals ``torch.maximum`` folded over the present slots in order,
  bit for bit (a max is exact), and is ``-inf`` for a row without neighbours; then two float
  adds, ``(center + bias) + max``;
* the winner of each output element is the row of the **first** slot holding the maximum
  (strict ``>``, as the comparison loop ``edge_conv._slot_gather_max``), none (-1) when no
  slot exceeds ``-inf``;
* the backward passes each output gradient to its center element unchanged, sums it over rows
  into the bias gradient (in float64) and adds it to its winner's table row (PyG's scatter-max
  convention: a tie sends the whole gradient to one row): one sweep writes every element of
  the gradient (the table half zero), a second scatters.

numba is a dependency of coffea, hence always installed with rs3l-coffea; ``cache=True`` keeps
the compiled kernels (~2 s per dtype) in numba's cache directory across processes.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

_kernel = numba.njit(cache=True, nogil=True, boundscheck=False)


@_kernel
def _center_plus_max_with_winner(
    projections: np.ndarray, bias: np.ndarray, rows: np.ndarray, query_mask: np.ndarray, out: np.ndarray,
    winner: np.ndarray,
) -> None:
    n_out, k = rows.shape
    width = out.shape[1]
    for r in range(n_out):
        if not query_mask[r]:
            for c in range(width):
                out[r, c] = 0.0
                winner[r, c] = -1
            continue
        for c in range(width):
            out[r, c] = -np.inf
            winner[r, c] = -1
        for t in range(k):
            row = rows[r, t]
            if row < 0:
                continue
            for c in range(width):
                value = projections[row, width + c]
                if value > out[r, c]:
                    out[r, c] = value
                    winner[r, c] = row
        for c in range(width):
            out[r, c] += projections[r, c] + bias[c]


@_kernel
def _projection_gradients(
    grad: np.ndarray, winner: np.ndarray, query_mask: np.ndarray, grad_projections: np.ndarray,
    grad_bias: np.ndarray,
) -> None:
    # One sweep writes every element of the (uninitialised) gradient: the center half, and
    # zeros on the table half, which the second sweep then scatters into.
    n_out, width = grad.shape
    for c in range(width):
        grad_bias[c] = 0.0
    for r in range(n_out):
        if query_mask[r]:
            for c in range(width):
                value = grad[r, c]
                grad_projections[r, c] = value
                grad_bias[c] += value
        else:
            for c in range(width):
                grad_projections[r, c] = 0.0
        for c in range(width):
            grad_projections[r, width + c] = 0.0
    for r in range(n_out):
        if not query_mask[r]:
            continue
        for c in range(width):
            row = winner[r, c]
            if row >= 0:
                grad_projections[row, width + c] += grad[r, c]


def _check(projections: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor, query_mask: torch.Tensor) -> None:
    n_rows = projections.shape[:-1].numel()
    if n_rows > torch.iinfo(torch.int32).max:
        raise ValueError(f"fused gather-max indexes rows with int32, got {n_rows} rows")
    if projections.device.type != "cpu" or projections.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"fused gather-max needs float32/float64 CPU projections, got {projections.dtype} on {projections.device}"
        )
    if projections.dim() < 2 or projections.shape[-1] % 2:
        raise TypeError(f"fused gather-max needs projections of shape (..., 2C), got {tuple(projections.shape)}")
    if bias.dtype != projections.dtype or bias.shape != (projections.shape[-1] // 2,):
        raise TypeError(f"fused gather-max needs a {projections.dtype} bias of shape ({projections.shape[-1] // 2},), "
                        f"got {bias.dtype} {tuple(bias.shape)}")
    if rows.dtype != torch.int64 or rows.dim() != 2 or rows.shape[0] != n_rows:
        raise TypeError(f"fused gather-max needs int64 rows of shape ({n_rows}, k), got {rows.dtype} {tuple(rows.shape)}")
    if query_mask.dtype != torch.bool or query_mask.shape != projections.shape[:-1]:
        raise TypeError(f"fused gather-max needs a bool query mask of shape {tuple(projections.shape[:-1])}, "
                        f"got {query_mask.dtype} {tuple(query_mask.shape)}")


def _matrix(tensor: torch.Tensor) -> np.ndarray:
    """``(rows, last axis)`` view of the tensor's memory (a copy only when it is not contiguous)."""
    array = tensor.detach().contiguous().numpy()
    return array.reshape(-1, array.shape[-1])


def _vector(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy().reshape(-1)


class FusedCenterPlusMax(torch.autograd.Function):
    """``FusedCenterPlusMax.apply(projections (..., 2C), bias (C,), rows (N, k), query_mask (...)) -> (..., C)``.

    ``projections = [center, table]`` along the last axis (one matmul's output without its
    bias, read in place); ``N`` is the number of rows (the product of the leading axes, which
    are kept, so that the output is no view: an in-place activation on it needs no copy). Row
    ``r`` of the output is ``center[r] + bias + max_t table[rows[r, t]]``. Backward: one
    gradient of the projections' shape, the output gradient on the center half (zero on
    masked-out rows) and added to each element's winning row on the table half, and the bias
    gradient (the sum over unmasked rows, accumulated in float64)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, projections: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor,
        query_mask: torch.Tensor,
    ) -> torch.Tensor:
        _check(projections, bias, rows, query_mask)
        shape = (*projections.shape[:-1], projections.shape[-1] // 2)
        out = torch.empty(shape, dtype=projections.dtype)
        winner = torch.empty(shape, dtype=torch.int32)  # half the traffic of int64
        query_mask = query_mask.contiguous()
        if rows.shape[0]:
            _center_plus_max_with_winner(_matrix(projections), _vector(bias), _matrix(rows), _vector(query_mask),
                                         _matrix(out), _matrix(winner))
        ctx.save_for_backward(winner, query_mask)
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        winner, query_mask = ctx.saved_tensors  # type: ignore[attr-defined]
        grad_out = grad_out.contiguous()
        grad_projections = grad_out.new_empty((*grad_out.shape[:-1], 2 * grad_out.shape[-1]))
        grad_bias = torch.zeros(grad_out.shape[-1], dtype=torch.float64)
        if winner.numel():
            _projection_gradients(_matrix(grad_out), _matrix(winner), _vector(query_mask), _matrix(grad_projections),
                                  grad_bias.numpy())
        return grad_projections, grad_bias.to(grad_out.dtype), None, None
