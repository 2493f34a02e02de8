"""Wasserstein-1 distances between the nominal sample and each re-simulated variant.

RS3L asks how much a jet representation moves when only the simulation changes (shower seed,
FSR scale, shower model, hadronization). The 1-D Wasserstein distance (earth mover's distance)
answers this per embedding dimension, head score or substructure observable, in the units of
that quantity. Two flavours are provided:

* unbinned, from per-jet arrays, via :func:`scipy.stats.wasserstein_distance`;
* binned, from ``hist`` histograms: the W1 of two distributions whose bin contents sit at the
  bin centres (``scipy.stats.wasserstein_distance`` with the bin contents as weights, i.e.
  ``Σ_i |CDF_a(i) − CDF_b(i)| · Δx_i`` over the in-range bins); for uniform binning a binned W1
  differs from the unbinned one by at most one bin width. Under- and overflow are ignored (their
  position is unknown); put the histogram range around the data.

Statistical floor and uncertainty (:func:`wasserstein_with_floor`): two finite samples of the
*same* distribution have a W1 above zero; a measured W1 means something only above that floor.
The floor is estimated from the nominal sample alone: it is split at random into two halves
``n_resamples`` times, and the mean W1 between the halves is scaled to the sizes of the actual
comparison by ``sqrt((1/n_a + 1/n_b) / (1/h_1 + 1/h_2))`` (the empirical-CDF fluctuation that W1
integrates scales as ``sqrt(1/n_a + 1/n_b)``; effective sizes for weighted samples). The spread of
those half-split W1s, scaled the same way, is the floor's spread. The uncertainty of the measured
W1 is the standard deviation over ``n_resamples`` bootstrap resamples of both samples. A shift
is established when ``W1 − floor`` exceeds a few ``sqrt(uncertainty² + floor_spread²)``
(:attr:`W1Estimate.excess_significance`).

Permutation test (:func:`wasserstein_permutation_test`): a different question, *is this
variant distinguishable from the nominal at these sample sizes at all?* The pooled jets of both
samples are split at random into groups of the two sizes (``scipy.stats.permutation_test``,
exact over all splits when there are fewer than ``n_permutations``); the W1s of those splits are
the null distribution. It gives the p-value of the observed W1 and the median and 95% quantile
of the null W1 (the demo's "floor"). Use :func:`wasserstein_with_floor` to quote *how large* a
shift is with an uncertainty and to compare W1s across models; use the permutation p-value to
flag a single comparison as beyond statistical noise. docs/evaluation.md says the same.

A *table* is a plain nested dict ``{variant: {quantity: W1}}`` that the report writer and plot
code consume directly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import wasserstein_distance

from rs3l_coffea.evaluation._validation import (
    EvaluationInputError,
    EvaluationWarning,
    finite_1d,
    optional_weights,
)

WassersteinTable = dict[str, dict[str, float]]
"""``{variant: {quantity: W1 to nominal}}``; the nominal variant itself is not a row."""


def wasserstein_1d(
    a: ArrayLike,
    b: ArrayLike,
    a_weights: ArrayLike | None = None,
    b_weights: ArrayLike | None = None,
) -> float:
    """Unbinned 1-D Wasserstein-1 distance between samples ``a`` and ``b`` (optional weights)."""
    a_values = finite_1d(a, "a")
    b_values = finite_1d(b, "b")
    a_w = optional_weights(a_weights, a_values.size, "a_weights")
    b_w = optional_weights(b_weights, b_values.size, "b_weights")
    return float(wasserstein_distance(a_values, b_values, a_w, b_w))


def wasserstein_binned(counts_a: ArrayLike, counts_b: ArrayLike, edges: ArrayLike) -> float:
    """W1 between two histograms with common bin ``edges`` from their normalised CDFs.

    Counts may be weighted sums but must be non-negative; each histogram must have a positive
    total. See the module docstring for the exact definition.
    """
    bin_edges = finite_1d(edges, "edges")
    a = finite_1d(counts_a, "counts_a")
    b = finite_1d(counts_b, "counts_b")
    if bin_edges.size < 2 or np.any(np.diff(bin_edges) <= 0):
        raise EvaluationInputError("edges must be strictly increasing with at least two entries")
    n_bins = bin_edges.size - 1
    for name, counts in (("counts_a", a), ("counts_b", b)):
        if counts.size != n_bins:
            raise EvaluationInputError(f"{name} has {counts.size} bins but edges define {n_bins}")
        if (counts < 0).any():
            raise EvaluationInputError(f"{name} has negative bin contents (min {counts.min()})")
        if counts.sum() <= 0:
            raise EvaluationInputError(f"{name} is empty (total {counts.sum()}): W1 is undefined")
    centres = 0.5 * (bin_edges[1:] + bin_edges[:-1])
    return float(wasserstein_distance(centres, centres, a, b))


@dataclass(frozen=True)
class W1Estimate:
    """A W1 with its bootstrap uncertainty and the statistical floor of its sample sizes."""

    value: float
    uncertainty: float
    """Standard deviation of W1 over bootstrap resamples of both samples."""
    floor: float
    """Expected W1 between two samples of one distribution with the sizes of this comparison."""
    floor_spread: float
    """Standard deviation of that null W1 (how far one realisation scatters around the floor)."""

    @property
    def excess_significance(self) -> float:
        """``(value − floor) / sqrt(uncertainty² + floor_spread²)``: how far above noise."""
        scale = math.hypot(self.uncertainty, self.floor_spread)
        if scale == 0:
            return math.inf if self.value > self.floor else 0.0
        return (self.value - self.floor) / scale

    def scaled(self, factor: float) -> W1Estimate:
        """Every number divided by ``factor`` (a relative W1)."""
        return W1Estimate(self.value / factor, self.uncertainty / factor, self.floor / factor,
                          self.floor_spread / factor)

    def format(self) -> str:
        return f"{self.value:.3g} ± {self.uncertainty:.2g} (floor {self.floor:.2g})"

    def as_dict(self) -> dict[str, float]:
        return {"w1": self.value, "uncertainty": self.uncertainty, "floor": self.floor,
                "floor_spread": self.floor_spread, "excess_significance": self.excess_significance}


def _effective_size(n: int, weights: np.ndarray | None) -> float:
    if weights is None:
        return float(n)
    return float(weights.sum() ** 2 / np.sum(weights**2))


def wasserstein_with_floor(
    a: ArrayLike,
    b: ArrayLike,
    a_weights: ArrayLike | None = None,
    b_weights: ArrayLike | None = None,
    n_resamples: int = 50,
    seed: int = 0,
) -> W1Estimate:
    """Unbinned W1 of ``a`` (the nominal) and ``b`` with its uncertainty and statistical floor.

    See the module docstring: bootstrap uncertainty, floor from random halves of ``a``. Needs at
    least 4 entries in ``a``; deterministic for a given ``seed``.
    """
    a_values, b_values = finite_1d(a, "a"), finite_1d(b, "b")
    a_w = optional_weights(a_weights, a_values.size, "a_weights")
    b_w = optional_weights(b_weights, b_values.size, "b_weights")
    if a_values.size < 4 or b_values.size < 1:
        raise EvaluationInputError(f"a W1 floor needs >= 4 nominal and >= 1 other entries, got {a_values.size}, {b_values.size}")
    if n_resamples < 2:
        raise EvaluationInputError(f"n_resamples must be >= 2, got {n_resamples}")
    rng = np.random.default_rng(seed)

    def w1(x: np.ndarray, wx: np.ndarray | None, ix: np.ndarray, y: np.ndarray, wy: np.ndarray | None, iy: np.ndarray) -> float:
        return float(wasserstein_distance(x[ix], y[iy], None if wx is None else wx[ix], None if wy is None else wy[iy]))

    value = float(wasserstein_distance(a_values, b_values, a_w, b_w))
    boot = [w1(a_values, a_w, rng.integers(0, a_values.size, a_values.size),
               b_values, b_w, rng.integers(0, b_values.size, b_values.size)) for _ in range(n_resamples)]
    half = a_values.size // 2
    halves = []
    for _ in range(n_resamples):
        order = rng.permutation(a_values.size)
        halves.append(w1(a_values, a_w, order[:half], a_values, a_w, order[half:]))
    h1 = _effective_size(half, None if a_w is None else a_w[:half])
    h2 = _effective_size(a_values.size - half, None if a_w is None else a_w[half:])
    n_a, n_b = _effective_size(a_values.size, a_w), _effective_size(b_values.size, b_w)
    scale = math.sqrt((1 / n_a + 1 / n_b) / (1 / h1 + 1 / h2))
    return W1Estimate(value, float(np.std(boot, ddof=1)), float(np.mean(halves)) * scale,
                      float(np.std(halves, ddof=1)) * scale)


@dataclass(frozen=True)
class W1PermutationTest:
    """The W1 of two samples against W1s of random splits of their pooled entries."""

    w1: float
    floor_median: float
    """Median W1 over the random splits: what noise alone typically gives at these sizes."""
    floor_q95: float
    """95% quantile of that null W1: a W1 above it is rarer than 5% under the null."""
    p_value: float
    """Fraction of splits with W1 >= the observed (``+1`` in numerator and denominator when the
    splits are drawn at random rather than enumerated); ``< 0.05``: beyond statistical noise."""
    n_a: int
    n_b: int

    def as_dict(self) -> dict[str, float]:
        return {"w1": self.w1, "floor_median": self.floor_median, "floor_q95": self.floor_q95,
                "p_value": self.p_value}


def wasserstein_permutation_test(
    a: ArrayLike,
    b: ArrayLike,
    n_permutations: int = 100,
    rng: np.random.Generator | int | None = 0,
) -> W1PermutationTest:
    """Permutation test of ``W1(a, b)`` (unweighted): is ``b`` distinguishable from ``a``?

    See the module docstring for how this differs from :func:`wasserstein_with_floor`. Both
    samples need at least 2 finite entries; ``rng`` is a seed or a ``numpy`` generator.
    """
    from scipy.stats import permutation_test

    a_values, b_values = finite_1d(a, "a"), finite_1d(b, "b")
    if a_values.size < 2 or b_values.size < 2:
        raise EvaluationInputError(
            f"a W1 permutation test needs >= 2 entries per sample, got {a_values.size} and {b_values.size}"
        )
    if n_permutations < 1:
        raise EvaluationInputError(f"n_permutations must be >= 1, got {n_permutations}")
    result = permutation_test(
        (a_values, b_values),
        lambda x, y: wasserstein_distance(x, y),
        permutation_type="independent",
        vectorized=False,
        n_resamples=n_permutations,
        alternative="greater",
        random_state=rng,  # scipy >= 1.11 (pyproject); its ``rng`` keyword exists only from 1.15
    )
    null = np.asarray(result.null_distribution, dtype=np.float64)
    return W1PermutationTest(
        w1=float(result.statistic),
        floor_median=float(np.median(null)),
        floor_q95=float(np.quantile(null, 0.95)),
        p_value=float(result.pvalue),
        n_a=int(a_values.size),
        n_b=int(b_values.size),
    )


def wasserstein_estimate_table(
    samples: Mapping[str, Mapping[str, ArrayLike]],
    nominal: str = "nominal",
    relative: bool = False,
    n_resamples: int = 50,
    seed: int = 0,
) -> dict[str, dict[str, W1Estimate]]:
    """Like :func:`wasserstein_unbinned_table` (unweighted), each W1 with uncertainty and floor.

    With ``relative`` every number is divided by the nominal standard deviation.
    """
    table: dict[str, dict[str, W1Estimate]] = {}
    for variant, quantity, reference, values in _comparisons(samples, nominal, table):
        estimate = wasserstein_with_floor(reference, values, n_resamples=n_resamples, seed=seed)
        if relative:
            spread = _nominal_spread(reference, None, f"{nominal}/{quantity}")
            _relative(1.0, spread, quantity)  # refuses a zero spread, naming the quantity
            estimate = estimate.scaled(spread)
        table[variant][quantity] = estimate
    return table


def wasserstein_table(
    histograms: object,
    nominal: str = "nominal",
    variant_axis: str = "variant",
    relative: bool = False,
    max_flow_fraction: float = 0.01,
) -> WassersteinTable:
    """Binned W1 to ``nominal`` for every variant of one or several ``hist.Hist`` objects.

    ``histograms`` is either one ``hist.Hist`` or a mapping ``{quantity name: hist.Hist}``.
    Each histogram has a categorical axis named ``variant_axis``, exactly one continuous axis
    (the observable) and optionally further categorical axes (for example the embedding
    dimension or the jet class); each combination of those becomes its own quantity, named
    ``"<quantity>[<axis>=<value>,...]"``. A single histogram's quantity name is its ``name``,
    else its observable axis name. With ``relative`` each W1 is divided by the standard
    deviation of the nominal histogram (contents at bin centres), see :func:`wasserstein_unbinned_table`.
    Under/overflow entries are outside W1; an :class:`EvaluationWarning` names every histogram
    slice with more than ``max_flow_fraction`` of its entries there.
    """
    if isinstance(histograms, Mapping):
        items = list(histograms.items())
    else:
        items = [(None, histograms)]
    table: WassersteinTable = {}
    for quantity, histogram in items:
        if hasattr(histogram, "__dask_graph__"):
            histogram = histogram.compute()  # a hist.dask.Hist: materialise it once here
        one = _table_of_one(histogram, quantity, nominal, variant_axis, relative, max_flow_fraction)
        for variant, distances in one.items():
            table.setdefault(variant, {}).update(distances)
    return table


def wasserstein_unbinned_table(
    samples: Mapping[str, Mapping[str, ArrayLike]],
    nominal: str = "nominal",
    weights: Mapping[str, ArrayLike] | None = None,
    relative: bool = False,
) -> WassersteinTable:
    """Unbinned W1 to ``nominal`` from ``{variant: {quantity: per-jet values}}``.

    ``weights`` optionally maps a variant to per-jet weights, shared by all its quantities.
    Quantities absent from a variant are skipped for that variant. With ``relative`` each W1
    is divided by the (weighted) standard deviation of the nominal distribution, which makes
    embedding dimensions, head scores and N2 (different units and spreads) comparable: a
    variant that shifts a quantity by δ without changing its shape then scores δ/σ_nominal.
    """
    weights = weights or {}
    table: WassersteinTable = {}
    for variant, quantity, reference, values in _comparisons(samples, nominal, table):
        distance = wasserstein_1d(reference, values, weights.get(nominal), weights.get(variant))
        if relative:
            spread = _nominal_spread(reference, weights.get(nominal), f"{nominal}/{quantity}")
            distance = _relative(distance, spread, quantity)
        table[variant][quantity] = distance
    return table


def _comparisons(
    samples: Mapping[str, Mapping[str, ArrayLike]], nominal: str, table: dict[str, dict[str, Any]]
) -> Iterator[tuple[str, str, ArrayLike, ArrayLike]]:
    """``(variant, quantity, nominal values, variant values)`` of every quantity a variant
    shares with ``nominal``; adds an empty row to ``table`` for every variant."""
    if nominal not in samples:
        raise EvaluationInputError(f"nominal variant {nominal!r} not among the samples {sorted(samples)}")
    reference = samples[nominal]
    for variant, quantities in samples.items():
        if variant == nominal:
            continue
        table[variant] = {}
        for quantity, values in quantities.items():
            if quantity in reference:
                yield variant, quantity, reference[quantity], values


def _nominal_spread(values: ArrayLike, weights: ArrayLike | None, name: str) -> float:
    """(Weighted) standard deviation of the nominal distribution, the unit of a relative W1."""
    nominal_values = finite_1d(values, name)
    w = optional_weights(weights, nominal_values.size, "weights")
    mean = np.average(nominal_values, weights=w)
    return float(np.sqrt(np.average((nominal_values - mean) ** 2, weights=w)))


def _table_of_one(
    histogram: object,
    quantity: str | None,
    nominal: str,
    variant_axis: str,
    relative: bool,
    max_flow_fraction: float,
) -> WassersteinTable:
    axes = list(getattr(histogram, "axes", ()))
    names = [axis.name for axis in axes]
    if variant_axis not in names:
        raise EvaluationInputError(
            f"histogram {quantity or getattr(histogram, 'name', '')!r} has no categorical axis "
            f"{variant_axis!r}; its axes are {names}"
        )
    storage = getattr(getattr(histogram, "storage_type", None), "__name__", "")
    if "Mean" in storage:
        raise EvaluationInputError(f"histogram {quantity!r} has {storage} storage, not counts")
    categorical = [i for i, axis in enumerate(axes) if _is_categorical(axis)]
    continuous = [i for i in range(len(axes)) if i not in categorical]
    if len(continuous) != 1:
        raise EvaluationInputError(
            f"histogram {quantity!r} must have exactly one continuous axis, has "
            f"{[names[i] for i in continuous]}"
        )
    x_index = continuous[0]
    x_axis = axes[x_index]
    base_name = quantity or getattr(histogram, "name", None) or x_axis.name
    variant_index = names.index(variant_axis)
    variants = [str(v) for v in axes[variant_index]]
    if nominal not in variants:
        raise EvaluationInputError(
            f"histogram {base_name!r}: nominal variant {nominal!r} not among {variants}"
        )
    extra = [i for i in categorical if i != variant_index]
    # Keep the observable's under/overflow (to measure what W1 cannot see), drop the
    # categorical axes' overflow bins, then reorder to [variant, extra categories..., x].
    with_flow = np.asarray(histogram.values(flow=True), dtype=np.float64)
    inner = tuple(
        slice(None)
        if i == x_index
        else slice(int(ax.traits.underflow), int(ax.traits.underflow) + len(ax))
        for i, ax in enumerate(axes)
    )
    values_flow = np.moveaxis(
        with_flow[inner], [variant_index, *extra, x_index], list(range(len(axes)))
    )
    x_start = int(x_axis.traits.underflow)
    values = values_flow[..., x_start : x_start + len(x_axis)]
    totals = values_flow.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        flow_fraction = np.where(totals > 0, 1.0 - values.sum(axis=-1) / totals, 0.0)
    edges = np.asarray(x_axis.edges, dtype=np.float64)
    extra_labels = [[str(v) for v in axes[i]] for i in extra]
    nominal_values = values[variants.index(nominal)]
    table: WassersteinTable = {}
    for v_pos, variant in enumerate(variants):
        if variant == nominal:
            continue
        row: dict[str, float] = {}
        for combo in np.ndindex(*[len(labels) for labels in extra_labels]):
            name = base_name
            if extra:
                tags = ",".join(
                    f"{names[axis_i]}={extra_labels[k][combo[k]]}" for k, axis_i in enumerate(extra)
                )
                name = f"{base_name}[{tags}]"
            reference = nominal_values[combo]
            for pos in (variants.index(nominal), v_pos):
                fraction = float(flow_fraction[pos][combo])
                if fraction > max_flow_fraction:
                    warnings.warn(
                        f"{name}, variant {variants[pos]!r}: {fraction:.1%} of the entries are in "
                        f"under/overflow of [{edges[0]:g}, {edges[-1]:g}], which binned W1 ignores; "
                        "widen the histogram range",
                        EvaluationWarning,
                        stacklevel=3,
                    )
            try:
                distance = wasserstein_binned(reference, values[v_pos][combo], edges)
            except EvaluationInputError as error:
                raise EvaluationInputError(f"{name}, variant {variant!r}: {error}") from error
            if relative:
                centres = 0.5 * (edges[1:] + edges[:-1])
                mean = np.average(centres, weights=reference)
                spread = float(np.sqrt(np.average((centres - mean) ** 2, weights=reference)))
                distance = _relative(distance, spread, name)
            row[name] = distance
        table[variant] = row
    return table


def _relative(distance: float, spread: float, quantity: str) -> float:
    if spread <= 0:
        raise EvaluationInputError(
            f"{quantity}: the nominal distribution has zero spread, a relative W1 is undefined"
        )
    return distance / spread


def _is_categorical(axis: object) -> bool:
    # StrCategory/IntCategory are the unordered axes; Regular/Variable/Integer are observables.
    return not axis.traits.ordered


__all__ = [
    "W1Estimate",
    "W1PermutationTest",
    "WassersteinTable",
    "wasserstein_1d",
    "wasserstein_binned",
    "wasserstein_estimate_table",
    "wasserstein_permutation_test",
    "wasserstein_table",
    "wasserstein_unbinned_table",
    "wasserstein_with_floor",
]
