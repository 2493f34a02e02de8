"""Helpers for code that runs on eager awkward arrays and inside ``dask_awkward.map_partitions``.

During graph construction dask-awkward calls partition functions on *typetracers* (arrays with
a type but no data). Code that needs real numbers (fastjet, numpy, the model) cannot run on
them, so :func:`typetracer_result` runs the function on length-zero concrete stand-ins and
hands back a typetracer of the result's form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import awkward as ak


def is_dask(array: Any) -> bool:
    """Whether ``array`` is a dask-awkward collection (without importing dask_awkward)."""
    return type(array).__module__.startswith("dask_awkward")


def is_typetracer(*arrays: Any) -> bool:
    """Whether any of ``arrays`` (``None`` entries skipped) is a typetracer."""
    return any(a is not None and ak.backend(a) == "typetracer" for a in arrays)


def typetracer_result(function: Callable[..., Any], *arrays: Any) -> ak.Array:
    """``function(*arrays)`` computed on length-zero stand-ins, as a typetracer of its form.

    ``None`` arguments pass through unchanged (optional columns).
    """
    concrete = [None if a is None else ak.typetracer.length_zero_if_typetracer(a) for a in arrays]
    result = function(*concrete)
    return ak.Array(ak.to_layout(result).to_typetracer(forget_length=True))
