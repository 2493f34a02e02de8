"""The default-model rule on constructed study results: the best network that is as stable as the steadiest."""

from __future__ import annotations

from typing import Any

import pytest

from rs3l_coffea.errors import InputFileError


def _results(models: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """Study results with ``model -> (ε_B at ε_S = 0.5, score W1 vs vincia, its uncertainty)``."""
    rows: list[dict[str, Any]] = [
        {"key": {"task": "hbb", "model": "n2", "labelled_size": 0}, "labelled_size": 0,
         "background_efficiency": {"0.5": {"mean": 0.01, "uncertainty": 0.001}}, "auc": {"mean": 0.99}},
    ]
    w1: dict[str, Any] = {}
    titles = {"fixed": "RS3L fixed", "floating": "RS3L floating", "supervised": "supervised"}
    for model, (eff, score_w1, error) in models.items():
        for size, scale in ((100, 3.0), (1000, 1.0)):
            rows.append({"key": {"task": "hbb", "model": model, "labelled_size": size}, "labelled_size": size,
                         "background_efficiency": {"0.5": {"mean": eff * scale, "uncertainty": 0.001}},
                         "auc": {"mean": 0.9}})
        entry = {"w1": score_w1, "uncertainty": error, "floor": 0.001}
        w1[f"{titles[model]} (N=1000, seed 7)"] = {"vincia": {"score": entry, "mean z": entry}}
    return {"reproduce": {"study": {"split": {"labelled_sizes": [100, 1000]}, "classifier": {"seeds": [7, 8]}}},
            "rejection": {"hbb": rows}, "wasserstein_relative": w1}


def test_best_stable_model_is_chosen_and_unstable_better_one_is_not() -> None:
    from rs3l_coffea.study import choose_default_model

    # supervised rejects best but moves 10 sigma more than the steadiest (fixed): not stable.
    # floating moves 1 sigma more than fixed (stable) and rejects better than fixed: chosen.
    choice = choose_default_model(_results({
        "fixed": (0.030, 0.010, 0.002),
        "floating": (0.020, 0.0128, 0.002),
        "supervised": (0.010, 0.0383, 0.002),
    }))
    by_model = {c["model"]: c for c in choice["candidates"]}
    assert choice["chosen"] == "floating"
    assert choice["labelled_size"] == 1000 and choice["seed"] == 7
    assert by_model["fixed"]["stable"] and by_model["floating"]["stable"] and not by_model["supervised"]["stable"]
    assert by_model["floating"]["score_w1_excess_over_steadiest_sigma"] == pytest.approx(0.0028 / (2 ** 0.5 * 0.002))
    assert by_model["supervised"]["background_efficiency"] == pytest.approx(0.010)  # the largest size's row
    assert "vincia" in choice["rule"] and "2 sigma" in choice["rule"]


def test_when_all_are_equally_stable_the_best_rejection_wins() -> None:
    from rs3l_coffea.study import choose_default_model

    choice = choose_default_model(_results({
        "fixed": (0.030, 0.010, 0.005), "floating": (0.020, 0.011, 0.005), "supervised": (0.010, 0.012, 0.005),
    }))
    assert choice["chosen"] == "supervised"
    assert all(c["stable"] for c in choice["candidates"])


def test_missing_stability_measurement_is_an_error_naming_the_model() -> None:
    from rs3l_coffea.study import choose_default_model

    results = _results({"fixed": (0.03, 0.01, 0.002)})
    results["wasserstein_relative"] = {}
    with pytest.raises(InputFileError, match="RS3L fixed"):
        choose_default_model(results)


def test_stability_check_compares_embedding_and_score_of_fixed_with_every_other() -> None:
    from rs3l_coffea.evaluation.wasserstein import W1Estimate
    from rs3l_coffea.study.layout import RunKey
    from rs3l_coffea.study.tables import _stability_checks

    def table(embedding: float, score: float) -> dict[str, dict[str, W1Estimate]]:
        return {"vincia": {"mean z": W1Estimate(embedding, 0.002, 0.001, 0.0005),
                           "score": W1Estimate(score, 0.002, 0.001, 0.0005)}}

    fixed, supervised = RunKey("hbb", "fixed", 1000, 0), RunKey("hbb", "supervised", 1000, 0)
    # embedding: fixed moves 0.01, supervised 0.05 (difference 14 sigma): holds;
    # score: fixed moves 0.05, supervised 0.01: does not hold.
    rows = _stability_checks({fixed: table(0.01, 0.05), supervised: table(0.05, 0.01)})
    assert [r["verdict"] for r in rows] == ["holds", "does not hold"]
    assert "embedding" in rows[0]["expectation"] and "score" in rows[1]["expectation"]
    assert rows[0]["difference / σ"] == pytest.approx(0.04 / (2 ** 0.5 * 0.002))
    # within the uncertainties: inconclusive
    rows = _stability_checks({fixed: table(0.010, 0.010), supervised: table(0.012, 0.009)})
    assert [r["verdict"] for r in rows] == ["inconclusive", "inconclusive"]
