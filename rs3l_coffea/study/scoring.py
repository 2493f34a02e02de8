"""Scores, embeddings and N2 of the held-out test jets (the ``score:*``, ``embed:*``, ``n2`` stages).

N2 is computed from the test jets' stored constituents (fastjet's energy correlator on the
network's own inputs); its cut direction is chosen on labelled training jets, never on the test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs3l_coffea.study.config import StudyConfig
from rs3l_coffea.study.layout import EmbeddingSource, RunKey, StudyLayout
from rs3l_coffea.study.splits import nominal_jets, read_ntuple
from rs3l_coffea.study.stages import save_npz

TestSets = Mapping[str, Mapping[str, np.ndarray]]


def run_model(model_path: str | Path, x: np.ndarray, mask: np.ndarray, config: StudyConfig) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, head scores) of jets through the bounded-memory inference engine."""
    from rs3l_coffea.inference.engine import InferenceEngine
    from rs3l_coffea.nn import load_model

    model, _card = load_model(model_path)
    engine = InferenceEngine(model, device=config.device, threads=config.threads,
                             particle_budget=config.evaluation.particle_budget)
    return engine.run(x, mask)


N2_DEFINITION = "n2_groomed: beta 1 on the soft-drop (z_cut 0.1, beta 0) groomed jet, as CMS's n2b1"


def n2_from_features(features: np.ndarray, mask: np.ndarray, *, groomed: bool = True) -> np.ndarray:
    """N2 (``e3^(2)/(e2^(1))^2``, beta = 1) of jets given by their stored constituents.

    One definition; :func:`n2_both_from_features` gives both from one pass.

    ``groomed=True`` (the study's baseline): N2 of the soft-drop groomed jet, the definition of
    CMS's ``FatJet_n2b1`` that the RS3L paper compares with (docs/observables.md); jets whose
    groomed jet has < 3 particles get 0. ``groomed=False``: the ungroomed N2 (< 2 particles: 0).
    """
    groomed_n2, ungroomed_n2 = n2_both_from_features(features, mask)
    return groomed_n2 if groomed else ungroomed_n2


def n2_both_from_features(features: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(groomed, ungroomed)`` N2 of :func:`n2_from_features`, from one fastjet pass per jet.

    Constituents are rebuilt as massless four-vectors from ``log_pt``, ``deta``, ``dphi`` (the
    jet axis shift does not change the angular distances N2 uses) and handed to
    :func:`rs3l_coffea.features.jet_observables` (fastjet). Uses the same (at most
    ``MAX_PARTICLES`` leading) particles the networks see.
    """
    import awkward as ak
    import vector

    from rs3l_coffea.features import jet_observables
    from rs3l_coffea.features.names import FEATURE_INDEX

    vector.register_awkward()
    counts = mask.sum(axis=1)
    flat = features[mask]
    pt = np.exp(flat[:, FEATURE_INDEX["log_pt"]].astype(np.float64))
    eta = flat[:, FEATURE_INDEX["deta"]].astype(np.float64)
    phi = flat[:, FEATURE_INDEX["dphi"]].astype(np.float64)
    parts = ak.unflatten(
        ak.zip({"pt": pt, "eta": eta, "phi": phi, "mass": np.zeros_like(pt)}, with_name="Momentum4D"), counts
    )
    jets = ak.zip(
        {
            "px": ak.sum(parts.px, axis=1),
            "py": ak.sum(parts.py, axis=1),
            "pz": ak.sum(parts.pz, axis=1),
            "E": ak.sum(parts.E, axis=1),
        },
        with_name="Momentum4D",
    )
    observables = jet_observables(jets, parts)
    valid = np.asarray(observables["n2_groomed_valid"], dtype=bool)
    return (np.where(valid, np.asarray(observables["n2_groomed"], dtype=np.float64), 0.0),
            np.asarray(observables["n2"], dtype=np.float64))


def _n2_nominal_once(t: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(groomed, ungroomed)`` N2 of every row's nominal jet, each distinct jet computed once.

    A nominal jet appears on one row per re-simulated partner (same features on each), keyed by
    ``(hard_event_id, jet_index)``; the per-jet values are spread back to the rows.
    """
    first, jet_of_row = nominal_jets(t)
    groomed, ungroomed = n2_both_from_features(t["features"][first], t["mask"][first])
    return groomed[jet_of_row], ungroomed[jet_of_row]


def compute_n2(config: StudyConfig, layout: StudyLayout, tests: TestSets) -> dict[str, Any]:
    """N2 of every test jet and partner, and of the largest labelled set's training jets.

    ``nominal``/``partner``/``n2`` hold the baseline (groomed) N2; ``*_ungroomed`` the ungroomed one.
    """
    from rs3l_coffea.training.dataset import assign_split

    sp = config.split
    largest = max(sp.labelled_sizes)
    for task, t in tests.items():
        nominal, nominal_ungroomed = _n2_nominal_once(t)
        partner, partner_ungroomed = n2_both_from_features(t["partner_features"], t["partner_mask"])
        save_npz(layout.n2_file(task), nominal=nominal, partner=partner,
                 nominal_ungroomed=nominal_ungroomed, partner_ungroomed=partner_ungroomed)
        # The N2 cut direction is chosen on labelled training jets, never on the test set.
        labelled = read_ntuple(layout.labelled_data(task, largest),
                               ["features", "mask", "label", "pair_rank", "hard_event_id"])
        _pool, split = assign_split(labelled["hard_event_id"], sp.pretrain_fraction, sp.val_fraction,
                                    sp.test_fraction, sp.salt)
        train_rows = (labelled["pair_rank"] == 0) & (split == "train")
        save_npz(layout.n2_file(task, labelled=True),
                 n2=n2_from_features(labelled["features"][train_rows], labelled["mask"][train_rows]),
                 label=labelled["label"][train_rows])
    return {"tasks": list(tests), "definition": N2_DEFINITION}


def score_test_set(config: StudyConfig, layout: StudyLayout, tests: TestSets, key: RunKey, path: str) -> dict[str, Any]:
    """The head score of ``key``'s model on its task's nominal test jets."""
    t = tests[key.task]
    nominal = t["pair_rank"] == 0
    _emb, scores = run_model(path, t["features"][nominal], t["mask"][nominal], config)
    save_npz(layout.score_file(key), score=scores[:, 0])
    return {"n": int(nominal.sum())}


def random_model(config: StudyConfig, stem: Path) -> str:
    """A randomly initialised backbone (seed 0): the representation baseline of the probes."""
    import dataclasses

    import torch

    from rs3l_coffea.nn import build_model, save_model
    from rs3l_coffea.nn.config import ModelConfig

    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        torch.manual_seed(0)
        model_config = dataclasses.replace(ModelConfig.from_dict(config.model), heads=(), lora=None)
        save_model(stem, build_model(model_config), {"description": "random initialisation (seed 0)"})
    return str(weights)


def embed_test_set(
    config: StudyConfig, layout: StudyLayout, tests: TestSets, embed_task: str, source: EmbeddingSource
) -> dict[str, Any]:
    """Embeddings (and head scores) of the nominal and partner test jets, and of the W jets."""
    t = tests[embed_task]
    model_path = random_model(config, layout.eval / "random-init") if source.path is None else source.path
    emb, score = run_model(model_path, t["features"], t["mask"], config)
    emb_p, score_p = run_model(model_path, t["partner_features"], t["partner_mask"], config)
    arrays = {"nominal": emb, "partner": emb_p}
    if score.shape[1]:
        arrays.update(score_nominal=score[:, 0], score_partner=score_p[:, 0])
    if "wqq" in tests and embed_task != "wqq":
        w = tests["wqq"]
        w_nominal = (w["pair_rank"] == 0) & (w["label"] == 1)
        arrays["anomaly"] = run_model(model_path, w["features"][w_nominal], w["mask"][w_nominal], config)[0]
    save_npz(layout.embed_file(source), **arrays)
    return {"name": source.name}
