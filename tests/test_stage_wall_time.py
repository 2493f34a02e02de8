"""Stage wall time across sittings: a stage killed mid-way and resumed counts both sittings."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest


def _run_forever(stage_dir: str) -> None:
    from rs3l_coffea.study import stages

    stages.HEARTBEAT_S = 0.1
    stages.Stages(Path(stage_dir), lambda _m: None).run("generate:x", {"a": 1}, lambda: time.sleep(600))


def test_a_killed_sitting_adds_its_time_up_to_the_last_heartbeat(tmp_path: Path, monkeypatch) -> None:
    from rs3l_coffea.study import stages

    stage_dir = tmp_path / "stages"
    process = multiprocessing.get_context("spawn").Process(target=_run_forever, args=(str(stage_dir),))
    process.start()
    attempt = stage_dir / "generate__x.attempt.json"
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the first sitting has run ~1.5 s (several heartbeats)
        if attempt.is_file():
            note = json.loads(attempt.read_text())
            if note["alive"] - note["start"] >= 1.5:
                break
        time.sleep(0.05)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)  # no cleanup runs: the note stays as the last heartbeat left it
    process.join()
    first = json.loads(attempt.read_text())
    first_sitting = first["alive"] - first["start"]
    assert first_sitting >= 1.5
    assert not (stage_dir / "generate__x.json").exists()

    monkeypatch.setattr(stages, "HEARTBEAT_S", 0.1)
    log: list[str] = []
    result = stages.Stages(stage_dir, log.append).run("generate:x", {"a": 1}, lambda: time.sleep(0.3) or 7)
    assert result == 7
    marker = json.loads((stage_dir / "generate__x.json").read_text())
    assert marker["sittings"] == 2
    assert marker["wall_this_sitting_s"] == pytest.approx(0.3, abs=0.25)
    assert marker["wall_s"] == pytest.approx(first_sitting + marker["wall_this_sitting_s"], rel=1e-9)
    assert not attempt.exists()  # cleared once the stage is done
    assert "2 sittings" in log[-1]
    # a stage done in one sitting records exactly that
    stages.Stages(stage_dir, log.append).run("split", {}, lambda: None)
    single = json.loads((stage_dir / "split.json").read_text())
    assert single["sittings"] == 1 and single["wall_s"] == single["wall_this_sitting_s"]


def test_a_stage_that_raises_keeps_its_time_for_the_next_sitting(tmp_path: Path) -> None:
    from rs3l_coffea.study import stages

    def fail() -> None:
        time.sleep(0.2)
        raise RuntimeError("user error")

    with pytest.raises(RuntimeError):
        stages.Stages(tmp_path, lambda _m: None).run("pretrain:resim", {}, fail)
    stages.Stages(tmp_path, lambda _m: None).run("pretrain:resim", {}, lambda: None)
    marker = json.loads((tmp_path / "pretrain__resim.json").read_text())
    assert marker["sittings"] == 2 and marker["wall_s"] >= 0.2
