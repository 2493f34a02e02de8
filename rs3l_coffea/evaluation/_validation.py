"""Input checks shared by the evaluation modules.

Every check raises :class:`EvaluationInputError` naming the offending argument and value, so a
driver running a whole study can tell which table or plot received bad data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rs3l_coffea.errors import RS3LError


class EvaluationInputError(RS3LError, ValueError):
    """Arrays, histograms or tables handed to the evaluation stage are unusable."""


class EvaluationWarning(UserWarning):
    """A result is computed but may mislead (e.g. entries outside a histogram's range)."""


def finite_1d(values: ArrayLike, name: str, *, allow_empty: bool = False) -> NDArray[np.float64]:
    """Return ``values`` as a float64 1-D array, refusing NaN/inf and (by default) emptiness."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise EvaluationInputError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not allow_empty and array.size == 0:
        raise EvaluationInputError(f"{name} is empty")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EvaluationInputError(
            f"{name} has {int(bad.sum())} non-finite entries (first at index {first}: {array[first]})"
        )
    return array


def optional_weights(weights: ArrayLike | None, size: int, name: str) -> NDArray[np.float64] | None:
    """Validate per-entry weights: finite, non-negative, same length as the data, positive sum."""
    if weights is None:
        return None
    array = finite_1d(weights, name)
    if array.size != size:
        raise EvaluationInputError(f"{name} has {array.size} entries but the data has {size}")
    if (array < 0).any():
        raise EvaluationInputError(f"{name} has negative entries (min {array.min()})")
    if array.sum() <= 0:
        raise EvaluationInputError(f"{name} sums to zero")
    return array


def finite_2d(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``values`` as a finite float64 matrix ``[n_samples, n_dims]``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise EvaluationInputError(
            f"{name} must be a non-empty [n, d] matrix, got shape {array.shape}"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise EvaluationInputError(
            f"{name} has {int(bad.sum())} non-finite entries (first in row {row})"
        )
    return array


def matching_labels(labels: ArrayLike, size: int, name: str) -> NDArray[np.int64]:
    """Integer labels of length ``size``."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size != size:
        raise EvaluationInputError(
            f"{name} must be 1-D with {size} entries (one per sample), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if (
            np.issubdtype(array.dtype, np.floating)
            and np.all(np.isfinite(array))
            and np.all(array == np.round(array))
        ):
            return array.astype(np.int64)
        raise EvaluationInputError(
            f"{name} must hold integer class labels, got dtype {array.dtype}"
        )
    return array.astype(np.int64)


def labels_in(labels: NDArray[np.int64], wanted: int | Sequence[int]) -> NDArray[np.bool_]:
    """Mask of entries whose label is ``wanted`` (one label or several)."""
    return np.isin(labels, np.atleast_1d(np.asarray(wanted, dtype=np.int64)))
