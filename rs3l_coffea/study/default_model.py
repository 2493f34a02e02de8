"""The shipped default model: re-scoring a classifier on a study's test ntuple, and exporting one
trained model of a finished study with a full model card (``rs3l report --export-model``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.study.config import MODEL_TITLES, SIGNAL_EFFICIENCIES, TASK_TITLES, PathLike
from rs3l_coffea.study.layout import RowKey, RunKey, StudyLayout
from rs3l_coffea.study.splits import read_ntuple
from rs3l_coffea.study.tables import find_row


def evaluate_model(model_path: PathLike, test_ntuple: PathLike, *, threads: int | None = None) -> dict[str, Any]:
    """Re-score a classifier on a held-out test ntuple (nominal jets, ``label`` 1 signal / 0 QCD).

    Returns ``{"auc", "rejection": {"0.3": ..., "0.5": ..., "0.7": ...}, "n_signal",
    "n_background"}``: the numbers a model card quotes, recomputed from scratch.
    """
    from rs3l_coffea.evaluation import background_rejection, roc_curve
    from rs3l_coffea.inference.engine import InferenceEngine
    from rs3l_coffea.nn import load_model

    rows = read_ntuple(Path(test_ntuple), ["features", "mask", "label", "pair_rank"])
    keep = (rows["pair_rank"] == 0) & (rows["label"] >= 0)
    model, _card = load_model(model_path)
    if not model.head_names:
        raise ConfigError(f"model {model_path} has no classification head to evaluate")
    _emb, scores = InferenceEngine(model, device="cpu", threads=threads).run(rows["features"][keep], rows["mask"][keep])
    is_signal = rows["label"][keep] == 1
    roc = roc_curve(scores[:, 0], is_signal)
    return {
        "auc": roc.auc,
        "rejection": {f"{p.signal_efficiency:g}": p.rejection for p in background_rejection(roc, SIGNAL_EFFICIENCIES)},
        "n_signal": int(is_signal.sum()),
        "n_background": int((~is_signal).sum()),
    }


def _validity_range(selection: str) -> dict[str, Any]:
    """The card's validity range: the kinematic cuts of the study's jet selection."""
    from rs3l_coffea.features import JetSelection

    cuts = JetSelection.named(selection)
    return {
        "pt_min": float(cuts.pt_min),
        "abs_eta_max": float(cuts.abs_eta_max),
        "detector": "rs3l_coffea.detector (parametric CMS-like, built-in); anti-kT R = 0.8 on its EFlow candidates",
    }


def _uncertainties(this: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """Statistical uncertainties of one model's test metrics: Hanley-McNeil on the AUC, 68 %
    Clopper-Pearson on the background efficiency (ε_B = 1 / rejection of ``n_background`` jets)."""
    from rs3l_coffea.evaluation.roc import auc_uncertainty, clopper_pearson

    n_signal, n_background = int(row["n_signal"]), int(row["n_background"])
    intervals = {}
    for eff, rejection in this["rejection"].items():
        passing = n_background / rejection if rejection and math.isfinite(rejection) else 0.0
        intervals[eff] = list(clopper_pearson(min(passing, n_background), n_background))
    return {
        "auc_hanley_mcneil": auc_uncertainty(this["auc"], n_signal, n_background),
        "background_efficiency_clopper_pearson_68": intervals,
        "n_signal": n_signal,
        "n_background": n_background,
    }


def _card(results: dict[str, Any], key: RunKey, row: Mapping[str, Any], this: dict[str, Any], test_dir: Path,
          trainer_config: dict[str, Any]) -> dict[str, Any]:
    study = results["reproduce"]["study"]
    if key.model == "supervised":
        origin = ("DGCNN trained from random initialisation on the labelled jets only (the study's supervised "
                  "baseline; its RS3L-pretrained rivals are compared in metrics.selection)")
    else:
        backbone = "frozen" if key.model == "fixed" else "fine-tuned with it"
        origin = ("DGCNN backbone pretrained contrastively (NT-Xent) on re-simulated Pythia8 jet pairs, then "
                  f"a head trained on the labelled jets (backbone {backbone})")
    return {
        "description": (
            f"{MODEL_TITLES[key.model]} tagger ({TASK_TITLES[key.task]}) from the study '{results['name']}': "
            f"{origin}; sigmoid head 'score' (1 = signal)."
        ),
        "preprocessing": {
            "features": "rs3l_coffea.features.build_features: the 15 FEATURE_NAMES per particle, "
                        "relative to the jet axis, leading-pT particles, zero-padded, boolean mask",
            "max_particles": 100,
            "jets": "anti-kT R = 0.8 reclustered from Delphes-layout EFlow candidates of the "
                    "parametric CMS-like detector (rs3l_coffea.detector)",
            "selection": f"JetSelection.named({study['split']['selection']!r})",
        },
        "validity_range": _validity_range(study["split"]["selection"]),
        "training": {
            "study": results["name"],
            "study_command": results["command"],
            "git_commit": results["git_commit"],
            "study_config": study,
            "trainer_config": trainer_config,
            "pretraining": results["reproduce"]["trainer_configs"],
            "labelled_size": key.labelled_size,
            "seed": key.seed,
            "data_sizes": results["data_sizes"],
            "stage_wall_s": results["stage_wall_s"],
            "total_study_wall_s": results["total_stage_wall_s"],
            "hardware": results["reproduce"]["hardware"],
            "versions": results["versions"],
        },
        "metrics": {
            "task": TASK_TITLES[key.task],
            "test_set": f"{test_dir} (nominal jets, fine-tuning pool test split): "
                        f"{row['n_background']} QCD jets",
            "this_model": {"auc": this["auc"], "rejection": this["rejection"]},
            "this_model_uncertainty": _uncertainties(this, row),
            "report_row": {"model": row["model"], "auc": row["auc"], "rejection": row["rejection"]},
            "evaluation_command": (
                f"rs3l evaluate --model <this model stem> --test {test_dir} "
                f"(after `{results['command']}`)"
            ),
            "tolerance": "AUC within 1e-4 and rejections within 1e-3 relative (float32 inference; "
                         "the same jets and weights give the same scores up to summation order)",
        },
    }


#: The shower change the default model must be stable under: the alternative shower model
#: (Vincia here, Herwig7 in the paper), the largest of the study's variations.
STABILITY_VARIANT = "vincia"


def choose_default_model(results: Mapping[str, Any], task: str = "hbb", *, efficiency: float = 0.5,
                         z: float = 2.0) -> dict[str, Any]:
    """The best fine-tuned network that is also as stable as the most stable one.

    Candidates: the fine-tuned networks (RS3L fixed, RS3L floating, supervised) of ``task`` at
    the study's largest labelled size. Stability: the relative W1 of the classifier **score**
    between nominal and :data:`STABILITY_VARIANT` jets, with its bootstrap uncertainty
    (``results["wasserstein_relative"]``, measured on the first seed). A candidate is *stable*
    when its W1 exceeds the smallest candidate W1 by at most ``z`` combined standard deviations.
    Among the stable candidates the one with the lowest background efficiency at
    ``ε_S = efficiency`` (mean over seeds) is chosen. Returns the rule, every candidate's numbers
    and the choice, which the model card records.
    """
    from rs3l_coffea.evaluation.verdict import quadrature
    from rs3l_coffea.study.layout import classifier_title

    study = results["reproduce"]["study"]
    size = max(study["split"]["labelled_sizes"])
    seed = study["classifier"]["seeds"][0]
    w1_tables = results.get("wasserstein_relative", {})
    key_eff = f"{efficiency:g}"
    candidates: list[dict[str, Any]] = []
    for row in results["rejection"].get(task, []):
        model = row["key"]["model"]
        if model == "n2" or row["labelled_size"] != size:
            continue
        title = classifier_title(RunKey(task, model, size, seed))
        table = w1_tables.get(title, {}).get(STABILITY_VARIANT)
        if table is None:
            raise InputFileError(
                f"results have no {STABILITY_VARIANT} W1 of {title!r}: the study measures stability for its "
                f"embedding task only (W1 tables: {sorted(w1_tables)})")
        efficiency_row = row["background_efficiency"][key_eff]
        candidates.append({
            "model": model,
            "title": title,
            "background_efficiency": efficiency_row["mean"],
            "background_efficiency_uncertainty": efficiency_row["uncertainty"],
            "auc": row["auc"]["mean"],
            "score_w1": table["score"]["w1"],
            "score_w1_uncertainty": table["score"]["uncertainty"],
            "score_w1_floor": table["score"]["floor"],
            "embedding_w1": table["mean z"]["w1"],
            "embedding_w1_uncertainty": table["mean z"]["uncertainty"],
        })
    if not candidates:
        raise InputFileError(f"results have no fine-tuned {task} model at labelled size {size}")
    steadiest = min(candidates, key=lambda c: c["score_w1"])
    for c in candidates:
        gap = c["score_w1"] - steadiest["score_w1"]
        c["score_w1_excess_over_steadiest_sigma"] = gap / max(
            quadrature(c["score_w1_uncertainty"], steadiest["score_w1_uncertainty"]), 1e-300)
        c["stable"] = c is steadiest or c["score_w1_excess_over_steadiest_sigma"] <= z
    chosen = min((c for c in candidates if c["stable"]), key=lambda c: c["background_efficiency"])
    return {
        "rule": (f"among the fine-tuned networks for {TASK_TITLES[task]} at {size} labelled jets, those whose "
                 f"score W1 (nominal vs {STABILITY_VARIANT}, relative, seed {seed}) exceeds the smallest one by "
                 f"at most {z:g} sigma are stable; the stable one with the lowest background efficiency at "
                 f"signal efficiency {key_eff} (mean over seeds) is chosen"),
        "task": task,
        "labelled_size": size,
        "seed": seed,
        "candidates": candidates,
        "chosen": chosen["model"],
    }


def export_default_model(
    study_dir: PathLike,
    stems: PathLike | Sequence[PathLike],
    *,
    task: str = "hbb",
    model: str = "auto",
    seed: int | None = None,
    size: int | None = None,
) -> list[Path]:
    """Save one fine-tuned model of a finished study with a full model card at each stem.

    Picks ``model`` for ``task``: ``auto`` (the default) applies :func:`choose_default_model`
    (the best network that is as stable across showers as the steadiest one) and records the
    rule and every candidate's numbers in the card; ``fixed``, ``floating`` or ``supervised``
    pick that one. The largest labelled size and the first seed are used unless given; the card records the architecture, feature order, preprocessing,
    training data and configuration, wall time, hardware, the report's metrics for this very
    model and for its row (mean ± std over seeds), and the command that reproduces them.
    """
    from rs3l_coffea.nn import load_model, save_model

    layout = StudyLayout(Path(study_dir))
    if not layout.results.is_file():
        raise InputFileError(f"{layout.results} does not exist: run the study first (rs3l report)")
    results = json.loads(layout.results.read_text())
    study = results["reproduce"]["study"]
    selection: dict[str, Any] | None = None
    if model == "auto":
        selection = choose_default_model(results, task)
        model = selection["chosen"]
    elif model not in MODEL_TITLES or model == "n2":
        raise ConfigError(f"model to export must be auto, fixed, floating or supervised, got {model!r}")
    key = RunKey(task, model, max(study["split"]["labelled_sizes"]) if size is None else size,
                 study["classifier"]["seeds"][0] if seed is None else seed)
    path = layout.model_file(key)
    if not path.is_file():
        raise InputFileError(f"study {layout.out} has no trained {model} model for task {task} at size "
                             f"{key.labelled_size}, seed {key.seed} ({path})")
    network, card = load_model(path)
    try:
        row = find_row(results["rejection"][task], RowKey(task, model, key.labelled_size))
        this = next(p for p in row["per_seed"] if p["seed"] == key.seed)
    except (KeyError, StopIteration):
        raise InputFileError(f"{layout.results} has no rejection record of {key}: re-run the study's report") from None
    new_card = _card(results, key, row, this, layout.test_data(task), card.training.get("config", {}))
    if selection is not None:
        new_card["metrics"]["selection"] = selection
    if isinstance(stems, str | os.PathLike):
        stems = [stems]
    written: list[Path] = []
    for stem in stems:
        Path(stem).parent.mkdir(parents=True, exist_ok=True)
        written += list(save_model(stem, network, new_card))
    return written
