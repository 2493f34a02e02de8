"""Atomic outputs: a crash mid-write leaves the old file or the complete new one, never a part.

* SIGKILL of a writer process: the final path keeps its old content; the orphaned temporary
  is removed by the next write of the same path (``rs3l_coffea.atomic``).
* Each writer (generated ROOT files, feature parquet, ntuple shards, checkpoints, model
  files, processor outputs and skims, reports and plots) with its underlying write patched
  to put partial bytes on disk and then raise: the old file is byte-identical afterwards and
  no temporary is left.
* A static check that every file-writing call in the package sits inside an
  ``atomic_path``/``atomic_open`` block.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import bad_inputs
import pytest
import torch

from rs3l_coffea import atomic
from rs3l_coffea.atomic import atomic_open, atomic_path, stale_temporaries

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


class Crash(RuntimeError):
    """The injected failure."""


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name -> bytes)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if ".tmp" in p.name]


def partial_then_crash(write_position: int) -> Callable[..., None]:
    """A stand-in writer: puts a few bytes at its ``write_position``-th argument's path, raises."""

    def write(*args, **kwargs):
        Path(args[write_position]).write_bytes(b"partial output")
        raise Crash("injected crash mid-write")

    return write


# ------------------------------------------------------------------------- SIGKILL and clean-up
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from rs3l_coffea.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half of the new content")
        print("writing", flush=True)
        time.sleep(120)
    """
)


def test_sigkilled_writer_keeps_old_file_and_next_write_cleans_up(tmp_path):
    target = tmp_path / "result.parquet"
    target.write_bytes(b"old complete content")
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "writing"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old complete content"
    orphans = temporaries(tmp_path)
    assert len(orphans) == 1 and orphans[0].read_bytes() == b"half of the new content"
    assert stale_temporaries(target) == orphans
    # a temporary of a live writer (this process) and one of another host are left alone
    live = tmp_path / f".result.parquet.{atomic._host()}-{os.getpid()}.abc.tmp.parquet"
    remote = tmp_path / ".result.parquet.otherhost-1.abc.tmp.parquet"
    live.write_bytes(b"")
    remote.write_bytes(b"")
    with atomic_open(target, "wb") as handle:
        handle.write(b"new complete content")
    assert target.read_bytes() == b"new complete content"
    assert sorted(temporaries(tmp_path)) == sorted([live, remote])


def test_atomic_path_exception_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(Crash), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise Crash
    assert target.read_text() == "old" and temporaries(tmp_path) == []


# ------------------------------------------------------------------------- every writer
def _expect_old_state(directory: Path, write: Callable[[], object]) -> None:
    before = snapshot(directory)
    with pytest.raises(Crash):
        write()
    assert snapshot(directory) == before
    assert temporaries(directory) == []


def test_generated_root_file(tmp_path, monkeypatch):
    from rs3l_coffea.generation import GenerationConfig, generate
    from rs3l_coffea.generation.run import sidecar_path
    from rs3l_coffea.generation.writer import DelphesWriter

    config = GenerationConfig(process="zj", n_events=20, out_dir=tmp_path, variants=("nominal",),
                              seed=1, chunk_size=20, batch_size=10)
    (path,) = generate(config)
    sidecar_path(path).unlink()  # as if the previous run died before finishing the chunk
    monkeypatch.setattr("rs3l_coffea.generation.run.WRITE_EVENTS", 10)  # one write per batch
    original = DelphesWriter.write
    calls = []

    def crash_on_second_batch(self, collections):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("injected crash after the first batch was written")
        return original(self, collections)

    monkeypatch.setattr(DelphesWriter, "write", crash_on_second_batch)
    _expect_old_state(tmp_path, lambda: generate(config))
    assert len(calls) == 2  # it really crashed mid-file
    monkeypatch.setattr(DelphesWriter, "write", original)
    assert generate(config) == [path] and sidecar_path(path).is_file()  # the re-run completes it


def test_features_parquet(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from rs3l_coffea.features.pipeline import features_from_file, write_features_parquet

    result = features_from_file(bad_inputs.pfnano_layout(tmp_path / "in.root"))
    out = tmp_path / "features.parquet"
    write_features_parquet(out, result)
    monkeypatch.setattr(pq, "write_table", partial_then_crash(1))
    _expect_old_state(tmp_path, lambda: write_features_parquet(out, result))


def test_ntuple_shards(tmp_path, monkeypatch):
    import uproot

    from rs3l_coffea.training.ntuple import write_shards
    from rs3l_coffea.training.toy import toy_pair_rows

    rows = toy_pair_rows(30, seed=1)
    write_shards(rows, tmp_path, shard_size=10)
    original = uproot.writing.writable.WritableTree.extend
    calls = []

    def crash_in_second_shard(self, data):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("injected crash while filling shard 1")
        return original(self, data)

    monkeypatch.setattr(uproot.writing.writable.WritableTree, "extend", crash_in_second_shard)
    before = snapshot(tmp_path)
    with pytest.raises(Crash):
        write_shards(toy_pair_rows(30, seed=2), tmp_path, shard_size=10)
    after = snapshot(tmp_path)
    # shard 0 was replaced whole; shard 1, shard 2 and the ntuple.json index are the old files
    assert after.keys() == before.keys()
    assert after["shard_00000.root"] != before["shard_00000.root"]
    for name in ("shard_00001.root", "shard_00002.root", "ntuple.json"):
        assert after[name] == before[name], name
    assert temporaries(tmp_path) == []


def test_training_checkpoint(tmp_path, monkeypatch):
    from rs3l_coffea.nn import DGCNNConfig, ModelConfig, build_model
    from rs3l_coffea.training import checkpoint as ckpt

    model = build_model(ModelConfig(backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,))))
    first = ckpt.save_checkpoint(tmp_path, model, {"optimizer": {"lr": torch.tensor(1.0)}},
                                 ckpt.TrainingProgress(global_step=1))
    before = snapshot(tmp_path)
    monkeypatch.setattr(ckpt.torch, "save", partial_then_crash(1))
    with pytest.raises(Crash):
        ckpt.save_checkpoint(tmp_path, model, {"optimizer": {}}, ckpt.TrainingProgress(global_step=2))
    # last.json still names the complete first checkpoint, whose files are unchanged
    assert ckpt.checkpoint_dir(tmp_path) == first
    loaded = ckpt.load_checkpoint(first)
    assert loaded.progress.global_step == 1
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    # the interrupted checkpoint directory holds no partial file; the next save prunes it
    unreferenced = [k for k in after if k not in before]
    assert all(k.endswith("model.safetensors") for k in unreferenced)
    assert temporaries(tmp_path) == []


def test_model_files(tmp_path, monkeypatch):
    import safetensors.torch

    from rs3l_coffea.nn import DGCNNConfig, ModelConfig, build_model, load_model, save_model

    model = build_model(ModelConfig(backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,))))
    save_model(tmp_path / "m", model)
    monkeypatch.setattr(safetensors.torch, "save_file", partial_then_crash(1))
    _expect_old_state(tmp_path, lambda: save_model(tmp_path / "m", model))
    monkeypatch.undo()
    loaded, _ = load_model(tmp_path / "m")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_processor_output_and_skim(tmp_path, monkeypatch):
    import coffea.util

    from rs3l_coffea.coffea_processing import analysis
    from rs3l_coffea.coffea_processing.runner import save_output

    out = tmp_path / "out.coffea"
    save_output({"cutflow": {"a": 1}}, out)
    table = ak.Array([[{"pt": 1.0}], []])
    skim = analysis.write_skim(tmp_path / "skims" / "s.parquet", table)
    monkeypatch.setattr(coffea.util, "save", partial_then_crash(1))
    _expect_old_state(tmp_path, lambda: save_output({"cutflow": {"a": 2}}, out))
    monkeypatch.setattr(ak, "to_parquet", partial_then_crash(1))
    _expect_old_state(tmp_path, lambda: analysis.write_skim(skim, table))


def test_report_and_plots(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rs3l_coffea.evaluation.plots import save_figure
    from rs3l_coffea.evaluation.report import write_report

    write_report(tmp_path / "report.md", notes=["first"])
    figure, _ = plt.subplots()
    save_figure(figure, tmp_path / "roc", formats=("png",))

    def crash_before_rename(path):
        raise Crash(f"injected crash after {path} was written, before the rename")

    # the last step before the rename: the new content is complete on disk, yet not published
    monkeypatch.setattr(atomic, "_fsync_file", crash_before_rename)
    _expect_old_state(tmp_path, lambda: write_report(tmp_path / "report.md", notes=["second"]))
    monkeypatch.undo()
    monkeypatch.setattr(figure, "savefig", partial_then_crash(0))
    _expect_old_state(tmp_path, lambda: save_figure(figure, tmp_path / "roc", formats=("png",)))
    plt.close(figure)


# ------------------------------------------------------------------------- static check
WRITE_CALLS = {
    "open": "mode", "write_text": None, "write_bytes": None, "savefig": None, "save": None,
    "to_parquet": None, "write_table": None, "save_file": None, "recreate": None, "savez": None,
    "to_csv": None, "dump": None,
}
# (file, call) -> why it is atomic although not lexically inside an atomic block
ALLOWED = {
    ("rs3l_coffea/generation/writer.py", "recreate"):
        "DelphesWriter enters atomic_path and uproot.recreate on one ExitStack (LIFO close)",
    ("rs3l_coffea/testing.py", "open"): "writes into a staging directory renamed atomically",
    ("rs3l_coffea/coffea_processing/runner.py", "write_text"):
        "the skim marker goes into a fresh mkdtemp staging folder that _publish_skims renames "
        "into place",
}


def _is_write(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in WRITE_CALLS:
        return None
    if name == "open":
        mode = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None
        )
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "w" in mode.value):
            return None
    owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else None
    if name == "save" and owner not in (None, "torch", "np", "numpy", "util"):
        return None  # e.g. a method called save on some object: not a file write we know
    if name == "dump" and owner != "json":
        return None
    return name


def _inside_atomic_block(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call):
                    name = ast.unparse(call.func)
                    if name.split(".")[-1] in ("atomic_path", "atomic_open"):
                        return True
    return False


def test_every_package_write_is_inside_an_atomic_block():
    offending, seen = [], 0
    for path in sorted((REPO / "rs3l_coffea").rglob("*.py")) + sorted((REPO / "processors").rglob("*.py")):
        relative = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _is_write(node)
            if name is None:
                continue
            seen += 1
            if not _inside_atomic_block(node, parents) and (relative, name) not in ALLOWED:
                offending.append(f"{relative}:{node.lineno}: {ast.unparse(node.func)}")
    assert seen >= 10  # the check really looked at the writers
    assert not offending, "writes outside atomic_path/atomic_open:\n" + "\n".join(offending)


def test_static_check_flags_a_plain_write():
    tree = ast.parse("def f(p):\n    with open(p, 'w') as h:\n        h.write('x')\n")
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_write(n)]
    assert len(calls) == 1 and not _inside_atomic_block(calls[0], parents)
    tree = ast.parse("def f(p):\n    with atomic_path(p) as t, open(t, 'w') as h:\n        h.write('x')\n")
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_write(n)]
    assert len(calls) == 1 and _inside_atomic_block(calls[0], parents)



GENERATE = textwrap.dedent(
    """
    import sys
    from rs3l_coffea.generation import GenerationConfig, generate
    config = GenerationConfig(process="zj", n_events=400, out_dir=sys.argv[1], variants=("nominal",),
                              seed=4, chunk_size=200, batch_size=50)
    generate(config)
    """
)


def test_sigkilled_generation_resumes_without_litter(tmp_path):
    """``generate`` SIGKILLed while writing chunk 1: chunk 0 stays complete, chunk 1 has no file
    under its final name; re-running completes chunk 1, keeps chunk 0 and leaves no temporary."""
    from rs3l_coffea.generation import GenerationConfig, generate
    from rs3l_coffea.generation.run import sidecar_path

    process = subprocess.Popen([sys.executable, "-c", GENERATE, str(tmp_path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".zj_nominal_00001.root.*.tmp.root")):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "chunk 1 never started"
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    chunk0, chunk1 = tmp_path / "zj_nominal_00000.root", tmp_path / "zj_nominal_00001.root"
    assert chunk0.is_file() and sidecar_path(chunk0).is_file()
    assert not chunk1.exists() and not sidecar_path(chunk1).exists()
    assert len(temporaries(tmp_path)) == 1  # the killed writer's
    stamp = chunk0.stat().st_mtime_ns

    config = GenerationConfig(process="zj", n_events=400, out_dir=tmp_path, variants=("nominal",),
                              seed=4, chunk_size=200, batch_size=50)
    assert generate(config) == [chunk0, chunk1]
    assert chunk0.stat().st_mtime_ns == stamp
    assert json.loads(sidecar_path(chunk1).read_text())["n_events_written"] == 200
    assert temporaries(tmp_path) == []
