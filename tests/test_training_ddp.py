"""DDP (gloo, 2 CPU processes): one step equals the single-process step on the global batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rs3l_coffea.training.config import load_config
from rs3l_coffea.training.partners import resim_partner
from rs3l_coffea.training.trainer import TrainingView, World, classification_loss, contrastive_loss

TINY = {"backbone": {"width": 16, "k": 6, "conv_layers": 1, "output_hidden": [16], "output_dim": 8}}
N_PAIRS = 8  # global batch; each of the 2 ranks holds 4 pairs


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    mask = torch.rand(N_PAIRS, 20, generator=g) < 0.8
    mask[:, 0] = True
    return {
        "x": torch.randn(N_PAIRS, 20, 15, generator=g),
        "mask": mask,
        "x_partner": torch.randn(N_PAIRS, 20, 15, generator=g),
        "mask_partner": mask.clone(),
        "label": torch.randint(0, 2, (N_PAIRS,), generator=g),
    }


def _model(heads: bool) -> torch.nn.Module:
    from rs3l_coffea.nn import build_model

    torch.manual_seed(0)
    config = dict(TINY, heads=[{"name": "score"}]) if heads else TINY
    return build_model(config)


def _one_step(view: torch.nn.Module, batch: dict, world: World, task: str) -> None:
    config = load_config(None, ["loss.temperature=0.1"])
    # Plain SGD: the update is linear in the gradient, so equal steps mean equal gradients (Adam's
    # g / sqrt(g^2) would turn rounding-level differences of tiny gradients into full-size steps).
    optimizer = torch.optim.SGD([p for p in view.parameters() if p.requires_grad], lr=0.1)
    optimizer.zero_grad()
    if task == "pretrain":
        loss = contrastive_loss(view, batch, resim_partner, torch.Generator(), config, world)
    else:
        loss = classification_loss(view, batch)
    loss.backward()
    optimizer.step()


def _worker(rank: int, init_file: str, out_dir: str, ntuple: str, port: int) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        half = slice(rank * N_PAIRS // 2, (rank + 1) * N_PAIRS // 2)
        local = {k: v[half] for k, v in _global_batch().items()}
        for task in ("pretrain", "supervised"):
            model = _model(heads=task != "pretrain")
            _one_step(DistributedDataParallel(TrainingView(model)), local, World(rank, 2), task)
            if rank == 0:
                torch.save(model.state_dict(), Path(out_dir) / f"ddp_{task}.pt")
        # The whole trainer as torchrun starts it: the environment describes the group and the
        # trainer joins it itself (ranks in step, checkpoints, final model).
        dist.destroy_process_group()
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        from rs3l_coffea.training.trainer import train

        config = load_config(
            None,
            [f"data.files=[{ntuple}]", f"out_dir={out_dir}/run", "data.batch_size=8", "epochs=2",
             "max_steps_per_epoch=3", "checkpoint_every=2", "progress=false", "threads=1",
             "model=" + repr(TINY).replace("'", "")],
        )
        result = train(config)
        if rank == 0:
            torch.save({"steps": torch.tensor(result.progress.step_losses)}, Path(out_dir) / "run_steps.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def small_ntuple(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs3l_coffea.training.ntuple import write_shards
    from rs3l_coffea.training.toy import toy_pair_rows

    out = tmp_path_factory.mktemp("ddp_ntuple")
    write_shards(toy_pair_rows(240, seed=4), out, shard_size=60)
    return out


def test_ddp_step_equals_single_process_step(tmp_path: Path, small_ntuple: Path) -> None:
    torch.set_num_threads(1)
    import socket

    with socket.socket() as probe:  # a free port for the env:// rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK") if k in os.environ}
    try:
        mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), str(small_ntuple), port), nprocs=2, join=True)
    finally:
        os.environ.update(env)
    batch = _global_batch()
    for task in ("pretrain", "supervised"):
        model = _model(heads=task != "pretrain")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        _one_step(TrainingView(model), batch, World(), task)
        ddp_state = torch.load(tmp_path / f"ddp_{task}.pt", weights_only=True)
        moved = 0
        for key, value in model.state_dict().items():
            torch.testing.assert_close(ddp_state[key], value, rtol=1e-5, atol=1e-6, msg=f"{task}: {key}")
            moved += int(not torch.equal(value, before[key]))
        assert moved > 0
    steps = torch.load(tmp_path / "run_steps.pt", weights_only=True)["steps"]
    assert len(steps) == 6 and torch.isfinite(steps).all()
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.json").is_file()
