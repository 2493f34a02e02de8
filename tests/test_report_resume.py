"""A killed ``rs3l report`` resumes where it stopped (issue 14: the at-scale study is run in sittings).

The CLI (two generation workers) is started in its own process and killed with SIGKILL (no
clean-up runs) once it has finished at least one generated chunk; its workers exit with it, the
rerun keeps the finished chunks, redoes the chunks that were in flight, and ends with exactly the
ntuples of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("pythia8mc")

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "resume",
    "threads": 1,
    "device": "cpu",
    "generation": {"events": {"zh_bb": 60, "zj": 30}, "variants": ["nominal", "fsr_up"],
                   "ood_variants": ["nominal"], "chunk_size": 15, "workers": 2, "eta_max": 1.5, "seed": 3},
    "pretrain": {"variants": ["fsr_up"], "symmetry_comparison": False},
    "classifier": {"tasks": ["hbb"]},
}


def _kill_after_first_chunk(config_path: Path, out: Path) -> None:
    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rs3l_coffea", "report", "--config", str(config_path), "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    first_chunk = out / "ntuple" / "zh_bb" / "chunk_00000"
    deadline = time.monotonic() + 240
    children = []
    try:
        while not first_chunk.is_dir():
            assert process.poll() is None, "rs3l report ended before its first chunk was finished"
            assert time.monotonic() < deadline, "no finished chunk after 240 s"
            time.sleep(0.05)
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the generation workers were not running"
        process.send_signal(signal.SIGKILL)  # the parent alone, as a kill -9 of the command would
        process.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"processes {[p.pid for p in alive]} outlived the killed rs3l report"
    finally:
        if process.poll() is None:
            process.kill()
        try:
            os.killpg(process.pid, signal.SIGKILL)  # only on failure: its own session, this test's processes
        except ProcessLookupError:
            pass
        process.wait()


@pytest.mark.slow
def test_killed_report_resumes_at_the_first_unfinished_chunk(tmp_path: Path) -> None:
    from rs3l_coffea.generation import GenerationConfig
    from rs3l_coffea.study import study_config_from_dict
    from rs3l_coffea.study.layout import StudyLayout
    from rs3l_coffea.study.run import StudyState, generate_stage
    from rs3l_coffea.study.samples import generate_to_ntuples
    from rs3l_coffea.study.splits import read_ntuple
    from rs3l_coffea.study.stages import Stages

    config_path = tmp_path / "resume.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    _kill_after_first_chunk(config_path, out)
    assert not (out / "stages" / "generate__zh_bb.json").exists()  # killed inside the stage
    finished = sorted(p.name for p in (out / "ntuple" / "zh_bb").iterdir() if not p.name.endswith(".partial"))
    assert finished and len(finished) < 4

    messages: list[str] = []
    config = study_config_from_dict(CONFIG)
    state = StudyState(config, StudyLayout(out), Stages(StudyLayout(out).stages, messages.append), messages.append)
    generate_stage(state)
    assert f"zh_bb: {len(finished)} of 4 chunks done before" in "\n".join(messages)
    redone = [m for m in messages if m.strip().startswith("zh_bb chunk")]
    assert len(redone) == 4 - len(finished)
    assert not list((out / "ntuple").rglob("*.partial")) and not list((out / "gen").rglob("*.root"))

    # The same rows as a run that was never interrupted.
    gen = config.generation
    reference = StudyLayout(tmp_path / "reference")
    for process, n_events in gen.events.items():
        generate_to_ntuples(
            GenerationConfig(process=process, n_events=n_events, out_dir=reference.gen / process,
                             variants=tuple(gen.variants), seed=gen.seed, chunk_size=gen.chunk_size,
                             eta_max=gen.eta_max),
            reference, selection=config.split.selection, shard_size=config.split.shard_size, workers=1,
            keep_root=False, log=lambda _m: None,
        )
    resumed, whole = read_ntuple(out / "ntuple"), read_ntuple(reference.ntuple)
    assert len(whole["variant"]) > 0
    for branch in whole:
        np.testing.assert_array_equal(resumed[branch], whole[branch], err_msg=branch)
