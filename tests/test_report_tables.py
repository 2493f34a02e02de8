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
