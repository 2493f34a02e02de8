"""Training throughput on CPU: the paper-size DGCNN, NT-Xent, 100 + 100 jets per step, Adam.

Usage: ``python benchmarks/training.py [--threads 2] [--steps 8] [--pairs 100] [--particles 100] [--bucket 32]``.

Jets come from the toy generator (``rs3l_coffea.training.toy``: 10-50 particles per jet,
zero-padded to ``--particles`` slots), with partners as the re-simulated view. One step =
one forward pass over 2P jets, the NT-Xent loss, backward and an Adam update (exactly
``rs3l_coffea.training.trainer.contrastive_loss`` + optimizer step). The first step is a
warm-up and not counted. Also times one fine-tuning step (frozen backbone, linear head)
and a supervised step on P jets. Prints a markdown table. Timings on a shared machine vary;
say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from rs3l_coffea.nn import build_model
from rs3l_coffea.nn.config import HeadConfig, ModelConfig
from rs3l_coffea.training.config import load_config
from rs3l_coffea.training.partners import resim_partner
from rs3l_coffea.training.toy import toy_pair_rows
from rs3l_coffea.training.trainer import TrainingView, classification_loss, contrastive_loss


def _batch(n_pairs: int, particles: int) -> dict[str, torch.Tensor]:
    rows = toy_pair_rows(n_pairs, seed=1)
    batch = {k: torch.from_numpy(rows[k]) for k in ("features", "mask", "partner_features", "partner_mask")}
    return {
        "x": batch["features"][:, :particles].contiguous(),
        "mask": batch["mask"][:, :particles].contiguous(),
        "x_partner": batch["partner_features"][:, :particles].contiguous(),
        "mask_partner": batch["partner_mask"][:, :particles].contiguous(),
        "label": torch.from_numpy(rows["label"]).long(),
    }


def _time(step, n_steps: int) -> list[float]:
    step()  # warm-up
    times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--particles", type=int, default=100)
    parser.add_argument("--bucket", type=int, default=32, help="TrainConfig.bucket_jets (0: none).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(None, ["loss.temperature=0.1"])
    batch = _batch(args.pairs, args.particles)
    mean_particles = float(torch.cat([batch["mask"], batch["mask_partner"]]).sum(1).float().mean())

    backbone = build_model(ModelConfig())  # published RS3L size: 128 wide, 3 EdgeConv k=24, 8-d output
    bucket = args.bucket or None
    view = TrainingView(backbone, bucket)
    optimizer = torch.optim.Adam(view.parameters(), lr=1e-3)

    def pretrain_step() -> None:
        optimizer.zero_grad()
        contrastive_loss(view, batch, resim_partner, torch.Generator(), config).backward()
        optimizer.step()

    head_model = build_model(ModelConfig(heads=(HeadConfig(name="score"),)))
    for parameter in head_model.backbone.parameters():
        parameter.requires_grad_(False)
    head_view = TrainingView(head_model, bucket)
    head_optimizer = torch.optim.Adam([p for p in head_model.parameters() if p.requires_grad], lr=1e-3)

    def finetune_fixed_step() -> None:
        head_optimizer.zero_grad()
        classification_loss(head_view, batch).backward()
        head_optimizer.step()

    supervised_model = build_model(ModelConfig(heads=(HeadConfig(name="score"),)))
    supervised_view = TrainingView(supervised_model, bucket)
    supervised_optimizer = torch.optim.Adam(supervised_model.parameters(), lr=1e-3)

    def supervised_step() -> None:
        supervised_optimizer.zero_grad()
        classification_loss(supervised_view, batch).backward()
        supervised_optimizer.step()

    rows = []
    for name, step, jets in (
        ("pretrain NT-Xent (P pairs = 2P jets)", pretrain_step, 2 * args.pairs),
        ("finetune fixed (P jets)", finetune_fixed_step, args.pairs),
        ("supervised (P jets)", supervised_step, args.pairs),
    ):
        times = _time(step, args.steps)
        median = statistics.median(times)
        rows.append((name, jets, median, jets / median, min(times), max(times)))

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"torch {torch.__version__}, {args.threads} threads; P = {args.pairs}, padded to {args.particles}, "
          f"bucket_jets {bucket}, "
          f"mean {mean_particles:.1f} particles/jet; {args.steps} timed steps after 1 warm-up")
    print()
    print("| step | jets/step | median s/step | jets/s | min s | max s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, jets, median, rate, low, high in rows:
        print(f"| {name} | {jets} | {median:.3f} | {rate:.0f} | {low:.3f} | {high:.3f} |")


if __name__ == "__main__":
    main()
