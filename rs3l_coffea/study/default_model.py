"""The shipped default model: re-scoring a classifier on a study's test ntuple, and exporting one
trained model of a finished study with a full model card (``rs3l report --export-model``)."""

from __future__ import annotations

import json
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


def _card(results: dict[str, Any], key: RunKey, row: Mapping[str, Any], this: dict[str, Any], test_dir: Path,
          trainer_config: dict[str, Any]) -> dict[str, Any]:
    study = results["reproduce"]["study"]
    return {
        "description": (
            f"RS3L {MODEL_TITLES[key.model]} fine-tuned tagger ({TASK_TITLES[key.task]}) from the study "
            f"'{results['name']}': DGCNN backbone pretrained contrastively (NT-Xent) on re-simulated "
            "Pythia8 jet pairs, then fine-tuned with a sigmoid head 'score' (1 = signal)."
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
            "report_row": {"model": row["model"], "auc": row["auc"], "rejection": row["rejection"]},
            "evaluation_command": (
                f"rs3l evaluate --model <this model stem> --test {test_dir} "
                f"(after `{results['command']}`)"
            ),
            "tolerance": "AUC within 1e-4 and rejections within 1e-3 relative (float32 inference; "
                         "the same jets and weights give the same scores up to summation order)",
        },
    }


def export_default_model(
    study_dir: PathLike,
    stems: PathLike | Sequence[PathLike],
    *,
    task: str = "hbb",
    model: str = "fixed",
    seed: int | None = None,
    size: int | None = None,
) -> list[Path]:
    """Save one fine-tuned model of a finished study with a full model card at each stem.

    Picks ``model`` (``fixed`` by default, the shipped default model; or ``floating``,
    ``supervised``) for ``task`` at the largest labelled size and the
    first seed unless given; the card records the architecture, feature order, preprocessing,
    training data and configuration, wall time, hardware, the report's metrics for this very
    model and for its row (mean ± std over seeds), and the command that reproduces them.
    """
    from rs3l_coffea.nn import load_model, save_model

    layout = StudyLayout(Path(study_dir))
    if not layout.results.is_file():
        raise InputFileError(f"{layout.results} does not exist: run the study first (rs3l report)")
    results = json.loads(layout.results.read_text())
    study = results["reproduce"]["study"]
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
    if isinstance(stems, str | os.PathLike):
        stems = [stems]
    written: list[Path] = []
    for stem in stems:
        Path(stem).parent.mkdir(parents=True, exist_ok=True)
        written += list(save_model(stem, network, new_card))
    return written
