"""Bad-input corpus: every broken or extreme input through the public entry points.

One table of inputs that must fail, each with the exception type and a message that names
the culprit (file, branch, field, value), and one table of extreme inputs with a documented
handling (dropped candidates, truncated constituent lists, ``None`` records), checked
against hand counts. The fastjet-dependent cases run in a subprocess so that a segfault
shows up as a return code instead of killing pytest. Per-area error tests that already exist
(``test_io``, ``test_nn_model_file``, ``test_inference_engine``, ``test_training_*``) are not
repeated here. See docs/reliability.md for the table in words.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import bad_inputs as corpus
import numpy as np
import pytest
import torch

from rs3l_coffea.coffea_processing.runner import check_file, run_fileset
from rs3l_coffea.errors import (
    ConfigError,
    InputFileError,
    MissingConstituentsError,
    ModelFormatError,
)
from rs3l_coffea.features import build_features, jet_observables
from rs3l_coffea.inference.engine import InferenceEngine
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.io import load_jets
from rs3l_coffea.nn import (
    DGCNNConfig,
    HeadConfig,
    ModelConfig,
    TransformerConfig,
    build_model,
    load_model,
    load_published_rs3l,
    save_model,
)
from rs3l_coffea.testing import sample_path
from rs3l_coffea.training.checkpoint import TrainingProgress, load_checkpoint, save_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
    pytest.mark.usefixtures("torch_one_thread"),
]

SMALL = ModelConfig(
    backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,)),
    heads=(HeadConfig("score"),),
)


@pytest.fixture(scope="module")
def small_model(save_small_model) -> Path:
    """A tiny saved DGCNN with one head: ``<dir>/small(.safetensors|.json)``."""
    return save_small_model(SMALL, seed=0)[0]


def copy_model(source: Path, target: Path) -> Path:
    """Copy a model pair to ``target`` (stem); return the stem."""
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(source.with_name(source.name + suffix), target.with_name(target.name + suffix))
    return target


def tag(model: Path) -> Callable[[Path], Any]:
    """Entry point: read a file and run the tagger over its jets."""

    def run(path: Path) -> Any:
        return RS3LTagger.load(model, threads=1)(*load_jets(path))

    return run


def process(model: Path) -> Callable[[Path], Any]:
    """Entry point: ``run_fileset`` (what ``rs3l process`` runs) with the tagging processor."""

    def run(path: Path) -> Any:
        from rs3l_coffea.processors import TaggingProcessor

        return run_fileset({"bad": [str(path)]}, TaggingProcessor(RS3LTagger.load(model, threads=1)))

    return run


def features_of(path: Path) -> Any:
    return build_features(*load_jets(path))


# ------------------------------------------------------------------------- inputs that must fail
# (id, make(dir) -> input path, entry(path, model) -> anything, exception, message regex)
ROOT_FAILURES = [
    ("truncated-delphes", lambda d: corpus.truncated_root(d, "delphes.root"), "load",
     InputFileError, r"cannot open .*truncated_delphes\.root as a ROOT file"),
    ("truncated-nanoaod-ttree", lambda d: corpus.truncated_copy(
        sample_path("nano_tt_v15.root"), d / "cut50.root", 0.5), "load",
     InputFileError, r"cannot read TTree 'Events' of .*cut50\.root"),
    ("truncated-nanoaod-baskets", lambda d: corpus.truncated_copy(
        sample_path("nano_tt_v15.root"), d / "cut70.root", 0.7), "load",
     InputFileError, r"cannot read the events in .*cut70\.root \(truncated or corrupt"),
    ("corrupt-zlib-basket", lambda d: corpus.corrupt_basket(d, "ZLIB"), "load",
     InputFileError, r"cannot read the events in .*corrupt_ZLIB\.root .*incorrect data check"),
    ("corrupt-basket-processor", lambda d: corpus.corrupt_basket(d, "ZLIB"), "process",
     InputFileError, r"cannot read the events in .*corrupt_ZLIB\.root"),
    ("corrupt-lzma-basket", lambda d: corpus.corrupt_basket(d, "LZMA"), "load",
     InputFileError, r"cannot read the events in .*corrupt_LZMA\.root"),
    ("zero-byte-runner", corpus.zero_byte_root, "check_file",
     InputFileError, r"zero\.root is empty \(0 bytes\)"),
    ("text-named-root", corpus.text_named_root, "load",
     InputFileError, r"cannot open .*not_root\.root as a ROOT file"),
    ("wrong-tree-name", corpus.wrong_tree_name, "load",
     InputFileError, r"wrong_tree\.root has no 'Delphes' or 'Events' TTree \(trees found: Tree\)"),
    ("wrong-tree-name-runner", corpus.wrong_tree_name, "check_file",
     InputFileError, r"wrong_tree\.root has no 'Delphes' or 'Events' TTree \(trees found: Tree\)"),
    ("no-candidates", lambda d: sample_path("nano_dy.root"), "tag",
     MissingConstituentsError, r"nano_dy\.root.*RS3L needs jet constituents"),
    ("missing-candidate-eta", corpus.pfnano_missing_branch, "load",
     InputFileError, r"collection 'PFCands' in .*no_PFCands_eta\.root cannot be built.*eta"),
    ("missing-candidate-pdgid", lambda d: corpus.pfnano_missing_branch(d, "PFCands_pdgId"), "load",
     InputFileError, r"PFCands\.pdgId missing in .*no_PFCands_pdgId\.root"),
    ("missing-association-jetidx", lambda d: corpus.pfnano_missing_branch(d, "FatJetPFCands_jetIdx"),
     "load", InputFileError, r"FatJetPFCands\.jetIdx missing in .*no_FatJetPFCands_jetIdx\.root"),
    ("association-out-of-range", corpus.pfnano_bad_association, "load",
     InputFileError, r"bad_association\.root has an out-of-range index in event 0 .*candidate index=7"),
    ("nan-jet-pt-features", corpus.pfnano_nan_jet, "features",
     InputFileError, r"jet 1 \(flattened order\) has invalid kinematics pt=.*nan"),
    ("nan-jet-pt-tagger", corpus.pfnano_nan_jet, "tag",
     InputFileError, r"jet 1 \(flattened order\) has invalid kinematics pt=.*nan"),
]


@pytest.mark.parametrize(
    ("make", "entry", "error", "match"),
    [pytest.param(*row[1:], id=row[0]) for row in ROOT_FAILURES],
)
def test_bad_root_input_raises_a_named_error(make, entry, error, match, tmp_path, small_model):
    path = make(tmp_path)
    call = {
        "load": load_jets,
        "check_file": check_file,
        "features": features_of,
        "tag": tag(small_model),
        "process": process(small_model),
    }[entry]
    with pytest.raises(error, match=match):
        call(path)


def _malicious(kind: str) -> Callable[[Path, Path, Path], Any]:
    """Entry points fed a pickle whose unpickling would create ``marker``."""

    def published(d: Path, marker: Path, model: Path) -> Any:
        return load_published_rs3l(corpus.malicious_pickle(d / "evil.pt", marker, kind))

    return published


def _malicious_checkpoint(d: Path, marker: Path, model: Path) -> Any:
    directory = save_checkpoint(d / "ckpt", build_model(SMALL), {"optimizer": {}}, TrainingProgress())
    corpus.malicious_pickle(directory / "training_state.pt", marker, "torch")
    return load_checkpoint(directory)


def _malicious_weights(entry: Callable[[Path], Any]) -> Callable[[Path, Path, Path], Any]:
    def run(d: Path, marker: Path, model: Path) -> Any:
        stem = copy_model(model, d / "evil")
        corpus.malicious_pickle(stem.with_name("evil.safetensors"), marker, "torch")
        return entry(stem)

    return run


def _renamed_root(d: Path, marker: Path, model: Path) -> Any:
    stem = copy_model(model, d / "renamed")
    corpus.renamed_file(sample_path("pfnano.root"), d / "renamed.safetensors")
    return load_model(stem)


def _truncated_weights(d: Path, marker: Path, model: Path) -> Any:
    stem = copy_model(model, d / "cut")
    weights = d / "cut.safetensors"
    corpus.truncated_copy(weights, weights.with_suffix(".tmp"), 0.5).replace(weights)
    return load_model(stem)


def _other_architecture(d: Path, marker: Path, model: Path) -> Any:
    """Weights of a transformer under the DGCNN's card."""
    other = build_model(ModelConfig(backbone=TransformerConfig(d_model=8, n_heads=2, n_layers=1,
                                                               dim_feedforward=8)))
    weights, _ = save_model(d / "transformer", other)
    stem = copy_model(model, d / "mixed")
    shutil.copyfile(weights, d / "mixed.safetensors")
    return load_model(stem)


def _other_architecture_published(d: Path, marker: Path, model: Path) -> Any:
    torch.save({"model": build_model(SMALL).backbone.state_dict()}, d / "ours.pt")
    return load_published_rs3l(d / "ours.pt")


def _feature_count_mismatch(d: Path, marker: Path, model: Path) -> Any:
    """A model expecting 12 features per particle fed the 15 RS3L features by the tagger."""
    narrow = ModelConfig(backbone=DGCNNConfig(input_dim=12, width=8, conv_layers=1, k=4, output_hidden=(8,)))
    save_model(d / "narrow", build_model(narrow))
    return tag(d / "narrow")(sample_path("pfnano.root"))


def _resume_other_architecture(d: Path, marker: Path, model: Path) -> Any:
    """``train(resume=True)`` where the last checkpoint holds another architecture's weights."""
    from rs3l_coffea.training.config import load_config
    from rs3l_coffea.training.ntuple import write_shards
    from rs3l_coffea.training.toy import toy_pair_rows
    from rs3l_coffea.training.trainer import train

    write_shards(toy_pair_rows(40, seed=1), d / "ntuple", shard_size=40)
    out = d / "run"
    save_checkpoint(out / "checkpoints", build_model(SMALL), {"optimizer": {}}, TrainingProgress())
    config = load_config(None, [
        f"data.files=[{d / 'ntuple'}]", f"out_dir={out}", "epochs=1", "data.batch_size=8",
        "progress=false", "threads=1",
        "model={backbone: {width: 16, k: 4, conv_layers: 1, output_hidden: [8], output_dim: 8}}",
    ])
    return train(config, resume=True)


def _card(edit: dict[str, Any], entry: str = "load") -> Callable[[Path, Path, Path], Any]:
    def run(d: Path, marker: Path, model: Path) -> Any:
        stem = copy_model(model, d / "edited")
        corpus.edited_card(d / "edited.json", edit)
        if entry == "tagger":
            return RS3LTagger.load(stem).engine
        return load_model(stem)

    return run


MODEL_FAILURES = [
    ("pickle-torchsave-published", _malicious("torch"), r"evil\.pt: not a loadable \(weights-only\)"),
    ("pickle-plain-published", _malicious("plain"), r"evil\.pt: not a loadable \(weights-only\)"),
    ("pickle-checkpoint-state", _malicious_checkpoint, r"checkpoint .*ckpt-e0000.* cannot be read"),
    ("pickle-as-safetensors-engine", _malicious_weights(InferenceEngine.from_path),
     r"evil\.safetensors: looks like a pickle.*refusing to unpickle"),
    ("pickle-as-safetensors-tagger", _malicious_weights(lambda s: RS3LTagger.load(s).engine),
     r"evil\.safetensors: looks like a pickle.*refusing to unpickle"),
    ("root-renamed-safetensors", _renamed_root, r"renamed\.safetensors: not a safetensors file"),
    ("truncated-safetensors", _truncated_weights, r"cut\.safetensors: unreadable safetensors file"),
    ("other-architecture-weights", _other_architecture,
     r"mixed\.safetensors: missing tensor 'backbone\.embed\.0\.weight'"),
    ("other-architecture-published", _other_architecture_published,
     r"ours\.pt: unexpected key 'embed\.0\.weight'"),
    ("other-architecture-resume", _resume_other_architecture,
     r"checkpoint .*ckpt-e0000.* does not fit the model"),
    ("card-negative-k", _card({"config.backbone.k": -3}), r"edited\.json: .*DGCNNConfig\.k must be a positive"),
    ("card-width-string", _card({"config.backbone.width": "wide"}), r"DGCNNConfig\.width .* got 'wide'"),
    ("card-backbone-string", _card({"config.backbone": "dgcnn"}, "tagger"),
     r"edited\.json: card field 'config\.backbone' must be a JSON object"),
    ("card-config-null", _card({"config": None}, "tagger"), r"card field 'config' must be a JSON object"),
    ("card-feature-names-null", _card({"feature_names": None}),
     r"card field 'feature_names' must be a JSON array"),
    ("card-head-names-contradict", _card({"head_names": ["other"]}),
     r"head_names \['other'\] differ from the heads of its config \['score'\]"),
    ("card-unknown-backbone", _card({"config.backbone.type": "gnn"}), r"backbone type 'gnn' is not one of"),
    ("card-future-version", _card({"format_version": 99}), r"card format_version 99"),
]


@pytest.mark.parametrize(
    ("action", "match"), [pytest.param(*row[1:], id=row[0]) for row in MODEL_FAILURES]
)
def test_bad_model_input_raises_model_format_error(action, match, tmp_path, small_model):
    marker = tmp_path / "UNPICKLED"
    with pytest.raises(ModelFormatError, match=match):
        action(tmp_path, marker, small_model)
    assert not marker.exists(), "a loader unpickled attacker-controlled data"


def test_feature_count_mismatch_between_data_and_model(tmp_path, small_model):
    with pytest.raises(ValueError, match=r"x has 15 features per particle; expected 12"):
        _feature_count_mismatch(tmp_path, tmp_path / "m", small_model)


def _plain_parquet(d: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pt": [1.0, 2.0]}), d / "plain.parquet")
    return d / "plain.parquet"


def _text_file(name: str, text: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_text(text)
        return d / name

    return make


OTHER_FAILURES = [
    ("parquet-without-rs3l-metadata", _plain_parquet, "features-parquet",
     InputFileError, r"plain\.parquet is not an rs3l features parquet"),
    ("text-named-parquet", _text_file("text.parquet", "nope"), "features-parquet",
     InputFileError, r"cannot read .*text\.parquet as parquet"),
    ("garbage-onnx", _text_file("garbage.onnx", "garbage" * 10), "onnx",
     ModelFormatError, r"garbage\.onnx: ONNX Runtime cannot load the model"),
    ("fileset-not-json", _text_file("fileset.json", "{not json"), "fileset",
     ConfigError, r"fileset .*fileset\.json is not a readable JSON file"),
    ("fileset-bad-entry", _text_file("fileset.json", '{"zh": 3}'), "fileset",
     ConfigError, r"dataset 'zh': files must be a list"),
    ("fileset-metadata-not-a-mapping", _text_file("fileset.json", '{"zh": {"files": ["a.root"], "metadata": 5}}'),
     "fileset", ConfigError, r"fileset .*fileset\.json: dataset 'zh': metadata: Input should be a valid dictionary \(got 5\)"),
    ("fileset-files-not-a-list", _text_file("fileset.json", '{"zh": {"files": 5}}'), "fileset",
     ConfigError, r"dataset 'zh': files: must be a list of paths or a \{path: tree\} mapping \(got 5\)"),
    ("fileset-without-files", _text_file("fileset.json", '{"zh": {"metadata": {}}}'), "fileset",
     ConfigError, r"dataset 'zh': files: Field required"),
    ("fileset-bad-object-path", _text_file("fileset.json", '{"zh": {"files": {"a.root": {"object_path": 3}}}}'),
     "fileset", ConfigError, r"dataset 'zh': files\.a\.root: object_path must be a tree name, got 3"),
]


@pytest.mark.parametrize(
    ("make", "entry", "error", "match"),
    [pytest.param(*row[1:], id=row[0]) for row in OTHER_FAILURES],
)
def test_other_bad_files_raise_a_named_error(make, entry, error, match, tmp_path):
    from rs3l_coffea.coffea_processing.runner import read_fileset
    from rs3l_coffea.features.pipeline import read_features_parquet

    call = {
        "features-parquet": read_features_parquet,
        "onnx": InferenceEngine.from_path,
        "fileset": read_fileset,
    }[entry]
    with pytest.raises(error, match=match):
        call(make(tmp_path))


def test_malicious_payload_really_runs_when_unpickled(tmp_path):
    """Control for the table above: the payload does create the marker when unpickled."""
    import pickle

    marker = tmp_path / "UNPICKLED"
    pickle.loads(corpus.malicious_pickle(tmp_path / "evil.pkl", marker).read_bytes())
    assert marker.exists()


# ------------------------------------------------------------------------- extreme inputs, handled
def _finite_records(tags: ak.Array) -> np.ndarray:
    """Embeddings and scores of the non-None records, as one float array."""
    flat = ak.flatten(tags, axis=1)
    present = flat[~ak.is_none(flat, axis=0)]
    embedding = np.asarray(ak.to_numpy(present.embedding), dtype=np.float64)
    score = np.asarray(ak.to_numpy(present.score), dtype=np.float64)
    return np.concatenate([embedding.reshape(-1), score])


def test_nonfinite_and_zero_pt_candidates_are_dropped(tmp_path, small_model):
    path = corpus.pfnano_nonfinite(tmp_path)
    jets, constituents = load_jets(path)
    # event 0: of 5 candidates only pT=40 is finite with pT > 0; event 1: both good; event 2: none
    assert ak.to_list(ak.num(constituents, axis=2)) == [[1], [2], []]
    np.testing.assert_array_equal(ak.flatten(constituents.pt, axis=None), [40.0, 35.0, 15.0])
    x, mask = build_features(jets, constituents)
    assert np.isfinite(x).all() and mask.sum(axis=1).tolist() == [1, 2]
    observables = jet_observables(jets, constituents)
    assert all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in observables.values())
    assert observables["valid"].tolist() == [False, True]  # one particle: no substructure
    tags = RS3LTagger.load(small_model, threads=1)(jets, constituents)
    assert ak.to_list(ak.num(tags)) == [1, 1, 0]
    assert np.isfinite(_finite_records(tags)).all()


def test_zero_and_more_than_max_particles(tmp_path, small_model):
    path = corpus.pfnano_multiplicities(tmp_path, counts=(0, 150, 1))
    jets, constituents = load_jets(path)
    assert ak.to_list(ak.num(constituents, axis=2)) == [[0], [150], [1]]
    x, mask = build_features(jets, constituents, max_particles=100)
    assert mask.sum(axis=1).tolist() == [0, 100, 1]
    assert not x[0].any() and np.isfinite(x).all()
    # the 100 kept particles are the leading ones in pT
    pt_sorted = np.sort(np.asarray(ak.to_numpy(constituents.pt[1, 0])))[::-1][:100]
    np.testing.assert_allclose(np.exp(x[1, :, 0]), pt_sorted, rtol=1e-6)
    tags = RS3LTagger.load(small_model, threads=1)(jets, constituents)
    assert ak.to_list(ak.num(tags)) == [1, 1, 1]
    assert ak.to_list(ak.is_none(tags, axis=1)) == [[True], [False], [False]]
    assert np.isfinite(_finite_records(tags)).all()


def test_events_without_jets(tmp_path, small_model):
    jets, constituents = load_jets(corpus.no_jets(tmp_path))
    assert ak.to_list(ak.num(jets)) == [0, 0, 0]
    x, mask = build_features(jets, constituents)
    assert x.shape == (0, 100, 15) and mask.shape == (0, 100)
    assert jet_observables(jets, constituents)["pt"].shape == (0,)
    tags = RS3LTagger.load(small_model, threads=1)(jets, constituents)
    assert ak.to_list(ak.num(tags)) == [0, 0, 0]
    assert tags.fields == ["embedding", "score"]


def test_truncated_file_reads_identically_when_needed_baskets_survive(tmp_path):
    """Documented handling: a cut that spares every basket RS3L reads gives the same jets as the
    intact file (uproot checks every basket it decompresses); any other cut is an error above."""
    intact = sample_path("nano_tt_v15.root")
    cut = corpus.truncated_copy(intact, tmp_path / "cut95.root", 0.95)
    jets, constituents = load_jets(cut)
    reference_jets, reference_constituents = load_jets(intact)
    assert ak.array_equal(jets, reference_jets)
    assert ak.array_equal(constituents, reference_constituents)


DANGEROUS = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import awkward as ak
    from rs3l_coffea.io import load_jets, recluster
    from rs3l_coffea.features import build_features, jet_observables

    jets, constituents = load_jets(sys.argv[1], recluster_radius=0.8)
    observables = jet_observables(jets, constituents)
    x, mask = build_features(jets, constituents)
    # recluster() itself, on raw candidates that still contain pT = 0 / eta = 999.9 / NaN
    raw = ak.zip({
        "pt": ak.Array([[30.0, 0.0, float("nan"), 25.0]]), "eta": ak.Array([[0.0, 999.9, 0.0, 0.05]]),
        "phi": ak.Array([[0.0, 0.0, 0.0, 0.02]]), "energy": ak.Array([[30.0, 0.0, 1.0, 25.1]]),
        "charge": ak.Array([[1, 1, 1, 1]]), "pdg_id": ak.Array([[211, 211, 211, 211]]),
        "d0": ak.Array([[0.0, 0.0, 0.0, 0.0]]), "dz": ak.Array([[0.0, 0.0, 0.0, 0.0]]),
    })
    raw_jets, raw_constituents = recluster(raw, 0.8, 1.0)
    print(json.dumps({
        "counts": ak.to_list(ak.num(constituents, axis=2)),
        "mask": mask.sum(axis=1).tolist(),
        "finite": bool(all(bool((abs(v.astype(float)) < float("inf")).all()) for v in observables.values())),
        "raw_counts": ak.to_list(ak.num(raw_constituents, axis=2)),
    }))
    """
)


def test_fastjet_never_sees_sentinel_tracks_subprocess(tmp_path):
    """pT = 0 / eta = 999.9 / NaN / inf tracks through reclustering and observables (fastjet):
    in a subprocess, so a segfault is a return code, not a dead test runner."""
    path = corpus.delphes_sentinel_tracks(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", DANGEROUS, str(path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode not in (-signal.SIGSEGV, 128 + signal.SIGSEGV), "fastjet segfaulted"
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # two good tracks + 2 photons + 2 neutral hadrons in one jet; event 1 is empty
    assert summary["counts"] == [[6], []]
    assert summary["mask"] == [6]
    assert summary["finite"]
    assert summary["raw_counts"] == [[2]]


def test_cli_failure_leaves_no_partial_output(tmp_path):
    """``rs3l features`` over a good and a truncated file: clean error, no output, no litter."""
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    good = corpus.pfnano_layout(tmp_path / "good.root")
    bad = corpus.truncated_root(tmp_path, "pfnano.root")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "features.parquet"
    result = CliRunner().invoke(app, ["features", str(good), str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert "truncated_pfnano.root" in "".join(result.output.split())  # rich wraps long lines
    assert list(out_dir.iterdir()) == []
