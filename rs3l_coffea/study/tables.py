"""The study's tables: rejection, Wasserstein-1, probes, anomaly detection, expectations, data sizes.

Every function takes the cached stage outputs (through the layout) and returns plain rows for
:func:`rs3l_coffea.evaluation.write_report` and JSON-able records for ``results.json``. Results
are keyed by :class:`~rs3l_coffea.study.layout.RowKey` / :class:`RunKey`, never by their titles.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rs3l_coffea.evaluation import (
    RocCurve,
    W1Estimate,
    anomaly_detection,
    background_efficiency_at,
    background_rejection,
    clopper_pearson,
    knn_probe,
    linear_probe,
    rejection_row,
    roc_curve,
    wasserstein_estimate_table,
    wasserstein_rows,
)
from rs3l_coffea.evaluation.verdict import combine, quadrature, verdict
from rs3l_coffea.study.config import SIGNAL_EFFICIENCIES, TASK_TITLES, StudyConfig
from rs3l_coffea.study.layout import EmbeddingSource, RowKey, RunKey, StudyLayout
from rs3l_coffea.study.splits import nominal_jets
from rs3l_coffea.study.stages import Stages, load_npz


def unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


@dataclass(frozen=True)
class VariantRows:
    """Rows of a test ntuple that compare nominal and re-simulated jets without a selection bias.

    The ntuple selects the *nominal* jet (``split.selection``) and pairs it with whatever jet of
    each variant lies within ΔR < 0.4; the partner itself is not selected. Near the pT threshold
    that is regression to the mean: a quarter of the partners of a 450 GeV-selected nominal jet
    fall below 450 GeV even for the ``seed`` variant (same physics, new random numbers), so a
    nominal-vs-partner comparison measures the selection, not the shower. Here, per variant, a
    pair counts only when the partner passes the same selection; the variant's two samples are
    the nominal and the partner jets of those pairs, selected alike (as two independently
    selected samples would be). The ``seed`` variant is the control: its W1 must sit at the
    statistical floor. ``common`` are the rows of the jets whose partner passes in *every*
    variant: the same jets in every variant (for figures that share one nominal histogram).
    """

    pairs: dict[int, np.ndarray]  # variant code -> its rows whose partner passes the selection
    common: np.ndarray  # pair_rank == 0 rows of the jets whose partner passes in every variant
    common_partners: dict[int, np.ndarray]  # variant code -> those jets' partner rows
    test_jets: int  # nominal jets in the test set

    def as_dict(self, variant_names: Mapping[int, str]) -> dict[str, Any]:
        return {"nominal_test_jets": self.test_jets,
                "selected_pairs": {variant_names[c]: len(rows) for c, rows in self.pairs.items()},
                "jets_with_every_partner_selected": len(self.common)}


def selected_variant_rows(config: StudyConfig, t: Mapping[str, np.ndarray], variant_codes: Sequence[int]) -> VariantRows:
    """:class:`VariantRows` of a test ntuple: the pairs whose partner passes the study's selection."""
    from rs3l_coffea.features import JetSelection

    cuts = JetSelection.named(config.split.selection)
    kinematics = cuts.mask({"pt": t["partner_pt"], "mass": t["partner_mass"], "eta": t["partner_eta"]})
    passes = np.asarray(kinematics, dtype=bool) & (t["partner_mask"].sum(axis=1) >= cuts.min_constituents)
    pairs = {code: np.flatnonzero((t["variant"] == code) & passes) for code in variant_codes}
    _first, jet = nominal_jets(t)
    nominal_rows = np.flatnonzero(t["pair_rank"] == 0)
    complete = jet[nominal_rows]
    for rows in pairs.values():
        complete = np.intersect1d(complete, jet[rows])
    return VariantRows(
        pairs=pairs,
        common=nominal_rows[np.isin(jet[nominal_rows], complete)],
        common_partners={code: rows[np.isin(jet[rows], complete)] for code, rows in pairs.items()},
        test_jets=len(nominal_rows),
    )


def _mean_std_json(value: Any) -> dict[str, float]:
    return {"mean": float(value.mean), "std": float(value.std), "n": int(value.n), "n_infinite": int(value.n_infinite)}


def n2_direction(layout: StudyLayout, task: str) -> tuple[float, dict[str, Any]]:
    """The sign of the N2 score (signal-like = larger), chosen on labelled training jets."""
    n2_train = load_npz(layout.n2_file(task, labelled=True))
    auc_plus = roc_curve(n2_train["n2"], n2_train["label"] == 1).auc
    sign = 1.0 if auc_plus >= 0.5 else -1.0
    return sign, {"score": "N2" if sign > 0 else "-N2", "auc_of_plus_n2_on_labelled_training_jets": auc_plus,
                  "labelled_training_jets": len(n2_train["n2"])}


def rejection_tables(
    config: StudyConfig, layout: StudyLayout, tests: Mapping[str, Mapping[str, np.ndarray]],
    trained: Mapping[RunKey, str], steps: Mapping[RunKey, int] | None = None,
) -> tuple[list[Any], dict[str, Any], dict[RowKey, list[RocCurve]]]:
    """Rejection rows (N2 first, then every model and size), their JSON records and the ROCs.

    ``results["unchanged_between_sizes"]`` lists the rows that repeat the row of the next smaller
    labelled size (:func:`unchanged_between_sizes`; ``steps``: optimizer steps of each training).
    """
    cls = config.classifier
    rows_out: list[Any] = []
    results: dict[str, Any] = {"rejection": {}, "n2_direction": {}}
    rocs: dict[RowKey, list[RocCurve]] = {}
    run_rocs: dict[RunKey, RocCurve] = {}
    run_scores: dict[RunKey, np.ndarray] = {}
    for task in cls.tasks:
        t = tests[task]
        nominal = t["pair_rank"] == 0
        is_signal = t["label"][nominal] == 1
        sign, direction = n2_direction(layout, task)
        results["n2_direction"][task] = direction
        n2_key = RowKey(task, "n2", 0)
        rocs[n2_key] = [roc_curve(sign * load_npz(layout.n2_file(task))["nominal"][nominal], is_signal)]
        # (row, seeds behind it (None: the seedless N2 baseline), table row)
        keyed: list[tuple[RowKey, Sequence[int | None], Any]] = [(n2_key, [None], rejection_row(f"{n2_key.title} (score {direction['score']})", 0, rocs[n2_key],
                                                SIGNAL_EFFICIENCIES))]
        for size in config.split.labelled_sizes:
            for model in cls.models:
                row_key = RowKey(task, model, size)
                seeds = [s for s in cls.seeds if RunKey(task, model, size, s) in trained]
                for seed in seeds:
                    run = RunKey(task, model, size, seed)
                    run_scores[run] = load_npz(layout.score_file(run))["score"]
                    run_rocs[run] = roc_curve(run_scores[run], is_signal)
                rocs[row_key] = [run_rocs[RunKey(task, model, size, s)] for s in seeds]
                keyed.append((row_key, seeds, rejection_row(row_key.title, size, rocs[row_key], SIGNAL_EFFICIENCIES)))
        rows_out += [row for _key, _seeds, row in keyed]
        results["rejection"][task] = [_rejection_record(key, seeds, row, rocs[key]) for key, seeds, row in keyed]
    results["unchanged_between_sizes"] = unchanged_between_sizes(
        config.split.labelled_sizes, run_rocs, run_scores, steps or {})
    return rows_out, results, rocs


def _same_roc(a: RocCurve, b: RocCurve) -> bool:
    return (np.array_equal(a.signal_efficiency, b.signal_efficiency)
            and np.array_equal(a.background_efficiency, b.background_efficiency))


def unchanged_between_sizes(
    sizes: Sequence[int], rocs: Mapping[RunKey, RocCurve], scores: Mapping[RunKey, np.ndarray],
    steps: Mapping[RunKey, int],
) -> list[dict[str, Any]]:
    """Rows whose every seed has the same test ROC as at the next smaller labelled size.

    A row then repeats the smaller size's rejections and AUC exactly. This is what a few
    optimizer steps do to a linear head on a frozen backbone: Adam moves each weight by about the
    learning rate per step, the scores shift by ~1e-3, and no pair of test jets swaps order (the
    tiny study, 1 vs 2 steps). The records name the sizes, seeds, steps and the largest score shift
    so the report can say why instead of printing silently identical rows.
    """
    ordered = sorted(set(sizes))
    found: list[dict[str, Any]] = []
    models = dict.fromkeys((key.task, key.model) for key in rocs)
    for (task, model), (smaller, larger) in itertools.product(models, itertools.pairwise(ordered)):
        seeds = sorted(k.seed for k in rocs if (k.task, k.model, k.labelled_size) == (task, model, larger)
                       and RunKey(task, model, smaller, k.seed) in rocs)
        pairs = [(RunKey(task, model, smaller, seed), RunKey(task, model, larger, seed)) for seed in seeds]
        if not pairs or not all(_same_roc(rocs[a], rocs[b]) for a, b in pairs):
            continue
        shift = max(float(np.max(np.abs(scores[b] - scores[a]))) for a, b in pairs)
        found.append({
            "task": task, "model": model, "labelled_sizes": [smaller, larger], "seeds": seeds,
            "optimizer_steps": {str(size): [steps.get(RunKey(task, model, size, seed)) for seed in seeds]
                                for size in (smaller, larger)},
            "max_abs_score_shift": shift, "test_jets": int(rocs[pairs[0][1]].n_signal + rocs[pairs[0][1]].n_background),
        })
    return found


def unchanged_rows_table(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Report rows for :func:`unchanged_between_sizes` (one per repeated rejection row)."""
    rows = []
    for record in records:
        smaller, larger = record["labelled_sizes"]
        steps = record["optimizer_steps"]
        rows.append({
            "row": RowKey(record["task"], record["model"], larger).title,
            "labelled jets": f"{larger} repeats {smaller}",
            "seeds": ", ".join(str(s) for s in record["seeds"]),
            "optimizer steps": f"{_steps_text(steps[str(smaller)])} vs {_steps_text(steps[str(larger)])}",
            "largest score shift on test jets": record["max_abs_score_shift"],
            "why": f"same test ROC for every seed: the scores moved too little to reorder any of the "
                   f"{record['test_jets']} test jets; more steps (classifier.min_steps) or a larger "
                   f"{_LEARNING_RATE_KEYS.get(record['model'], 'classifier.lr')} separate the sizes",
        })
    return rows


_LEARNING_RATE_KEYS = {"fixed": "classifier.fixed_lr", "floating": "classifier.floating_lr"}


def _steps_text(steps: Sequence[int | None]) -> str:
    known = sorted({s for s in steps if s is not None})
    return "/".join(str(s) for s in known) if known else "?"


def background_efficiency_stats(rocs: Sequence[RocCurve], efficiency: float) -> dict[str, Any]:
    """Run-averaged ε_B (step rule) at ``efficiency`` with its standard uncertainty.

    ``uncertainty`` adds in quadrature half the 68% Clopper-Pearson width (test-set statistics;
    finite also when no background passes) and the standard error of the mean over runs.
    """
    values = np.array([background_efficiency_at(roc, efficiency) for roc in rocs])
    n_background = min(roc.n_background_effective for roc in rocs)
    mean = float(values.mean())
    low, high = clopper_pearson(mean * n_background, n_background)
    seed_error = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
    return {"mean": mean, "clopper_pearson_68": [low, high], "seed_standard_error": seed_error,
            "uncertainty": quadrature(0.5 * (high - low), seed_error)}


def _rejection_record(key: RowKey, seeds: Sequence[int | None], row: Any, rocs: Sequence[RocCurve]) -> dict[str, Any]:
    return {
        "model": row.model,
        "key": {"task": key.task, "model": key.model, "labelled_size": key.labelled_size},
        "labelled_size": row.labelled_size,
        "auc": _mean_std_json(row.auc),
        "auc_uncertainty": row.auc_uncertainty(),
        "auc_statistical": row.auc_statistical,
        "rejection": {f"{eff:g}": _mean_std_json(v) for eff, v in row.rejection.items()},
        "rejection_clopper_pearson_68": {f"{eff:g}": list(v) for eff, v in row.rejection_interval.items()},
        "background_efficiency": {f"{eff:g}": background_efficiency_stats(rocs, eff) for eff in row.rejection},
        "n_signal": min(roc.n_signal for roc in rocs),
        "n_background": row.n_background,
        "low_statistics": sorted(row.low_statistics),
        "per_seed": [
            {"seed": seed, "auc": roc.auc,
             "rejection": {f"{p.signal_efficiency:g}": p.rejection for p in background_rejection(roc, SIGNAL_EFFICIENCIES)}}
            for seed, roc in zip(seeds, rocs, strict=True) if seed is not None
        ],
    }


def find_row(entries: Sequence[Mapping[str, Any]], key: RowKey) -> Mapping[str, Any]:
    """The ``results.json`` rejection record of ``key``."""
    wanted = {"task": key.task, "model": key.model, "labelled_size": key.labelled_size}
    return next(e for e in entries if e["key"] == wanted)


def mean_estimate(estimates: Sequence[W1Estimate]) -> W1Estimate:
    """The mean of several W1s (the embedding dimensions); uncertainties averaged, not added in
    quadrature, because the dimensions of one embedding are correlated (the conservative choice)."""
    def mean(name: str) -> float:
        return float(np.mean([getattr(e, name) for e in estimates]))

    return W1Estimate(mean("value"), mean("uncertainty"), mean("floor"), mean("floor_spread"))


def wasserstein_tables(
    config: StudyConfig, t: Mapping[str, np.ndarray], n2: Mapping[str, np.ndarray],
    embeds: Mapping[EmbeddingSource, Mapping[str, np.ndarray]], variant_names: Mapping[int, str],
    rows: VariantRows | None = None,
) -> tuple[list[Any], list[dict[str, Any]], dict[RunKey, dict[str, dict[str, W1Estimate]]]]:
    """Relative W1 nominal vs each variant per embedding dimension, score and N2 (classifiers),
    each with its bootstrap uncertainty and statistical floor (``rs3l_coffea.evaluation.wasserstein``),
    on the pairs whose partner passes the jet selection too (``rows``; computed when not given:
    :func:`selected_variant_rows`)."""
    rows = rows or selected_variant_rows(config, t, list(variant_names))
    table_rows: list[Any] = []
    mean_rows: list[dict[str, Any]] = []
    w_results: dict[RunKey, dict[str, dict[str, W1Estimate]]] = {}
    for source, e in embeds.items():
        if source.run is None:
            continue
        table: dict[str, dict[str, W1Estimate]] = {}
        for code, name in variant_names.items():
            pair = rows.pairs[code]
            samples: dict[str, dict[str, np.ndarray]] = {}
            for side, which in (("nominal", "nominal"), (name, "partner")):
                vectors = unit(e[which][pair])
                quantities = {f"z{i}": vectors[:, i] for i in range(vectors.shape[1])}
                if f"score_{which}" in e:
                    quantities["score"] = e[f"score_{which}"][pair]
                quantities["N2"] = n2[which][pair]
                samples[side] = quantities
            table.update(wasserstein_estimate_table(samples, relative=True, n_resamples=config.evaluation.bootstrap,
                                                    seed=0))
        for variant, row in table.items():
            dims = mean_estimate([v for q, v in row.items() if q.startswith("z")])
            mean_rows.append({"model": source.name, "variant": variant, "mean relative W1 over z": dims.format(),
                              "excess over floor [σ]": dims.excess_significance,
                              "score": row["score"].format() if "score" in row else "-",
                              "N2": row["N2"].format()})
            table[variant] = {**row, "mean z": dims}
        w_results[source.run] = table
        table_rows += wasserstein_rows(source.name, table)
    return table_rows, mean_rows, w_results


def probe_tables(
    config: StudyConfig, embeds: Mapping[EmbeddingSource, Mapping[str, np.ndarray]], nominal: np.ndarray,
    labels_nominal: np.ndarray,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Linear / kNN probes on every frozen embedding, and the autoencoder anomaly AUC."""
    probe_rows, anomaly_rows = [], []
    for source, e in embeds.items():
        x = e["nominal"][nominal]
        lin = linear_probe(x, labels_nominal, seed=0, l2_normalize=True)
        knn = knn_probe(x, labels_nominal, k=config.evaluation.knn_k, seed=0, l2_normalize=True)
        probe_rows.append({"embedding": source.name, "logistic AUC": lin["logistic"].auc, "LDA AUC": lin["lda"].auc,
                           "logistic accuracy": lin["logistic"].accuracy, "kNN accuracy": knn.accuracy,
                           "train/test jets": f"{lin['logistic'].n_train}/{lin['logistic'].n_test}"})
        if "anomaly" in e:
            result = anomaly_detection(unit(x), unit(e["anomaly"]), epochs=config.evaluation.anomaly_epochs, seed=0)
            anomaly_rows.append({"embedding": source.name, "anomaly AUC (W→qq vs SM)": result.auc,
                                 "SM train jets": result.n_train, "SM test jets": result.n_test_background,
                                 "W→qq jets": result.n_test_anomaly})
    return probe_rows, anomaly_rows


def _check(expectation: str, case: str, measured: str, difference: float, uncertainty: float) -> dict[str, Any]:
    return {"expectation": expectation, "case": case, "measured": measured,
            "difference / σ": difference / uncertainty if uncertainty > 0 else float("nan"),
            "verdict": verdict(difference, uncertainty)}


def expectation_checks(
    config: StudyConfig, rejection: Mapping[str, Sequence[Mapping[str, Any]]],
    w_results: Mapping[RunKey, Mapping[str, Mapping[str, W1Estimate]]],
) -> list[dict[str, Any]]:
    """The paper's directions checked against this run: holds / does not hold / inconclusive
    (``rs3l_coffea.evaluation.verdict``, |difference| against 2 combined standard uncertainties)."""
    cls, sizes = config.classifier, config.split.labelled_sizes
    rows: list[dict[str, Any]] = []
    for task, entries in rejection.items():
        n2_eps = find_row(entries, RowKey(task, "n2", 0))["background_efficiency"]["0.5"]
        for model in cls.models:
            entry = find_row(entries, RowKey(task, model, max(sizes)))
            eps = entry["background_efficiency"]["0.5"]
            rows.append(_check(
                "network rejects QCD better than N2 (ε_B at ε_S=0.5, largest labelled size)", entry["model"],
                f"ε_B {eps['mean']:.3g} ± {eps['uncertainty']:.2g} vs N2 {n2_eps['mean']:.3g} ± {n2_eps['uncertainty']:.2g}",
                n2_eps["mean"] - eps["mean"], quadrature(n2_eps["uncertainty"], eps["uncertainty"])))
        if "floating" in cls.models and "supervised" in cls.models:
            for size in sizes:
                floating = find_row(entries, RowKey(task, "floating", size))
                supervised = find_row(entries, RowKey(task, "supervised", size))
                fa, sa = floating["auc"]["mean"], supervised["auc"]["mean"]
                fu, su = floating["auc_uncertainty"], supervised["auc_uncertainty"]
                rows.append(_check("RS3L floating better than supervised at the same labelled size (AUC)",
                                   f"{TASK_TITLES[task]}, {size} labelled jets",
                                   f"{fa:.4f} ± {fu:.4f} vs {sa:.4f} ± {su:.4f}", fa - sa, quadrature(fu, su)))
    rows += _stability_checks(w_results)
    return rows


#: What the stability check compares: the embedding (mean relative W1 over its dimensions) and
#: the classifier score, each between nominal and vincia jets.
_STABILITY_QUANTITIES: dict[str, str] = {"mean z": "mean relative W1 over embedding dims", "score": "relative W1 of the score"}


def _stability_checks(w_results: Mapping[RunKey, Mapping[str, Mapping[str, W1Estimate]]]) -> list[dict[str, Any]]:
    """The fixed RS3L backbone's embedding and score move less between nominal and vincia than
    every other classifier's (the paper's direction iii), one row per quantity."""
    from rs3l_coffea.study.layout import classifier_title

    alternative = "vincia"
    rows = []
    for quantity, description in _STABILITY_QUANTITIES.items():
        means = {key: table[alternative][quantity] for key, table in w_results.items()
                 if quantity in table.get(alternative, {})}
        fixed = next((key for key in means if key.model == "fixed"), None)
        if fixed is None or len(means) < 2:
            continue
        others = [key for key in means if key != fixed]
        differences = {k: means[k].value - means[fixed].value for k in others}
        errors = {k: quadrature(means[k].uncertainty, means[fixed].uncertainty) for k in others}
        rows.append({
            "expectation": f"fixed RS3L backbone moves less ({description}, nominal vs vincia) "
                           "than every other classifier",
            "case": "; ".join(f"{classifier_title(k)}: {v.format()}" for k, v in means.items()),
            "measured": "; ".join(f"{classifier_title(k)} minus fixed: {differences[k]:.3g}" for k in others),
            "difference / σ": min(differences[k] / max(errors[k], 1e-300) for k in others),
            "verdict": combine(verdict(differences[k], errors[k]) for k in others),
        })
    return rows


def data_numbers(gen_summary: Mapping[str, Any], split_summary: Mapping[str, Any], tasks: Sequence[str],
                 sizes: Sequence[int]) -> dict[str, Any]:
    """The data sizes of the study as numbers (``results.json["data"]``)."""
    pretrain = split_summary["pretrain"]
    return {
        "generated_hard_events": {p: int(s["events"]) for p, s in gen_summary.items()},
        "ntuple_rows": int(split_summary["rows_total"]),
        "pretraining": {"jets": pretrain["nominal_jets"], "pairs": pretrain["rows"],
                        "signal_jets": pretrain["signal_jets"], "background_jets": pretrain["background_jets"]},
        "test": {task: {"signal_jets": split_summary[f"test-{task}"]["signal_jets"],
                        "background_jets": split_summary[f"test-{task}"]["background_jets"],
                        "pairs": split_summary[f"test-{task}"]["rows"]} for task in tasks},
        "labelled": {task: {str(size): {"train_jets": split_summary[f"{task}-{size}"]["train_nominal_jets"],
                                        "val_jets": split_summary[f"{task}-{size}"]["val_nominal_jets"]}
                            for size in sizes} for task in tasks},
    }


def data_sizes(gen_summary: Mapping[str, Any], split_summary: Mapping[str, Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for process, summary in gen_summary.items():
        sizes[f"generated hard events {process} (x {len(summary['variants'])} variants: {', '.join(summary['variants'])})"] = summary["events"]
    sizes["ntuple rows (nominal jet x partner)"] = split_summary["rows_total"]
    for name, summary in split_summary.items():
        if isinstance(summary, Mapping):
            sizes[f"{name}: nominal jets (signal / QCD: {summary['signal_jets']} / {summary['background_jets']})"] = summary["nominal_jets"]
    return sizes


def stage_groups(stages: Stages, report_wall: float) -> list[dict[str, Any]]:
    """Stage wall times grouped: trainings by task and model, scoring and embedding together."""
    groups: dict[str, list[float]] = {}
    for name, wall in stages.wall.items():
        parts = name.split(":")
        if parts[0] == "train":
            key = f"train:{parts[1]}:{parts[2]} (all sizes and seeds)"
        elif parts[0] in ("score", "embed"):
            key = f"{parts[0]} (test-set inference)"
        else:
            key = name
        groups.setdefault(key, []).append(wall)
    rows = [{"stage": key, "runs": len(walls), "wall time [s]": round(sum(walls), 1)} for key, walls in groups.items()]
    rows.append({"stage": "report (metrics, figures)", "runs": 1, "wall time [s]": round(report_wall, 1)})
    return rows
