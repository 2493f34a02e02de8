"""The whole chain on real generated events: generate → rs3l ntuple → pretrain → fine-tune → supervised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from typer.testing import CliRunner

pytest.importorskip("pythia8mc")

TINY = "model={backbone: {width: 16, k: 8, conv_layers: 1, output_hidden: [16], output_dim: 8}}"


@pytest.mark.slow
def test_generated_events_to_loadable_models(tmp_path: Path) -> None:
    from rs3l_coffea.cli import app
    from rs3l_coffea.generation import GenerationConfig, generate
    from rs3l_coffea.nn import load_model

    torch.set_num_threads(1)
    gen = tmp_path / "gen"
    for process in ("zh_bb", "zj"):
        generate(GenerationConfig(process=process, n_events=120, out_dir=gen, variants=("nominal", "seed", "fsr_up"),
                                  seed=3, chunk_size=120))
    runner = CliRunner()
    ntuple = tmp_path / "ntuple"
    result = runner.invoke(app, ["ntuple", "--in", str(gen / "*.root"), "--out", str(ntuple), "--shard-size", "40"])
    assert result.exit_code == 0, result.output
    rows = uproot.concatenate(f"{ntuple}/shard_*.root:rs3l", ["variant", "label", "jettype", "pair_delta_r",
                                                               "hard_event_id", "jet_pt"], library="np")
    # Both variants matched for most jets; signal (H->bb) and background both present.
    assert set(np.unique(rows["variant"])) >= {0, 1}
    assert (rows["variant"] >= 0).mean() > 0.8
    assert np.nanmax(rows["pair_delta_r"]) < 0.4
    assert {0, 1} <= set(np.unique(rows["label"]).tolist())
    assert (rows["jet_pt"] > 450).all()  # the "generated" selection

    common = ["--data", str(ntuple), "--batch-size", "8", "--quiet", "-s", "threads=1", "-s", TINY]
    pre = tmp_path / "pre"
    result = runner.invoke(app, ["train", "pretrain", "--out", str(pre), "--epochs", "2",
                                 "--augmentations", "seed,fsr_up", *common])
    assert result.exit_code == 0, result.output
    assert load_model(pre / "model.safetensors")[1].training["task"] == "pretrain"
    for mode in ("fixed", "floating"):
        out = tmp_path / mode
        result = runner.invoke(app, ["train", "finetune", "--mode", mode, "--backbone", str(pre / "model.safetensors"),
                                     "--out", str(out), "--epochs", "1", *common])
        assert result.exit_code == 0, result.output
        _model, card = load_model(out / "model.safetensors")
        assert card.head_names == ("score",) and card.training["config"]["finetune"]["mode"] == mode
    sup = tmp_path / "sup"
    result = runner.invoke(app, ["train", "supervised", "--out", str(sup), "--epochs", "1", *common])
    assert result.exit_code == 0, result.output
    model, _ = load_model(sup / "model.safetensors")
    scores = model(torch.zeros(2, 100, 15), torch.ones(2, 100, dtype=torch.bool))[1]
    assert scores.shape == (2, 1)
    assert (sup / "checkpoints" / "last.json").is_file() and (sup / "metrics.csv").is_file()
    # A bad option value is a clean error (exit 2), not a traceback.
    result = runner.invoke(app, ["train", "finetune", "--mode", "frozen", "--out", str(tmp_path / "x"), *common])
    assert result.exit_code == 2 and "fixed" in result.output
