"""The ``report`` stage: every table and figure from the cached stage outputs, ``report.md`` and
``results.json`` (through :func:`rs3l_coffea.evaluation.write_report`)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.evaluation import package_versions, write_report
from rs3l_coffea.study.config import TASK_SIGNALS, StudyConfig
from rs3l_coffea.study.figures import embedding_figures, roc_figures
from rs3l_coffea.study.layout import RunKey
from rs3l_coffea.study.stages import load_npz
from rs3l_coffea.study.tables import (
    data_numbers,
    data_sizes,
    expectation_checks,
    probe_tables,
    rejection_tables,
    selected_variant_rows,
    stage_groups,
    unchanged_rows_table,
    wasserstein_tables,
)
from rs3l_coffea.study.trainings import trainer_summary

if TYPE_CHECKING:
    from rs3l_coffea.study.run import StudyState


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_summary() -> dict[str, Any]:
    """Hardware facts recorded with the report."""
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def scale_line(config: StudyConfig) -> str:
    gen = config.generation
    events = ", ".join(f"{p} {n:,}" for p, n in gen.events.items())
    return (
        f"study '{config.name}': hard events {events}; variants {', '.join(gen.variants)} "
        f"(W sample: {', '.join(gen.ood_variants)}); pretraining {config.pretrain.epochs} epochs; "
        f"labelled sizes {config.split.labelled_sizes}; {len(config.classifier.seeds)} seeds per trained model; "
        f"{config.classifier.epochs} classifier epochs (at least {config.classifier.min_steps} steps); backbone {json.dumps(config.model)}; "
        f"{config.threads} CPU threads"
    )


def _class_names(task: str) -> dict[int, str]:
    signal = TASK_SIGNALS[task].replace("_", "→").replace("H→BB", "H→bb").replace("W→QQ", "W→qq")
    return {0: "QCD", 1: signal}


def _reproduce(state: StudyState, config_path: Path | None, command: str, commit: str) -> dict[str, Any]:
    config = state.config
    return {
        "command": command,
        "git_commit": commit,
        "config_file": str(config_path) if config_path else None,
        "seeds": {"generation": config.generation.seed, "pretraining": config.pretrain.seed,
                  "classifiers": list(config.classifier.seeds), "split_salt": config.split.salt,
                  "probes/anomaly/t-SNE": 0},
        "hardware": environment_summary(),
        "torch_threads": config.threads,
        "study": config.to_dict(),
        "trainer_configs": {
            "pretrain (resim)": trainer_summary(Path(state.pretrained["resim"]["model"]).parent),
        },
    }


def _optimizer_steps(state: StudyState) -> dict[RunKey, int]:
    """Optimizer steps of every trained classifier, from its stage's completion marker."""
    steps = {}
    for key in state.trained:
        marker = state.stages.marker(key.stage)
        if marker.is_file():
            steps[key] = int(json.loads(marker.read_text())["result"]["steps"])
    return steps


def build_report(state: StudyState, *, config_path: Path | None, command: str) -> tuple[Path, Path]:
    """Compute every table and figure from the cached stage outputs; write report.md + results.json."""
    from rs3l_coffea.training.config import VARIANT_NAMES

    report_start = time.perf_counter()
    config, layout = state.config, state.layout
    layout.plots.mkdir(parents=True, exist_ok=True)
    commit = git_commit()
    results: dict[str, Any] = {"name": config.name, "command": command, "git_commit": commit}
    extra_tables: dict[str, list[dict[str, Any]]] = {}

    rejection_rows, rejection_results, rocs = rejection_tables(
        config, layout, state.tests, state.trained, _optimizer_steps(state))
    results.update(rejection_results)
    if results["unchanged_between_sizes"]:
        extra_tables["Rejection rows that repeat the next smaller labelled size exactly"] = unchanged_rows_table(
            results["unchanged_between_sizes"])
    plots = roc_figures(config, layout.plots, rocs, results["n2_direction"])

    t = state.tests[state.embed_task]
    nominal = t["pair_rank"] == 0
    variant_names = {c: VARIANT_NAMES[c] for c in sorted({int(v) for v in np.unique(t["variant"]) if v >= 0})}
    n2 = load_npz(layout.n2_file(state.embed_task))
    embeds = {source: load_npz(layout.embed_file(source)) for source in state.embeddings}
    variant_rows = selected_variant_rows(config, t, list(variant_names))  # one selection for tables and figures
    wasserstein_rows, mean_rows, w_results = wasserstein_tables(config, t, n2, embeds, variant_names, variant_rows)
    compared = variant_rows.as_dict(variant_names)
    results["wasserstein_jets"] = compared
    results["wasserstein_relative"] = {
        source.name: {v: {q: e.as_dict() for q, e in row.items()} for v, row in w_results[source.run].items()}
        for source in embeds if source.run in w_results
    }
    if mean_rows:
        extra_tables["Wasserstein-1 summary (relative to the nominal std; mean over embedding dimensions; "
                     "± bootstrap uncertainty, floor = W1 of two samples of one distribution; per variant, the pairs "
                     "of the " f"{compared['nominal_test_jets']:,} nominal test jets whose partner passes the jet "
                     "selection too (" + ", ".join(f"{name} {n:,}" for name, n in compared["selected_pairs"].items())
                     + "): nominal and partner selected alike, the seed variant is the control)"] = mean_rows

    history = Path(state.pretrained["resim"]["model"]).parent / "metrics.csv"
    plots.update(embedding_figures(config, layout.plots, t, n2, embeds, variant_names,
                                   _class_names(state.embed_task), history, variant_rows))

    probe_rows, anomaly_rows = probe_tables(config, embeds, nominal, t["label"][nominal])
    extra_tables["Linear classifier test and kNN on frozen embeddings (H→bb vs QCD test jets, unit-normalised)"] = probe_rows
    results["probes"] = probe_rows
    if anomaly_rows:
        extra_tables["Anomaly detection: autoencoder on SM (H→bb + QCD) embeddings, W→qq as the anomaly"] = anomaly_rows
        results["anomaly"] = anomaly_rows

    checks = expectation_checks(config, results["rejection"], w_results)
    extra_tables["Physics expectations (as in the paper) checked against this run"] = checks
    results["expectations"] = checks
    results["data_sizes"] = data_sizes(state.gen_summary, state.split_summary)
    results["data"] = data_numbers(state.gen_summary, state.split_summary, config.classifier.tasks,
                                   config.split.labelled_sizes)

    report_wall = time.perf_counter() - report_start
    results["stage_wall_s"] = {**{name: round(wall, 2) for name, wall in state.stages.wall.items()},
                               "report": round(report_wall, 2)}
    extra_tables["Wall time per stage (summed over runs; per-run times in results.json)"] = stage_groups(
        state.stages, report_wall)
    total = sum(state.stages.wall.values()) + report_wall
    results["total_stage_wall_s"] = total
    reproduce = _reproduce(state, config_path, command, commit)
    results["reproduce"] = reproduce
    results["versions"] = package_versions()
    cls = config.classifier
    results["default_model_candidate"] = {
        task: {m: {str(size): state.trained.get(RunKey(task, m, size, cls.seeds[0]))
                   for size in config.split.labelled_sizes} for m in cls.models}
        for task in cls.tasks
    }
    with atomic_open(layout.results, "w") as handle:
        json.dump(results, handle, indent=1, default=_json_default)
    report = write_report(
        layout.report, rejection_rows, wasserstein_rows, plots=plots, config=reproduce,
        data_sizes=results["data_sizes"], wall_time_s=total, title=f"RS3L study report: {config.name}",
        notes=[f"Scale: {scale_line(config)}.", *list(config.notes)], extra_tables=extra_tables,
    )
    state.log(f"report: {report}")
    return report, layout.results
