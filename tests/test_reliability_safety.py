"""Safe loading, enforced on the source tree: no code path may unpickle untrusted data; and safe
use of models at run time (a replaced model is reloaded, out-of-range jets are flagged, a bad
model is blamed as such by ``rs3l process``).

An AST scan of every Python file we ship or run (``rs3l_coffea/``, ``processors/``,
``benchmarks/``, ``analysis_examples/``) looks for calls that deserialise with pickle or run
code: ``pickle``/``cloudpickle``/``dill``/``joblib``/``marshal``/``shelve`` loads,
``pandas.read_pickle``, ``coffea.util.load`` (cloudpickle), ``torch.load`` without a literal
``weights_only=True``, ``numpy.load`` with ``allow_pickle=True``, ``yaml.load`` /
``yaml.unsafe_load`` / ``yaml.full_load``, ``torch.jit.load`` and the ``eval``/``exec``
builtins. Import aliases (``from pickle import loads as l``) are resolved. A finding fails
the test unless it is in :data:`ALLOWED` with a reason. The scanner itself is tested on
snippets, so a broken scanner cannot pass silently.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch

from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("rs3l_coffea", "processors", "benchmarks", "analysis_examples")

# Deserialisers that execute code from the data (pickle family) or are code execution.
FORBIDDEN = {
    "pickle.load", "pickle.loads", "pickle.Unpickler",
    "_pickle.load", "_pickle.loads",
    "cloudpickle.load", "cloudpickle.loads",
    "dill.load", "dill.loads",
    "joblib.load",
    "marshal.load", "marshal.loads",
    "shelve.open",
    "pandas.read_pickle",
    "coffea.util.load",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
    "torch.jit.load",
    "eval", "exec",
}
# Loaders that are safe only with a keyword set to a literal value.
CONDITIONAL = {
    "torch.load": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
}
CONDITIONAL_DEFAULT_SAFE = {"numpy.load"}  # numpy's default allow_pickle is False

# (path relative to the repository, qualified call) -> why it is acceptable
ALLOWED: dict[tuple[str, str], str] = {
    ("rs3l_coffea/coffea_processing/torch_wrapper.py", "torch.jit.load"): (
        "coffea's torch_wrapper contract: the user's own TorchScript file, loaded exactly as coffea's "
        "base class does, only onto the chosen device (documented in the module docstring)"
    ),
    ("benchmarks/gpu_check.py", "coffea.util.load"): (
        "reads back the .coffea file that the script itself wrote a moment earlier into its own "
        "temporary directory"
    ),
}


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, with the leading name resolved through imports."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _aliases(tree: ast.AST) -> dict[str, str]:
    aliases = {"np": "numpy", "pd": "pandas"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[tuple[int, str]]:
    """``[(line, qualified call)]`` of every unsafe deserialisation/exec call in ``source``."""
    tree = ast.parse(source, filename=filename)
    aliases = _aliases(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases)
        if name is None:
            continue
        if name in FORBIDDEN:
            findings.append((node.lineno, name))
        elif name in CONDITIONAL:
            keyword, safe_value = CONDITIONAL[name]
            given = {k.arg: k.value for k in node.keywords}
            value = given.get(keyword)
            if value is None:
                if name not in CONDITIONAL_DEFAULT_SAFE or None in given:  # **kwargs could set it
                    findings.append((node.lineno, f"{name} without {keyword}={safe_value}"))
            elif not (isinstance(value, ast.Constant) and value.value is safe_value):
                findings.append((node.lineno, f"{name} with {keyword}={ast.unparse(value)}"))
    return findings


def scanned_files() -> list[Path]:
    return sorted(
        path for top in SCANNED if (REPO / top).is_dir() for path in (REPO / top).rglob("*.py")
    )


def test_no_unsafe_deserialisation_in_the_source_tree():
    files = scanned_files()
    assert len(files) > 50  # the package really was found
    offending = []
    for path in files:
        relative = str(path.relative_to(REPO))
        for line, call in unsafe_calls(path.read_text(encoding="utf-8"), relative):
            if (relative, call.split(" ")[0]) not in ALLOWED:
                offending.append(f"{relative}:{line}: {call}")
    assert not offending, "unsafe loading (use safetensors / weights_only=True):\n" + "\n".join(offending)


def test_every_torch_load_in_the_package_is_weights_only():
    """The positive side: the two torch.load calls that exist are found and are weights-only."""
    seen = []
    for path in scanned_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _qualified(node.func, aliases) == "torch.load":
                weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
                assert isinstance(weights_only, ast.Constant) and weights_only.value is True
                seen.append(path.name)
    assert {"published.py", "checkpoint.py"} <= set(seen)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("import pickle\npickle.loads(b'')", "pickle.loads"),
        ("from pickle import loads as l\nl(b'')", "pickle.loads"),
        ("import cloudpickle as cp\ncp.load(f)", "cloudpickle.load"),
        ("from coffea.util import load\nload('x.coffea')", "coffea.util.load"),
        ("from coffea import util\nutil.load('x.coffea')", "coffea.util.load"),
        ("import joblib\njoblib.load('m.pkl')", "joblib.load"),
        ("import torch\ntorch.load('m.pt')", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('m.pt', weights_only=False)", "torch.load with weights_only=False"),
        ("import torch\ntorch.load('m.pt', **options)", "torch.load without weights_only=True"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "numpy.load with allow_pickle=True"),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "yaml.load"),
        ("import pandas as pd\npd.read_pickle('t.pkl')", "pandas.read_pickle"),
        ("eval('1 + 1')", "eval"),
    ],
)
def test_scanner_finds_unsafe_calls(snippet, expected):
    assert [call for _, call in unsafe_calls(snippet)] == [expected]


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('m.pt', map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load('a.npz')",
        "import numpy as np\nnp.load('a.npz', allow_pickle=False)",
        "import yaml\nyaml.safe_load(text)",
        "import pickle\nerror = pickle.UnpicklingError",
        "from safetensors.torch import load_file\nload_file('m.safetensors')",
        "import ast\nast.literal_eval('[1, 2]')",
        "model.eval()",
    ],
)
def test_scanner_accepts_safe_calls(snippet):
    assert unsafe_calls(snippet) == []


# --- models at run time: content identity of the cached engine, validity range, process checks --

SMALL = ModelConfig(backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,)), heads=(HeadConfig("score"),))


def _small_model(seed: int):
    torch.manual_seed(seed)
    return build_model(SMALL).eval()


def _scores(tags) -> np.ndarray:
    flat = ak.flatten(tags, axis=1)
    return np.asarray(ak.to_numpy(ak.fill_none(flat.score, np.nan)))


def test_a_model_replaced_with_its_mtime_preserved_is_reloaded(tmp_path, pfnano_jets):
    """``cp -p`` / ``rsync -a`` keep the mtime: the per-process engine cache must still notice."""
    from rs3l_coffea.inference.tagger import RS3LTagger

    jets, constituents = pfnano_jets
    stem = tmp_path / "model"
    save_model(stem, _small_model(1))
    old = RS3LTagger.load(stem, threads=1)
    before = _scores(old(jets, constituents))
    files = [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]
    stamps = [(f.stat().st_atime_ns, f.stat().st_mtime_ns) for f in files]

    save_model(tmp_path / "other", _small_model(2))
    for file, suffix in zip(files, (".safetensors", ".json"), strict=True):
        file.write_bytes((tmp_path / "other").with_suffix(suffix).read_bytes())  # in place: same inode
    for file, (atime, mtime) in zip(files, stamps, strict=True):
        os.utime(file, ns=(atime, mtime))
    assert [f.stat().st_mtime_ns for f in files] == [m for _, m in stamps]

    expected = _scores(RS3LTagger.load(tmp_path / "other", threads=1)(jets, constituents))
    valid = np.isfinite(expected)
    assert valid.sum() > 10 and not np.allclose(before[valid], expected[valid])
    for tagger in (RS3LTagger.load(stem, threads=1), old):  # a fresh (unpickled) copy and the old object
        np.testing.assert_allclose(_scores(tagger(jets, constituents))[valid], expected[valid], rtol=1e-6, atol=1e-7)


def test_in_range_flag_and_out_of_range_cutflow_follow_the_card(tmp_path, pfnano_jets):
    from rs3l_coffea.coffea_processing import analysis
    from rs3l_coffea.inference.tagger import RS3LTagger

    jets, constituents = pfnano_jets
    stem = tmp_path / "ranged"
    validity = {"pt_min": 300.0, "pt_max": None, "abs_eta_max": 1.5, "detector": "test"}
    save_model(stem, _small_model(3), {"validity_range": validity})
    tagger = RS3LTagger.load(stem, threads=1)
    assert tagger.fields == ("embedding", "score", "in_range")
    tags = tagger(jets, constituents)
    flat_tags = ak.flatten(tags, axis=1)
    tagged = ~np.asarray(ak.to_numpy(ak.is_none(flat_tags, axis=0)))
    pt = np.asarray(ak.to_numpy(ak.flatten(jets.pt)), dtype=np.float64)
    eta = np.asarray(ak.to_numpy(ak.flatten(jets.eta)), dtype=np.float64)
    expected = (pt >= 300.0) & (np.abs(eta) <= 1.5)
    assert 0 < expected[tagged].sum() < tagged.sum(), "the sample must have jets on both sides"
    in_range = np.asarray(ak.to_numpy(ak.fill_none(flat_tags.in_range, False)))
    np.testing.assert_array_equal(in_range[tagged], expected[tagged])

    table = analysis.jet_table(jets, constituents, tagger)
    counts = analysis.cutflow(jets, table)
    assert counts["out_of_range_tagged_jets"] == int((tagged & ~expected).sum())
    assert counts["tagged_jets"] == int(tagged.sum())
    # a card without a range adds no field and no count (nothing is claimed)
    save_model(tmp_path / "plain", _small_model(3))
    plain = RS3LTagger.load(tmp_path / "plain", threads=1)
    assert plain.fields == ("embedding", "score")
    assert "out_of_range_tagged_jets" not in analysis.cutflow(jets, analysis.jet_table(jets, constituents, plain))


def test_shipped_default_model_records_its_training_range():
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.nn.model_file import validity_range

    card = json.loads((REPO / "rs3l_coffea" / "data" / "models" / "default.json").read_text())
    assert card["validity_range"]["pt_min"] == 450.0 and card["validity_range"]["abs_eta_max"] == 1.5
    assert "rs3l_coffea.detector" in card["validity_range"]["detector"]
    tagger = RS3LTagger.default()
    assert tagger.validity is not None and "in_range" in tagger.fields
    from rs3l_coffea.nn.model_file import read_card

    assert validity_range(read_card(Path(tagger.model_path + ".json"))).describe().startswith("pT >= 450 GeV, |eta| <= 1.5")


@pytest.mark.parametrize("defect", ["nan-weight", "int-weights", "absurd-k"])
def test_rs3l_process_blames_a_bad_model_not_the_data_file(tmp_path, defect):
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app
    from rs3l_coffea.testing import sample_path

    stem = tmp_path / "bad"
    weights, card_path = save_model(stem, _small_model(4))
    state = load_file(str(weights))
    if defect == "nan-weight":
        state["backbone.embed.0.weight"][0, 0] = float("nan")
    elif defect == "int-weights":
        state = {name: tensor.to(torch.int8) for name, tensor in state.items()}
    else:
        card = json.loads(card_path.read_text())
        card["config"]["backbone"]["k"] = 10**9
        card_path.write_text(json.dumps(card))
    save_file(state, str(weights))
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"zh": [str(sample_path("pfnano.root"))]}))
    out = tmp_path / "out.coffea"
    result = CliRunner().invoke(app, ["process", str(fileset), "--model", str(stem), "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert "bad." in result.output and "Failed processing" not in result.output and "pfnano.root" not in result.output
    assert not out.exists()


def test_tagger_construction_checks_card_and_header_before_any_worker_runs(tmp_path):
    """The Python API path (``TaggingProcessor(RS3LTagger.load(...))`` in ``run_fileset``): a model
    with int8 weights or a card the weights do not fit fails when the tagger is made."""
    from safetensors.torch import load_file, save_file

    from rs3l_coffea.errors import ModelFormatError
    from rs3l_coffea.inference.tagger import RS3LTagger

    weights, card_path = save_model(tmp_path / "m", _small_model(5))
    state = load_file(str(weights))
    save_file({name: tensor.to(torch.int8) for name, tensor in state.items()}, str(weights))
    with pytest.raises(ModelFormatError, match=r"m\.safetensors: tensor '.*' has dtype I8"):
        RS3LTagger.load(tmp_path / "m")
    save_file(state, str(weights))
    card = json.loads(card_path.read_text())
    card["config"]["backbone"]["width"] = 16
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match=r"m\.safetensors: tensor 'backbone\.embed\.0\.weight' has shape"):
        RS3LTagger.load(tmp_path / "m")
