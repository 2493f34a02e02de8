"""Fused CPU kernels of the EdgeConv gather-max (numba; compiled on first use, cached on disk).

The max-aggregated EdgeConv needs ``out[r, c] = max_t table[rows[r, t], c]`` for every query row
``r`` and its ``k`` neighbour rows. In eager torch that is one ``index_select`` and one
``maximum`` per neighbour slot, each a pass over an ``(R, C)`` slab in memory, plus the
bookkeeping of the winning row for the backward; here one loop reads each neighbour row once
(a jet's table, ``P x C`` floats, stays in the first cache levels) and keeps value and winner
in place.

Contract, for ``table (N, C)`` float32 or float64 (C-contiguous), ``rows (R, k)`` int64 with
every entry in ``[0, N)`` and ``k >= 1``:

* the table holds no NaN (the caller checks: ``edge_conv`` sends a table with a NaN to the
  torch path, whose ``torch.maximum`` propagates it; a NaN test inside the loop made it ~1.5x
  slower);
* values equal ``torch.maximum`` folded over the slots in order, bit for bit (a max is exact;
  ``-inf`` sentinel rows never win against a finite value);
* the winner of each output element is the row of the **first** slot holding the maximum
  (strict ``>``, as the comparison loop ``edge_conv._slot_gather_max``);
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
def _max_with_winner(table: np.ndarray, rows: np.ndarray, out: np.ndarray, winner: np.ndarray) -> None:
    n_out, k = rows.shape
    width = table.shape[1]
    for r in range(n_out):
        first = rows[r, 0]
        for c in range(width):
            out[r, c] = table[first, c]
            winner[r, c] = first
        for t in range(1, k):
            row = rows[r, t]
            for c in range(width):
                value = table[row, c]
                if value > out[r, c]:
                    out[r, c] = value
                    winner[r, c] = row


@_kernel
def _max_only(table: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    n_out, k = rows.shape
    width = table.shape[1]
    for r in range(n_out):
        first = rows[r, 0]
        for c in range(width):
            out[r, c] = table[first, c]
        for t in range(1, k):
            row = rows[r, t]
            for c in range(width):
                value = table[row, c]
                if value > out[r, c]:
                    out[r, c] = value


@_kernel
def _add_to_winners(grad: np.ndarray, winner: np.ndarray, grad_table: np.ndarray) -> None:
    n_out, width = grad.shape
    for r in range(n_out):
        for c in range(width):
            grad_table[winner[r, c], c] += grad[r, c]


def _check(table: torch.Tensor, rows: torch.Tensor) -> None:
    if table.shape[0] > torch.iinfo(torch.int32).max:
        raise ValueError(f"fused gather-max indexes table rows with int32, got {table.shape[0]} rows")
    if table.device.type != "cpu" or table.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"fused gather-max needs a float32/float64 CPU table, got {table.dtype} on {table.device}")
    if rows.dtype != torch.int64 or rows.dim() != 2 or rows.shape[1] < 1:
        raise TypeError(f"fused gather-max needs int64 rows of shape (R, k >= 1), got {rows.dtype} {tuple(rows.shape)}")


def gather_max(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``(R, C)`` maxima of ``table (N, C)`` over ``rows (R, k)``, without autograd (inference)."""
    _check(table, rows)
    table = table.detach().contiguous()
    rows = rows.contiguous()
    out = torch.empty((rows.shape[0], table.shape[1]), dtype=table.dtype)
    if rows.shape[0]:
        _max_only(table.numpy(), rows.numpy(), out.numpy())
    return out


class FusedGatherMax(torch.autograd.Function):
    """``FusedGatherMax.apply(table (N, C), rows (R, k)) -> (R, C)`` with the single-scatter backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        _check(table, rows)
        values = table.detach().contiguous()
        rows = rows.contiguous()
        out = torch.empty((rows.shape[0], values.shape[1]), dtype=values.dtype)
        winner = torch.empty(out.shape, dtype=torch.int32)  # half the traffic of int64
        if rows.shape[0]:
            _max_with_winner(values.numpy(), rows.numpy(), out.numpy(), winner.numpy())
        ctx.save_for_backward(winner)
        ctx.n_table_rows = values.shape[0]  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (winner,) = ctx.saved_tensors  # type: ignore[attr-defined]
        grad_table = grad_out.new_zeros((ctx.n_table_rows, grad_out.shape[1]))  # type: ignore[attr-defined]
        if winner.shape[0]:
            _add_to_winners(grad_out.contiguous().numpy(), winner.numpy(), grad_table.numpy())
        return grad_table, None
