"""Wasserstein distances, ROC/AUC and rejection against hand values and independent formulas."""

from __future__ import annotations

import itertools
import math

import hist
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, binomtest, wasserstein_distance

from rs3l_coffea.evaluation import (
    EvaluationInputError,
    EvaluationWarning,
    W1Estimate,
    auc_uncertainty,
    background_efficiency_at,
    background_rejection,
    clopper_pearson,
    rejection_summary,
    roc_curve,
    subprocess_rocs,
    summarize,
    wasserstein_1d,
    wasserstein_binned,
    wasserstein_estimate_table,
    wasserstein_permutation_test,
    wasserstein_table,
    wasserstein_unbinned_table,
    wasserstein_with_floor,
)
from rs3l_coffea.evaluation.verdict import verdict

RNG = np.random.default_rng(20261123)


# --------------------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize("delta", [0.0, 0.013, 0.5, 3.25])
def test_unbinned_w1_of_a_shift_is_the_shift(delta: float) -> None:
    x = RNG.normal(size=2000)
    assert wasserstein_1d(x, x + delta) == pytest.approx(delta, abs=1e-9)
    weights = RNG.uniform(0.5, 2.0, size=x.size)
    assert wasserstein_1d(x, x + delta, weights, weights) == pytest.approx(delta, abs=1e-9)


def test_unbinned_w1_equals_mean_gap_of_sorted_equal_size_samples() -> None:
    # For two samples of equal size W1 is the mean absolute difference of their order statistics.
    for _ in range(5):
        a, b = RNG.exponential(size=500), RNG.normal(1.0, 2.0, size=500)
        assert wasserstein_1d(a, b) == pytest.approx(
            np.mean(np.abs(np.sort(a) - np.sort(b))), rel=1e-12
        )


def test_integer_weights_equal_replicated_entries() -> None:
    a, b = RNG.normal(size=300), RNG.normal(0.3, 1.2, size=200)
    wa, wb = RNG.integers(1, 4, size=300), RNG.integers(1, 4, size=200)
    replicated = wasserstein_1d(np.repeat(a, wa), np.repeat(b, wb))
    assert wasserstein_1d(a, b, wa, wb) == pytest.approx(replicated, rel=1e-10)


_counts = st.lists(st.integers(0, 50), min_size=6, max_size=6).filter(lambda c: sum(c) > 0)


@settings(max_examples=60, deadline=None)
@given(_counts, _counts, _counts)
def test_binned_w1_is_a_metric(a: list[int], b: list[int], c: list[int]) -> None:
    edges = np.array([0.0, 0.5, 1.5, 2.0, 4.0, 4.5, 7.0])
    ab, ba = wasserstein_binned(a, b, edges), wasserstein_binned(b, a, edges)
    assert ab >= 0 and ab == pytest.approx(ba, abs=1e-12)
    assert ab <= wasserstein_binned(a, c, edges) + wasserstein_binned(c, b, edges) + 1e-12


def test_binned_w1_matches_scipy_with_point_masses_at_bin_centres() -> None:
    for n_bins in (5, 17, 60):
        edges = np.sort(RNG.uniform(-3, 3, size=n_bins + 1))  # variable widths on purpose
        a, b = RNG.uniform(0, 10, size=n_bins), RNG.uniform(0, 10, size=n_bins)
        centres = 0.5 * (edges[1:] + edges[:-1])
        expected = wasserstein_distance(centres, centres, a, b)
        assert wasserstein_binned(a, b, edges) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def _variant_hist(
    samples: dict[str, np.ndarray], edges: np.ndarray, weight: bool = False
) -> hist.Hist:
    storage = hist.storage.Weight() if weight else hist.storage.Double()
    h = hist.Hist(
        hist.axis.StrCategory(list(samples), name="variant"),
        hist.axis.Variable(edges, name="z0"),
        storage=storage,
    )
    for variant, values in samples.items():
        h.fill(variant=variant, z0=values)
    return h


@pytest.mark.parametrize("delta", [0.07, 0.3, 1.0])
def test_binned_w1_of_a_shift_is_the_shift_within_one_bin_width(delta: float) -> None:
    x = RNG.normal(size=20000)
    width = 0.1
    edges = np.arange(-6, 7 + width / 2, width)
    table = wasserstein_table(_variant_hist({"nominal": x, "fsr_up": x + delta}, edges))
    assert set(table) == {"fsr_up"}
    assert abs(table["fsr_up"]["z0"] - delta) <= width


def test_binned_w1_of_whole_bin_shift_is_exact() -> None:
    counts = np.array([0, 3, 7, 2, 5, 0, 0, 0], dtype=float)
    edges = np.linspace(0, 4, 9)  # width 0.5
    shifted = np.roll(counts, 2)
    assert wasserstein_binned(counts, shifted, edges) == pytest.approx(1.0, abs=1e-12)


def test_binned_w1_of_identical_histograms_is_zero() -> None:
    x = RNG.normal(size=1000)
    edges = np.linspace(-5, 5, 41)
    table = wasserstein_table(_variant_hist({"nominal": x, "seed": x.copy()}, edges, weight=True))
    assert table == {"seed": {"z0": 0.0}}


def test_table_with_extra_category_axis_and_several_quantities() -> None:
    x = RNG.normal(size=(3000, 2))
    h = hist.Hist(
        hist.axis.StrCategory(["nominal", "vincia"], name="variant"),
        hist.axis.IntCategory([0, 1], name="dim"),
        hist.axis.Regular(80, -6, 6, name="value"),
    )
    shifts = {0: 0.0, 1: 0.45}
    for dim in (0, 1):
        h.fill(variant="nominal", dim=dim, value=x[:, dim])
        h.fill(variant="vincia", dim=dim, value=x[:, dim] + shifts[dim])
    n2 = _variant_hist({"nominal": x[:, 0], "vincia": x[:, 0] * 1.0}, np.linspace(-6, 6, 81))
    table = wasserstein_table({"embedding": h, "N2": n2})
    row = table["vincia"]
    assert set(row) == {"embedding[dim=0]", "embedding[dim=1]", "N2"}
    assert row["embedding[dim=0]"] == 0.0 and row["N2"] == 0.0
    assert abs(row["embedding[dim=1]"] - 0.45) <= 12 / 80


def test_table_from_processor_layout_dataset_variant_dim_value() -> None:
    # rs3l_coffea.coffea_processing.analysis.make_histograms: [dataset, variant, dim, value] (growing axes).
    h = hist.Hist(
        hist.axis.StrCategory([], growth=True, name="dataset"),
        hist.axis.StrCategory([], growth=True, name="variant"),
        hist.axis.IntCategory([0, 1], name="dim"),
        hist.axis.Regular(60, -6, 6, name="value"),
    )
    x = RNG.normal(size=4000)
    for dataset, shift in (("zh", 0.6), ("qcd", 0.0)):
        for variant, extra in (("nominal", 0.0), ("fsr_up", shift)):
            for dim in (0, 1):
                h.fill(dataset=dataset, variant=variant, dim=dim, value=x + dim * extra)
    row = wasserstein_table({"embedding": h})["fsr_up"]
    assert set(row) == {f"embedding[dataset={d},dim={i}]" for d in ("zh", "qcd") for i in (0, 1)}
    assert row["embedding[dataset=qcd,dim=1]"] == 0.0
    assert abs(row["embedding[dataset=zh,dim=1]"] - 0.6) <= 0.2


def test_entries_outside_the_range_are_reported() -> None:
    x = RNG.normal(size=2000)
    edges = np.linspace(-1, 1, 41)  # ~32% of a unit Gaussian is outside
    with pytest.warns(EvaluationWarning) as caught:
        wasserstein_table(_variant_hist({"nominal": x, "seed": x + 0.1}, edges))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("of the entries are in under/overflow" in m for m in messages)
    assert "z0, variant 'nominal': 3" in messages[0] and "z0, variant 'seed': 3" in messages[1]
    assert all(w.filename == __file__ for w in caught)  # points at the caller
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wasserstein_table(_variant_hist({"nominal": x, "seed": x}, np.linspace(-8, 8, 81)))


def test_unbinned_table_uses_nominal_as_reference() -> None:
    x, n2 = RNG.normal(size=400), RNG.uniform(size=400)
    samples = {
        "nominal": {"z0": x, "N2": n2},
        "fsr_down": {"z0": x - 0.2, "N2": n2 + 0.05},
    }
    table = wasserstein_unbinned_table(samples)
    assert table["fsr_down"]["z0"] == pytest.approx(0.2, abs=1e-9)
    assert table["fsr_down"]["N2"] == pytest.approx(0.05, abs=1e-9)


def test_relative_w1_is_shift_over_nominal_spread_in_any_units() -> None:
    x = RNG.normal(size=5000)
    for scale in (1e-3, 1.0, 250.0):  # e.g. an embedding dimension vs N2 vs a mass in GeV
        nominal, shifted = scale * x, scale * (x + 0.4)
        table = wasserstein_unbinned_table(
            {"nominal": {"q": nominal}, "seed": {"q": shifted}}, relative=True
        )
        assert table["seed"]["q"] == pytest.approx(0.4 / np.std(x), rel=1e-9)
        edges = scale * np.linspace(-6, 6.5, 126)  # width 0.1 in units of the scale
        binned = wasserstein_table(
            _variant_hist({"nominal": nominal, "seed": shifted}, edges), relative=True
        )
        assert binned["seed"]["z0"] == pytest.approx(0.4 / np.std(x), abs=0.1 / np.std(x) + 0.01)


def test_wasserstein_bad_inputs_name_the_problem() -> None:
    edges = np.linspace(0, 1, 5)
    with pytest.raises(EvaluationInputError, match="non-finite"):
        wasserstein_1d([0.0, np.nan], [1.0])
    with pytest.raises(EvaluationInputError, match="empty"):
        wasserstein_binned([0, 0, 0, 0], [1, 1, 1, 1], edges)
    with pytest.raises(EvaluationInputError, match="bins but edges"):
        wasserstein_binned([1, 1, 1], [1, 1, 1, 1], edges)
    h = hist.Hist(
        hist.axis.StrCategory(["seed"], name="variant"), hist.axis.Regular(4, 0, 1, name="x")
    )
    h.fill(variant="seed", x=[0.5])
    with pytest.raises(EvaluationInputError, match="nominal variant 'nominal'"):
        wasserstein_table(h)
    with pytest.raises(EvaluationInputError, match="no categorical axis 'shower'"):
        wasserstein_table(h, variant_axis="shower")
    with pytest.raises(EvaluationInputError, match="zero spread"):
        wasserstein_unbinned_table({"nominal": {"z": [1.0, 1.0]}, "s": {"z": [2.0]}}, relative=True)
    with pytest.raises(EvaluationInputError, match="not among the samples"):
        wasserstein_unbinned_table({"seed": {"z0": [1.0]}})


# --------------------------------------------------------------------------- ROC / rejection


def _tied_example() -> tuple[np.ndarray, np.ndarray]:
    """Hand-solvable ROC: signal 4x0.9, 4x0.5, 2x0.1; background 4x0.5, 6x0.1.

    Points (ε_S, ε_B): (0,0) -> (0.4,0) -> (0.8,0.4) -> (1,1); the ties make diagonal steps.
    AUC = 0.4·(0.4+0.8)/2 + 0.6·(0.8+1)/2 = 0.78 (also P(s>b) + ½P(s=b) = 78/100).
    Step rule (the tightest cut keeping ≥ ε_S): ε_S=0.3: cut 0.9, ε_B=0 (rejection ∞);
    ε_S=0.5 and 0.7: cut 0.5, ε_B=0.4 (2.5). Linear interpolation along the tie's diagonal:
    ε_S=0.5: ε_B=0.1 (10); ε_S=0.7: ε_B=0.3 (10/3).
    """
    scores = np.array([0.9] * 4 + [0.5] * 4 + [0.1] * 2 + [0.5] * 4 + [0.1] * 6)
    is_signal = np.array([True] * 10 + [False] * 10)
    return scores, is_signal


def test_auc_and_rejection_on_hand_solved_roc() -> None:
    roc = roc_curve(*_tied_example())
    assert roc.auc == pytest.approx(0.78, abs=1e-12)
    points = background_rejection(roc)
    assert [p.signal_efficiency for p in points] == [0.3, 0.5, 0.7]
    assert points[0].background_efficiency == 0.0 and math.isinf(points[0].rejection)
    assert points[1].rejection == pytest.approx(2.5, rel=1e-12)
    assert points[2].rejection == pytest.approx(2.5, rel=1e-12)
    interpolated = background_rejection(roc, rule="interpolate")
    assert math.isinf(interpolated[0].rejection)
    assert interpolated[1].rejection == pytest.approx(10.0, rel=1e-12)
    assert interpolated[2].rejection == pytest.approx(10.0 / 3.0, rel=1e-12)


def test_vertical_step_takes_the_smallest_background_efficiency() -> None:
    # Alternating scores: background k/10+0.01, signal k/10+0.06 -> (0.3, 0.2) and (0.3, 0.3)
    # are both on the ROC; the tightest cut reaching ε_S = 0.3 has ε_B = 0.2.
    k = np.arange(10)
    scores = np.concatenate([k / 10 + 0.06, k / 10 + 0.01])
    roc = roc_curve(scores, np.arange(20) < 10)
    assert background_efficiency_at(roc, 0.3) == pytest.approx(0.2, abs=1e-12)
    assert background_efficiency_at(roc, 0.35) == pytest.approx(0.3, abs=1e-12)
    # All signal passes once the cut is just below 0.06, leaving out the background jet at 0.01.
    assert background_efficiency_at(roc, 1.0) == pytest.approx(0.9, abs=1e-12)


def test_rejection_with_uniform_background_matches_formula() -> None:
    # Background uniform on (0,1), signal uniform on (0.5,1): ε_S = 2(1-t), ε_B = 1-t, so
    # 1/ε_B = 2/ε_S, and AUC = P(s > b) = E[s] = 0.75.
    n = 20000
    background = (np.arange(n) + 0.5) / n
    signal = 0.5 + 0.5 * (np.arange(n) + 0.25) / n
    roc = roc_curve(np.concatenate([signal, background]), np.arange(2 * n) < n)
    assert roc.auc == pytest.approx(0.75, abs=1e-4)
    for point in background_rejection(roc, (0.3, 0.5, 0.7)):
        assert point.rejection == pytest.approx(2.0 / point.signal_efficiency, rel=1e-3)
        assert point.rejection_low < point.rejection < point.rejection_high
        assert not point.low_statistics


def test_clopper_pearson_matches_scipy_exact_interval() -> None:
    for passing, total in [(0, 20), (3, 20), (17, 250), (50, 50)]:
        low, high = clopper_pearson(passing, total, 0.9)
        ref = binomtest(passing, total).proportion_ci(confidence_level=0.9, method="exact")
        assert low == pytest.approx(ref.low, abs=1e-10)
        assert high == pytest.approx(ref.high, abs=1e-10)
    # k = 0: upper limit solves (1 - p)^n = α/2.
    assert clopper_pearson(0, 40, 0.95)[1] == pytest.approx(1 - 0.025 ** (1 / 40), rel=1e-10)


def test_no_background_passing_gives_infinite_rejection_with_finite_lower_limit() -> None:
    scores = np.concatenate([np.full(30, 2.0), RNG.uniform(size=20)])
    roc = roc_curve(scores, np.arange(50) < 30)
    point = background_rejection(roc, (0.5,))[0]
    assert math.isinf(point.rejection) and math.isinf(point.rejection_high)
    upper_eff = 1 - ((1 - 0.6826894921370859) / 2) ** (1 / 20)
    assert point.rejection_low == pytest.approx(1 / upper_eff, rel=1e-9)
    assert point.low_statistics


def test_equal_weights_do_not_change_the_roc() -> None:
    scores, is_signal = _tied_example()
    plain = roc_curve(scores, is_signal)
    weighted = roc_curve(scores, is_signal, np.full(scores.size, 2.5))
    assert weighted.auc == pytest.approx(plain.auc)
    assert weighted.n_background_effective == pytest.approx(10.0)
    np.testing.assert_allclose(weighted.background_efficiency, plain.background_efficiency)


def test_integer_weights_equal_replicated_jets_in_the_roc() -> None:
    truth = np.arange(300) < 120
    scores = np.round(RNG.normal(size=300) + truth, 1)
    weights = RNG.integers(1, 5, size=300)
    weighted = roc_curve(scores, truth, weights)
    replicated = roc_curve(np.repeat(scores, weights), np.repeat(truth, weights))
    assert weighted.auc == pytest.approx(replicated.auc, abs=1e-12)
    for eff in (0.3, 0.5, 0.7):
        assert background_efficiency_at(weighted, eff) == pytest.approx(
            background_efficiency_at(replicated, eff), abs=1e-12
        )


def test_summaries_over_repeated_trainings() -> None:
    stats = summarize([1.0, 2.0, 3.0])
    assert (stats.mean, stats.std, stats.n, stats.n_infinite) == (2.0, 1.0, 3, 0)
    with_inf = summarize([math.inf, 4.0, 6.0])
    assert with_inf.mean == 5.0 and with_inf.n_infinite == 1
    assert "1/3 runs ∞" in with_inf.format()
    assert summarize([math.inf]).format() == "∞"
    rocs = [roc_curve(*_tied_example()), roc_curve(*_tied_example())]
    summary = rejection_summary(rocs, (0.5, 0.7))
    assert summary[0.5].mean == pytest.approx(2.5) and summary[0.5].std == pytest.approx(0.0)


def _mann_whitney(signal: np.ndarray, background: np.ndarray) -> float:
    diff = signal[:, None] - background[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def test_per_subprocess_rocs_against_pairwise_auc() -> None:
    labels = np.repeat([3, 0, 1, 7], [200, 150, 100, 80])  # H->bb, light q, c, g->gg (g->bb absent)
    scores = np.round(RNG.normal(loc=np.where(labels == 3, 1.0, 0.0) + 0.2 * labels), 2)
    curves = subprocess_rocs(
        scores, labels, signal=3, backgrounds={"light q": 0, "c": 1, "g→bb": 6, "g→gg": 7}
    )
    assert list(curves) == ["light q", "c", "g→gg", "all backgrounds"]
    signal = scores[labels == 3]
    for name, code in {"light q": [0], "c": [1], "g→gg": [7], "all backgrounds": [0, 1, 7]}.items():
        expected = _mann_whitney(signal, scores[np.isin(labels, code)])
        assert curves[name].auc == pytest.approx(expected, abs=1e-12)
    assert curves["c"].n_background == 100


def test_roc_bad_inputs() -> None:
    with pytest.raises(EvaluationInputError, match="both classes"):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(EvaluationInputError, match="non-finite"):
        roc_curve([0.1, np.nan], [True, False])
    with pytest.raises(EvaluationInputError, match=r"boolean or 0/1, found values \[3\]"):
        roc_curve([0.1, 0.2, 0.3], [0, 1, 3])
    with pytest.raises(EvaluationInputError, match=r"signal efficiency must be in \(0, 1\]"):
        background_efficiency_at(roc_curve(*_tied_example()), 0.0)
    with pytest.raises(EvaluationInputError, match="signal label"):
        subprocess_rocs([0.1, 0.2], [0, 1], signal=3, backgrounds={"q": 0})


# --------------------------------------------------------------------------- statistics of the tables


def test_binned_w1_equals_the_cdf_sum_over_bin_centres() -> None:
    edges = np.array([0.0, 1.0, 3.0, 3.5, 6.0])
    a, b = np.array([1.0, 2.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0, 2.0])
    centres = np.array([0.5, 2.0, 3.25, 4.75])
    gap = np.abs(np.cumsum(a) / 4 - np.cumsum(b) / 4)  # 0.25, 0.5, 0.25, 0
    expected = sum(gap[i] * (centres[i + 1] - centres[i]) for i in range(3))
    assert wasserstein_binned(a, b, edges) == pytest.approx(expected, rel=1e-12)


def test_identical_distributions_give_w1_at_the_floor() -> None:
    # Many independent pairs of equal-size samples of one distribution: their mean W1 is the
    # floor (within the scatter of the mean), and single pairs scatter by about floor_spread.
    rng = np.random.default_rng(7)
    measured, floors, spreads = [], [], []
    for seed in range(40):
        a, b = rng.normal(size=1500), rng.normal(size=1500)
        estimate = wasserstein_with_floor(a, b, n_resamples=30, seed=seed)
        measured.append(estimate.value)
        floors.append(estimate.floor)
        spreads.append(estimate.floor_spread)
    assert np.mean(measured) == pytest.approx(np.mean(floors), rel=0.12)
    assert np.std(measured) == pytest.approx(np.mean(spreads), rel=0.35)
    # Unequal sizes: the floor scales like sqrt(1/n_a + 1/n_b).
    a = rng.normal(size=4000)
    wide = wasserstein_with_floor(a, rng.normal(size=250), n_resamples=30)
    narrow = wasserstein_with_floor(a, rng.normal(size=4000), n_resamples=30)
    ratio = math.sqrt((1 / 4000 + 1 / 250) / (2 / 4000))
    assert wide.floor / narrow.floor == pytest.approx(ratio, rel=0.1)


@pytest.mark.parametrize("shift", [0.2, 1.0])
def test_a_known_shift_gives_the_shift_far_above_the_floor(shift: float) -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=20000), rng.normal(size=20000) + shift
    estimate = wasserstein_with_floor(a, b, n_resamples=30)
    assert abs(estimate.value - shift) < 4 * estimate.uncertainty + estimate.floor
    assert estimate.uncertainty == pytest.approx(math.sqrt(2 / 20000), rel=0.5)  # ~σ·sqrt(1/n+1/m)
    assert estimate.excess_significance > 10
    relative = wasserstein_estimate_table({"nominal": {"x": 3.0 * a}, "up": {"x": 3.0 * b}}, relative=True,
                                          n_resamples=10)["up"]["x"]
    assert relative.value == pytest.approx(estimate.value / np.std(a), rel=1e-9)  # in units of the nominal σ
    assert relative.floor == pytest.approx(estimate.floor / np.std(a), rel=0.5)


def test_w1_estimate_is_reproducible_and_refuses_tiny_samples() -> None:
    a, b = RNG.normal(size=300), RNG.normal(size=200)
    assert wasserstein_with_floor(a, b, seed=3) == wasserstein_with_floor(a, b, seed=3)
    with pytest.raises(EvaluationInputError, match=">= 4 nominal"):
        wasserstein_with_floor([1.0, 2.0], [1.0])
    assert W1Estimate(0.3, 0.0, 0.1, 0.0).excess_significance == math.inf


def _w1_by_cdf(a: np.ndarray, b: np.ndarray) -> float:
    """W1 as the integral of |F_a - F_b| between consecutive pooled values (no scipy)."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def test_w1_permutation_test_equals_enumerating_every_split() -> None:
    # 4 + 4 entries have C(8, 4) = 70 splits, fewer than the 100 permutations asked for, so the
    # test is exact: p-value, median and 95% quantile of the null over all 70 splits by hand.
    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.5, 4.0, 5.0, 6.5])
    pooled = np.concatenate([a, b])
    null = []
    for chosen in itertools.combinations(range(8), 4):
        mask = np.zeros(8, dtype=bool)
        mask[list(chosen)] = True
        null.append(_w1_by_cdf(pooled[mask], pooled[~mask]))
    observed = _w1_by_cdf(a, b)
    result = wasserstein_permutation_test(a, b, n_permutations=100, rng=5)
    assert result.w1 == pytest.approx(observed, rel=1e-12)
    assert result.p_value == pytest.approx(np.mean(np.array(null) >= observed - 1e-12), rel=1e-12)
    assert result.floor_median == pytest.approx(np.median(null), rel=1e-12)
    assert result.floor_q95 == pytest.approx(np.quantile(null, 0.95), rel=1e-12)
    assert (result.n_a, result.n_b) == (4, 4)


def test_w1_permutation_test_is_calibrated_and_finds_a_shift() -> None:
    rng = np.random.default_rng(7)
    # Same distribution: p < 0.05 in about 5% of 300 independent comparisons (binomial 99.9%
    # range of 300 x 0.05 = 15 is 5..29), and the observed W1 sits below the 95% quantile as often.
    p_values = [wasserstein_permutation_test(rng.normal(size=40), rng.normal(size=60), 99, rng).p_value
                for _ in range(300)]
    assert 5 <= sum(p < 0.05 for p in p_values) <= 29
    same = wasserstein_permutation_test(rng.normal(size=1000), rng.normal(size=1000), rng=rng)
    assert same.floor_q95 > same.floor_median > 0
    # A translated copy: W1 is the shift, no random split reaches it, the null is noise of
    # 2 x 1000 unit-width samples (about sqrt(2/1000) ~ 0.045 on average).
    sample = rng.normal(size=1000)
    shifted = wasserstein_permutation_test(sample, sample + 0.5, n_permutations=100, rng=rng)
    assert shifted.w1 == pytest.approx(0.5, rel=1e-9)
    assert shifted.p_value == pytest.approx(1 / 101)
    assert shifted.floor_q95 < 0.15
    assert set(shifted.as_dict()) == {"w1", "floor_median", "floor_q95", "p_value"}


def test_w1_permutation_test_refuses_unusable_samples() -> None:
    with pytest.raises(EvaluationInputError, match=">= 2 entries per sample, got 1 and 3"):
        wasserstein_permutation_test([1.0], [1.0, 2.0, 3.0])
    with pytest.raises(EvaluationInputError, match=r"b has 1 non-finite entries \(first at index 1"):
        wasserstein_permutation_test([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(EvaluationInputError, match="n_permutations"):
        wasserstein_permutation_test([1.0, 2.0], [1.0, 3.0], n_permutations=0)


@pytest.mark.parametrize("passing,total", [(0, 20), (3, 20), (17, 250), (50, 50), (2.5, 13.7)])
@pytest.mark.parametrize("level", [0.6826894921370859, 0.95])
def test_clopper_pearson_against_the_beta_quantiles(passing: float, total: float, level: float) -> None:
    alpha = 1 - level
    low = 0.0 if passing == 0 else beta.ppf(alpha / 2, passing, total - passing + 1)
    high = 1.0 if passing == total else beta.ppf(1 - alpha / 2, passing + 1, total - passing)
    assert clopper_pearson(passing, total, level) == pytest.approx((low, high), abs=1e-12)


def _step_rule_by_hand(scores: np.ndarray, is_signal: np.ndarray, target: float) -> float:
    """The tightest cut score >= t keeping at least ``target`` of the signal; its ε_B."""
    for cut in np.sort(np.unique(scores))[::-1]:
        if np.mean(scores[is_signal] >= cut) >= target:
            return float(np.mean(scores[~is_signal] >= cut))
    raise AssertionError("unreachable: the loosest cut keeps all signal")


def test_step_rule_on_integer_scores_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        signal = rng.integers(0, 6, size=rng.integers(20, 200)) + rng.integers(0, 3)
        background = rng.integers(0, 5, size=rng.integers(20, 300))
        scores = np.concatenate([signal, background]).astype(float)
        is_signal = np.arange(scores.size) < signal.size
        roc = roc_curve(scores, is_signal)
        for target in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
            expected = _step_rule_by_hand(scores, is_signal, target)
            assert background_efficiency_at(roc, target) == pytest.approx(expected, abs=1e-12)
            assert background_efficiency_at(roc, target, "interpolate") <= expected + 1e-12


def test_tied_scores_interpolation_overstates_rejection_twofold() -> None:
    # Signal: half at score 2, half at 1; background: 10% at 1, the rest at 0. At ε_S = 0.75 the
    # tie at 1 is a diagonal segment: interpolation gives ε_B = 0.05, a real cut (>= 1) 0.1.
    scores = np.array([2.0] * 50 + [1.0] * 50 + [1.0] * 10 + [0.0] * 90)
    roc = roc_curve(scores, np.arange(200) < 100)
    step = background_rejection(roc, (0.75,))[0]
    interpolated = background_rejection(roc, (0.75,), rule="interpolate")[0]
    assert step.rejection == pytest.approx(10.0, rel=1e-12)
    assert interpolated.rejection == pytest.approx(20.0, rel=1e-12)
    with pytest.raises(EvaluationInputError, match="rule"):
        background_efficiency_at(roc, 0.5, "nearest")  # type: ignore[arg-type]


def test_auc_uncertainty_is_the_hanley_mcneil_formula_and_matches_the_bootstrap() -> None:
    rng = np.random.default_rng(5)
    n_s, n_b = 400, 600
    truth = np.arange(n_s + n_b) < n_s
    scores = np.where(truth, rng.normal(1.0, 1.0, n_s + n_b), rng.normal(0.0, 1.0, n_s + n_b))
    auc = roc_curve(scores, truth).auc
    boot = []
    for _ in range(300):
        s = rng.choice(np.flatnonzero(truth), n_s)
        b = rng.choice(np.flatnonzero(~truth), n_b)
        boot.append(roc_curve(scores[np.concatenate([s, b])], np.arange(n_s + n_b) < n_s).auc)
    assert auc_uncertainty(auc, n_s, n_b) == pytest.approx(np.std(boot), rel=0.2)
    # Hand value of the formula at AUC 0.8, 100 / 100 jets.
    q1, q2 = 0.8 / 1.2, 2 * 0.64 / 1.8
    by_hand = math.sqrt((0.16 + 99 * (q1 - 0.64) + 99 * (q2 - 0.64)) / 1e4)
    assert auc_uncertainty(0.8, 100, 100) == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize(
    "difference,uncertainty,expected",
    [(0.5, 0.1, "holds"), (-0.5, 0.1, "does not hold"), (0.15, 0.1, "inconclusive"),
     (-0.19, 0.1, "inconclusive"), (0.21, 0.1, "holds"), (0.0, 0.0, "inconclusive"),
     (1e-9, 0.0, "holds"), (3.0, math.inf, "inconclusive")],
)
def test_expectation_verdicts_on_constructed_numbers(difference: float, uncertainty: float, expected: str) -> None:
    assert verdict(difference, uncertainty) == expected
