"""The shipped default model: package data, offline loading, finite outputs, card = committed report."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import awkward as ak
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "rs3l_coffea" / "data" / "models" / "default"
REPORT_RESULTS = REPO / "docs" / "report" / "results.json"


def test_shipped_model_has_one_copy_and_is_small() -> None:
    for suffix in (".safetensors", ".json"):
        assert PACKAGED.with_suffix(suffix).stat().st_size < 5 * 1024 * 1024
    # one source of truth: no second copy of the weights anywhere in the tree
    copies = [p for p in REPO.rglob("default.safetensors")
              if not {".venv", "scratch"} & set(p.relative_to(REPO).parts)]  # parts inside the checkout only
    assert copies == [PACKAGED.with_suffix(".safetensors")], copies


def test_default_tagger_loads_offline_and_gives_finite_outputs(coffea_sample, monkeypatch) -> None:
    from rs3l_coffea.inference import tagger as tagger_module
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.io import load_jets

    def no_network(*args, **kwargs):
        raise OSError("network access attempted while loading the default model")

    # Read the jets first: uproot's file reading opens a local socketpair for its event loop.
    jets, constituents = load_jets(coffea_sample("delphes.root"))
    monkeypatch.delenv("RS3L_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # The installed package-data copy is the first place RS3LTagger.default() looks.
    assert Path(tagger_module.default_model_candidates()[0]) == PACKAGED
    tagger = RS3LTagger.default(threads=1)
    assert tagger.model_path == str(PACKAGED.resolve())
    assert tagger.head_names == ("score",)
    tags = tagger(jets, constituents)  # loads the weights and runs the model with sockets blocked
    flat = ak.flatten(tags, axis=1)
    present = flat[~ak.is_none(flat, axis=0)]
    assert len(present) > 10
    embedding = np.asarray(ak.to_numpy(present.embedding))
    score = np.asarray(ak.to_numpy(present.score))
    assert embedding.shape == (len(present), tagger.embedding_dim)
    assert np.isfinite(embedding).all() and np.isfinite(score).all()
    assert ((score >= 0) & (score <= 1)).all()
    assert np.unique(np.round(score, 6)).size > 1  # not a constant output


def test_card_records_training_and_the_committed_report_metrics() -> None:
    from rs3l_coffea.features.names import FEATURE_NAMES
    from rs3l_coffea.nn.model_file import read_card

    card = read_card(PACKAGED.with_suffix(".json"))
    assert tuple(card.feature_names) == FEATURE_NAMES
    assert card.config["backbone"]["output_dim"] >= 2
    training = card.training
    for key in ("study_command", "study_config", "trainer_config", "data_sizes", "stage_wall_s",
                "hardware", "versions", "git_commit", "labelled_size", "seed"):
        assert key in training, key
    assert training["study_command"].startswith("rs3l report --config studies/")
    assert training["trainer_config"]["task"] in ("finetune", "supervised")
    # The card's metrics are the numbers the committed report wrote for this very model.
    results = json.loads(REPORT_RESULTS.read_text())
    from rs3l_coffea.study.config import MODEL_TITLES

    trainer = training["trainer_config"]
    model = "supervised" if trainer["task"] == "supervised" else trainer["finetune"]["mode"]
    row = next(r for r in results["rejection"]["hbb"]
               if r["labelled_size"] == training["labelled_size"] and r["model"].endswith(MODEL_TITLES[model]))
    if "selection" in card.metrics:  # exported with the stability rule: it chose this model
        assert card.metrics["selection"]["chosen"] == model
    this_seed = next(p for p in row["per_seed"] if p["seed"] == training["seed"])
    assert card.metrics["this_model"] == {"auc": this_seed["auc"], "rejection": this_seed["rejection"]}
    assert card.metrics["report_row"]["auc"] == row["auc"]
    assert "rs3l evaluate" in card.metrics["evaluation_command"]
    assert results["name"] == training["study"]
