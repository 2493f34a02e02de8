"""Worker loss: a dask worker process killed mid-run does not change the processor's result;
a killed ``rs3l generate`` parent takes its local worker processes with it.

A ``distributed.LocalCluster`` with 2 worker processes (1 thread each, nannies restart dead
workers) runs the RS3L :class:`TaggingProcessor` through ``processor.Runner`` with
``DaskExecutor`` (via :func:`rs3l_coffea.coffea_processing.runner.run_fileset`). The processor
SIGKILLs its own worker process the first time it meets one chosen chunk (a marker file
makes this happen exactly once, whichever worker gets the chunk). The scheduler reschedules
the lost task on a live worker; histograms, cutflow and skims must equal those of an
undisturbed in-process run.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import cloudpickle
import numpy as np
import pytest
import torch

from rs3l_coffea.coffea_processing.runner import run_fileset
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model
from rs3l_coffea.processors import TaggingProcessor

pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use"),
]

# The workers cannot import this test module: ship the processor class by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CHUNKSIZE = 13  # delphes.root (25 events): 2 chunks; pfnano.root (10 events): 1 chunk
KILL_AT = ("delphes", 13)  # (dataset, entry start) of the chunk whose first attempt dies


class WorkerKillingProcessor(TaggingProcessor):
    """:class:`TaggingProcessor` that kills its worker process once, on one chosen chunk."""

    def __init__(self, *args: Any, marker: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker

    def process(self, events: Any) -> dict[str, Any]:
        metadata = events.metadata
        chosen = (metadata["dataset"], int(metadata["entrystart"])) == KILL_AT
        if chosen and os.environ.get("RS3L_TEST_MAY_KILL") == "1":
            try:
                # O_EXCL: exactly one attempt, on whichever worker, creates the marker and dies.
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().process(events)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    config = ModelConfig(
        backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,)),
        heads=(HeadConfig("score"),),
    )
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(path, build_model(config))
    return path


def _processor(model_path: Path, marker: Path, skims: Path) -> WorkerKillingProcessor:
    # batch_invariant: records are bit-identical whatever process or chunk computes them (the
    # documented guarantee behind the exact histogram comparison)
    tagger = RS3LTagger.load(model_path, batch_invariant=True)
    return WorkerKillingProcessor(tagger, skim_dir=skims, marker=str(marker))


def _skims(directory: Path) -> dict[str, list]:
    return {
        str(p.relative_to(directory)): ak.to_list(ak.from_parquet(p))
        for p in sorted(directory.rglob("*.parquet"))
    }


def test_killed_worker_gives_the_undisturbed_result(model_path, coffea_sample, tmp_path):
    from coffea.processor import DaskExecutor
    from distributed import Client, LocalCluster

    fileset = {
        "delphes": [str(coffea_sample("delphes.root"))],
        "pfnano": [str(coffea_sample("pfnano.root"))],
    }
    marker = tmp_path / "killed.pid"
    reference = run_fileset(
        fileset, _processor(model_path, marker, tmp_path / "ref"), chunksize=CHUNKSIZE
    )
    assert not marker.exists()  # the in-process run never kills (RS3L_TEST_MAY_KILL unset here)

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"RS3L_TEST_MAY_KILL": "1", "OMP_NUM_THREADS": "1"},
    ) as cluster, Client(cluster) as client:
        before = set(client.run(os.getpid).values())
        disturbed = run_fileset(
            fileset,
            _processor(model_path, marker, tmp_path / "dask"),
            executor=DaskExecutor(client=client, status=False, retries=3),
            chunksize=CHUNKSIZE,
        )
        client.wait_for_workers(2, timeout=60)
        after = set(client.run(os.getpid).values())

    killed = int(marker.read_text())
    assert killed in before and killed not in after  # a worker really died and was replaced
    assert disturbed["cutflow"] == reference["cutflow"]
    assert disturbed["cutflow"]["delphes"]["events"] == 25
    assert set(disturbed["hists"]) == set(reference["hists"])
    for name, histogram in reference["hists"].items():
        np.testing.assert_array_equal(
            disturbed["hists"][name].values(flow=True), histogram.values(flow=True), err_msg=name
        )
    assert _skims(tmp_path / "dask") == _skims(tmp_path / "ref")
    assert not list((tmp_path / "dask").rglob(".*tmp*"))


def _generate_workers(parent: Any) -> list[Any]:
    """The parent's multiprocessing children: spawned pool workers and the resource tracker."""
    return [
        child for child in parent.children()
        if any("multiprocessing" in part for part in child.cmdline())
    ]


def _gone(process: Any) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited, not (yet) reaped by init
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_generate_workers_exit_when_the_parent_is_killed(tmp_path):
    """``kill -9`` of ``rs3l generate --workers 2`` mid-run: the workers (in Pythia, ~185 MB each)
    and the resource tracker exit within seconds instead of running on."""
    import subprocess
    import time

    psutil = pytest.importorskip("psutil")
    pytest.importorskip("pythia8mc")
    command = [
        sys.executable, "-c", "from rs3l_coffea.cli import main; main()", "generate",
        "--process", "zj", "--events", "40000", "--chunk-size", "10000", "--variants", "nominal",
        "--workers", "2", "--out", str(tmp_path / "out"),
    ]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[Any] = []
    try:
        handle = psutil.Process(parent.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = _generate_workers(handle)
            if sum("spawn_main" in " ".join(w.cmdline()) for w in workers) == 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("rs3l generate did not start its 2 worker processes within 60 s")
        time.sleep(2)  # let them get into Pythia
        assert not any(_gone(w) for w in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(_gone(w) for w in workers):
            time.sleep(0.2)
        alive = [w.pid for w in workers if not _gone(w)]
        assert not alive, f"processes {alive} outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for worker in workers:  # only on failure: do not leave them running after the test
            if not _gone(worker):
                worker.kill()
