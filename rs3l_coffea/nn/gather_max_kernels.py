"""Fused CPU kernels of the EdgeConv gather-max for training (numba; compiled on first use, cached on disk).

The max-aggregated EdgeConv (``edge_conv``, algebraic path) needs, before its activation,

    out[r, c] = center[r, c] + max_t table[rows[r, t], c]

for every query row ``r`` and its ``k`` neighbour rows (``table`` = the neighbour projections
``W_b x_j``, ``center`` = ``(W_a − W_b) x_i + b``). In eager torch the max is one
``index_select`` and one ``maximum`` per neighbour slot, each a pass over an ``(R, C)`` slab in
memory, plus the bookkeeping of the winning row for the backward, then a concatenated sentinel
row and the addition as further passes; here one loop reads each neighbour row once (a jet's
table, ``P x C`` floats, stays in the first cache levels), keeps value and winner in place and
adds the center while the row is still in cache.

Contract, for ``table (N, C)`` and ``center (R, C)`` float32 or float64, ``rows (R, k)`` int64
with entries in ``[0, N)`` or ``-1`` for a missing neighbour:

* the table holds no NaN (the caller checks: ``edge_conv`` sends a table with a NaN to the
  torch path, whose ``torch.maximum`` propagates it; a NaN test inside the loop made it ~1.5x
  slower);
* the max equals ``torch.maximum`` folded over the present slots in order, bit for bit (a max is
  exact), and is ``-inf`` for a row without neighbours; the addition is one float add, as
  torch's ``center + max``;
* the winner of each output element is the row of the **first** slot holding the maximum
  (strict ``>``, as the comparison loop ``edge_conv._slot_gather_max``), none (-1) when no
  slot exceeds ``-inf``;
* the backward adds each output gradient to its winner's row (PyG's scatter-max convention:
  a tie sends the whole gradient to one row).

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
    table: np.ndarray, rows: np.ndarray, center: np.ndarray, out: np.ndarray, winner: np.ndarray
) -> None:
    n_out, k = rows.shape
    width = table.shape[1]
    for r in range(n_out):
        for c in range(width):
            out[r, c] = -np.inf
            winner[r, c] = -1
        for t in range(k):
            row = rows[r, t]
            if row < 0:
                continue
            for c in range(width):
                value = table[row, c]
                if value > out[r, c]:
                    out[r, c] = value
                    winner[r, c] = row
        for c in range(width):
            out[r, c] += center[r, c]


@_kernel
def _add_to_winners(grad: np.ndarray, winner: np.ndarray, grad_table: np.ndarray) -> None:
    n_out, width = grad.shape
    for r in range(n_out):
        for c in range(width):
            row = winner[r, c]
            if row >= 0:
                grad_table[row, c] += grad[r, c]


def _check(table: torch.Tensor, rows: torch.Tensor, center: torch.Tensor) -> None:
    if table.shape[0] > torch.iinfo(torch.int32).max:
        raise ValueError(f"fused gather-max indexes table rows with int32, got {table.shape[0]} rows")
    if table.device.type != "cpu" or table.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"fused gather-max needs a float32/float64 CPU table, got {table.dtype} on {table.device}")
    if rows.dtype != torch.int64 or rows.dim() != 2:
        raise TypeError(f"fused gather-max needs int64 rows of shape (R, k), got {rows.dtype} {tuple(rows.shape)}")
    if center.dtype != table.dtype or center.shape != (rows.shape[0], table.shape[1]):
        raise TypeError(f"fused gather-max needs a {table.dtype} center of shape {(rows.shape[0], table.shape[1])}, "
                        f"got {center.dtype} {tuple(center.shape)}")


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


class FusedCenterPlusMax(torch.autograd.Function):
    """``FusedCenterPlusMax.apply(table (N, C), rows (R, k), center (R, C)) -> (R, C)``.

    Backward: the output gradient is the center's, and is added to each element's winning
    table row (none for an element without a neighbour)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, table: torch.Tensor, rows: torch.Tensor, center: torch.Tensor
    ) -> torch.Tensor:
        _check(table, rows, center)
        out = torch.empty(center.shape, dtype=table.dtype)
        winner = torch.empty(center.shape, dtype=torch.int32)  # half the traffic of int64
        if rows.shape[0]:
            _center_plus_max_with_winner(_array(table), _array(rows), _array(center), out.numpy(), winner.numpy())
        ctx.save_for_backward(winner)
        ctx.n_table_rows = table.shape[0]  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        (winner,) = ctx.saved_tensors  # type: ignore[attr-defined]
        grad_out = grad_out.contiguous()
        grad_table = grad_out.new_zeros((ctx.n_table_rows, grad_out.shape[1]))  # type: ignore[attr-defined]
        if winner.shape[0]:
            _add_to_winners(grad_out.numpy(), winner.numpy(), grad_table.numpy())
        return grad_table, None, grad_out
