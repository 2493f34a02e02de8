"""A training process killed with SIGKILL mid-epoch resumes with the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rs3l_coffea.training.config import load_config
from rs3l_coffea.training.ntuple import write_shards
from rs3l_coffea.training.toy import toy_pair_rows
from rs3l_coffea.training.trainer import train

OPTIONS = [
    "-s", "threads=1", "-s", "checkpoint_every=2", "-s", "data.shuffle_buffer=64", "-s", "data.step_size=80",
    "-s", "model={backbone: {width: 16, k: 8, conv_layers: 1, output_hidden: [16], output_dim: 8}}",
    "--epochs", "2", "--batch-size", "16", "--seed", "7",
]


def _overrides(ntuple: Path, out: Path) -> list[str]:
    pairs = [OPTIONS[i + 1] for i in range(0, 10, 2)]
    return [*pairs, f"data.files=[{ntuple}]", f"out_dir={out}", "epochs=2", "data.batch_size=16",
            "seed=7", "progress=false"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_epoch_then_resume(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ntuple = tmp_path / "ntuple"
    write_shards(toy_pair_rows(300, seed=3), ntuple, shard_size=100)
    out = tmp_path / "killed"
    command = [
        sys.executable, "-c", "from rs3l_coffea.cli import main; main()",
        "train", "pretrain", "--data", str(ntuple), "--out", str(out), "--quiet", *OPTIONS,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pointer = out / "checkpoints" / "last.json"
    deadline = time.monotonic() + 120
    try:
        while not pointer.is_file():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # it really died before finishing
    checkpoint = json.loads(pointer.read_text())["checkpoint"]
    state = json.loads((out / "checkpoints" / checkpoint / "state.json").read_text())
    assert state["global_step"] >= 2
    assert state["epoch"] == 0 and state["batches_in_epoch"] >= 2  # the resume point is mid-epoch

    reference = train(load_config(None, _overrides(ntuple, tmp_path / "reference")))
    resumed = train(load_config(None, _overrides(ntuple, out)), resume=True)
    assert len(reference.progress.step_losses) > state["global_step"]
    assert resumed.progress.step_losses == reference.progress.step_losses
    assert resumed.progress.history == reference.progress.history
