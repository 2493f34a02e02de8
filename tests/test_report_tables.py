"""Study tables computed from stage outputs, tested on constructed inputs (no generation)."""

from __future__ import annotations

import numpy as np
import pytest

from rs3l_coffea.study.layout import RunKey


def _roc(scores: np.ndarray, truth: np.ndarray):
    from rs3l_coffea.evaluation import roc_curve

    return roc_curve(scores, truth)


def test_unchanged_between_sizes_flags_only_rows_with_the_same_roc_for_every_seed() -> None:
    from rs3l_coffea.study.tables import unchanged_between_sizes, unchanged_rows_table

    rng = np.random.default_rng(4)
    truth = np.arange(40) % 2 == 0
    small = {s: rng.uniform(size=40) for s in (0, 1)}
    scores = {RunKey("hbb", "fixed", 10, s): small[s] for s in (0, 1)}
    # 20 labelled jets: a tiny monotone shift of the scores (the ROC cannot change) for "fixed";
    # "floating" swaps a signal and a background jet in seed 1 only.
    scores |= {RunKey("hbb", "fixed", 20, s): small[s] * 0.999 + 1e-4 for s in (0, 1)}
    scores |= {RunKey("hbb", "floating", 10, s): small[s] for s in (0, 1)}
    swapped = small[1].copy()
    signal, background = np.flatnonzero(truth)[0], np.flatnonzero(~truth)[0]
    swapped[[signal, background]] = swapped[[background, signal]]
    scores |= {RunKey("hbb", "floating", 20, 0): small[0] * 1.01, RunKey("hbb", "floating", 20, 1): swapped}
    rocs = {key: _roc(value, truth) for key, value in scores.items()}
    steps = {key: key.labelled_size // 10 for key in scores}
    found = unchanged_between_sizes([20, 10], rocs, scores, steps)
    assert [(r["model"], r["labelled_sizes"], r["seeds"]) for r in found] == [("fixed", [10, 20], [0, 1])]
    shift = max(np.max(np.abs(small[s] * 0.999 + 1e-4 - small[s])) for s in (0, 1))
    assert found[0]["max_abs_score_shift"] == pytest.approx(shift, rel=1e-9)
    assert found[0]["optimizer_steps"] == {"10": [1, 1], "20": [2, 2]} and found[0]["test_jets"] == 40
    row = unchanged_rows_table(found)[0]
    assert row["labelled jets"] == "20 repeats 10" and row["optimizer steps"] == "1 vs 2"
    assert "classifier.fixed_lr" in row["why"]


def _resimulated_test_set(n_jets: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A test ntuple of jets from a falling spectrum, selected at reconstructed pT > 450 GeV on the
    nominal side only (as the ntuple does), with two partners each: ``seed`` (the same response,
    new random numbers: exchangeable with the nominal) and ``vincia`` (a 3 % lower response)."""
    from rs3l_coffea.variants import VARIANT_CODES

    true_pt = 300.0 + rng.exponential(120.0, size=n_jets)
    nominal_pt = true_pt * (1 + 0.1 * rng.standard_normal(n_jets))
    keep = nominal_pt > 450.0
    true_pt, nominal_pt = true_pt[keep], nominal_pt[keep]
    n = len(true_pt)
    partner_pt = {"seed": true_pt * (1 + 0.1 * rng.standard_normal(n)),
                  "vincia": 0.97 * true_pt * (1 + 0.1 * rng.standard_normal(n))}
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (
        "variant", "pair_rank", "hard_event_id", "jet_index", "partner_pt", "partner_eta", "partner_mass",
        "partner_mask", "jet_pt", "partner_value")}
    for rank, (name, pt) in enumerate(partner_pt.items()):
        columns["variant"].append(np.full(n, VARIANT_CODES[name], np.int32))
        columns["pair_rank"].append(np.full(n, rank, np.int32))
        columns["hard_event_id"].append(np.arange(n, dtype=np.int64) * 2**40)  # ids use the high bits too
        columns["jet_index"].append(np.zeros(n, np.int32))
        columns["partner_pt"].append(pt.astype(np.float32))
        columns["partner_eta"].append(np.zeros(n, np.float32))
        columns["partner_mass"].append(np.full(n, 100.0, np.float32))
        columns["partner_mask"].append(np.ones((n, 3), bool))
        columns["jet_pt"].append(nominal_pt.astype(np.float32))
    t = {k: np.concatenate(v) for k, v in columns.items() if v}
    return t, np.concatenate(list(partner_pt.values()))


def test_w1_compares_jets_selected_alike_and_the_seed_control_sits_at_the_floor() -> None:
    """Regression to the mean at the pT threshold: without selecting the partners, even the seed
    variant (same physics) is far from the nominal; with every partner selected it is at the floor,
    while a real 3 % response shift stays visible."""
    from pathlib import Path

    from rs3l_coffea.evaluation import wasserstein_estimate_table
    from rs3l_coffea.study import load_study_config
    from rs3l_coffea.study.layout import EmbeddingSource
    from rs3l_coffea.study.tables import selected_variant_rows, wasserstein_tables
    from rs3l_coffea.variants import VARIANT_CODES

    config = load_study_config(Path(__file__).resolve().parents[1] / "studies" / "tiny.yaml")
    assert config.split.selection == "generated"  # pT > 450 GeV, m > 10 GeV, |eta| < 1.5
    rng = np.random.default_rng(11)
    t, partner_pt = _resimulated_test_set(60_000, rng)
    codes = {VARIANT_CODES["seed"]: "seed", VARIANT_CODES["vincia"]: "vincia"}
    rows = selected_variant_rows(config, t, list(codes))
    # by hand: per variant the rows whose partner passes 450 GeV; in common, the jets where both do
    n = int((t["pair_rank"] == 0).sum())
    seed_pass, vincia_pass = t["partner_pt"][:n] > 450, t["partner_pt"][n:] > 450
    assert rows.test_jets == n
    np.testing.assert_array_equal(rows.pairs[VARIANT_CODES["seed"]], np.flatnonzero(seed_pass))
    np.testing.assert_array_equal(rows.pairs[VARIANT_CODES["vincia"]], n + np.flatnonzero(vincia_pass))
    both = seed_pass & vincia_pass
    np.testing.assert_array_equal(rows.common, np.flatnonzero(both))
    np.testing.assert_array_equal(rows.common_partners[VARIANT_CODES["vincia"]], n + np.flatnonzero(both))
    assert rows.as_dict(codes) == {"nominal_test_jets": n, "selected_pairs": {"seed": int(seed_pass.sum()),
                                   "vincia": int(vincia_pass.sum())}, "jets_with_every_partner_selected": int(both.sum())}

    # the quantity compared is the jet pT itself (a "score" that follows the pT)
    score_nominal, score_partner = t["jet_pt"].astype(np.float64), partner_pt
    unselected = wasserstein_estimate_table(
        {"nominal": {"pT": score_nominal[t["pair_rank"] == 0]},
         "seed": {"pT": score_partner[t["variant"] == VARIANT_CODES["seed"]]}}, relative=True, n_resamples=20)
    assert unselected["seed"]["pT"].excess_significance > 10  # the selection, not the shower

    source = EmbeddingSource("fixed", "unused", run=RunKey("hbb", "fixed", 10, 0))
    embedding = np.stack([score_nominal, np.ones_like(score_nominal)], axis=1)
    partner_embedding = np.stack([score_partner, np.ones_like(score_partner)], axis=1)
    embeds = {source: {"nominal": embedding, "partner": partner_embedding,
                       "score_nominal": score_nominal, "score_partner": score_partner}}
    n2 = {"nominal": score_nominal, "partner": score_partner}
    _rows, _means, w1 = wasserstein_tables(config, t, n2, embeds, codes)
    seed, vincia = w1[source.run]["seed"]["score"], w1[source.run]["vincia"]["score"]
    assert abs(seed.excess_significance) < 3, seed  # the control: at the floor
    assert vincia.excess_significance > 5, vincia  # the 3 % response shift is still measured
    # relative W1 of a 3 % scale shift of pT ≈ 0.03 × mean / std of the selected nominal pT
    selected_nominal = score_nominal[rows.pairs[VARIANT_CODES["vincia"]]]
    assert vincia.value == pytest.approx(0.03 * selected_nominal.mean() / selected_nominal.std(), rel=0.25)
