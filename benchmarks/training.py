"""Training throughput on CPU as a fraction of the matmul peak: toy jets and real generated ntuples.

Usage::

    python benchmarks/training.py [--threads 1] [--rounds 3] [--steps 4] [--pairs 100]
        [--real-dir DIR] [--events 1500] [--bucket 32] [--particles 100]
        [--caps 32,48,64,100] [--widths 64,128] [--bounds] [--study-model studies/at_scale.yaml]

The paper-size DGCNN (128 wide, 3 EdgeConv k = 24, 8-d output), NT-Xent, P = 100 pairs per
step (2P jets in one forward pass), backward and an Adam update (exactly
``rs3l_coffea.training.trainer.contrastive_loss`` + optimizer step), measured on

* **toy** jets (``rs3l_coffea.training.toy``, 10-50 particles) already in memory;
* **real** jets: ``rs3l generate`` zh_bb and zj (4 variants) + ``rs3l ntuple``, cached in
  ``--real-dir`` (created on the first run, ~1 min; reused afterwards), streamed through
  :class:`~rs3l_coffea.training.dataset.JetStream` exactly as the trainer reads them
  (``num_workers = 0``): the **data pipeline is inside the timed loop**.

The peak is a one-thread-per-thread fp32 ``torch.mm`` (1024 x 1024 x 1024), measured in every
round right before the training steps, so that a shared machine's load hits both alike; the
report gives per-round ratios and their median.

Useful FLOPs per jet with ``n`` real particles (padding excluded), width ``W``, ``F`` input
features, ``E`` embedding layers, ``L`` EdgeConv layers, output MLP widths ``h``::

    linear(n) = 2n (F W + (E - 1) W^2)           embedding MLP
              + L * 2n * 2 W^2                   EdgeConv: per-node W_a - W_b and W_b projections
              + 2 sum_j h_j h_{j+1}              output MLP on the pooled jet
    knn(n)    = L * 2 n^2 W                      pairwise distances (not differentiated)
    step(n)   = 3 linear(n) + knn(n)             backward of a linear layer = 2x its forward

(The per-node projections are the algebraic form of PyG's ``Linear(2W -> W)`` on the k edges
of every particle, which would count k = 24 times more.) Summed over the jets of each batch.
At 48 particles, W = 128: linear ~11.2 MFLOP, knn ~1.8 MFLOP, step ~35 MFLOP per jet.

``--caps`` and ``--widths`` add a trade-off table: real-jet step time vs particle cap
(``x[:, :cap]``; the ntuple keeps the 100 highest-pT particles) and model width.

``--bounds`` adds upper bounds on what faster kernels could buy, on the same real batches:
the step with the EdgeConv gather-max replaced by a slice of its table (a gather-max that costs
nothing), and with the kNN replaced by fixed neighbour indices as well. The outputs of those
rows are wrong by construction; only their time means something, and their fraction of peak
still counts the real model's useful FLOPs.

``--study-model CONFIG`` adds seconds per pretraining step of that study's backbone at its
pretraining batch size (pairs per step), on the same real batches and ``--threads``.
Benchmarks are scripts: timings on a shared machine vary, so quote ratios and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from rs3l_coffea.nn import build_model, edge_conv
from rs3l_coffea.nn.config import DGCNNConfig, HeadConfig, ModelConfig
from rs3l_coffea.training.config import load_config
from rs3l_coffea.training.dataset import JetStream, expand_files, inspect_shards
from rs3l_coffea.training.partners import resim_partner
from rs3l_coffea.training.toy import toy_pair_rows
from rs3l_coffea.training.trainer import TrainingView, classification_loss, contrastive_loss

PEAK_SIZE = 1024
PROCESSES = ("zh_bb", "zj")


# --- FLOP count ---------------------------------------------------------------------------------


def step_flops(multiplicities: torch.Tensor, config: DGCNNConfig) -> float:
    """Useful FLOPs of one training step (forward, backward) over jets of these multiplicities."""
    n = multiplicities.double()
    width, features = config.width, config.input_dim
    embed = 2 * n * (features * width + (config.embed_layers - 1) * width * width)
    convs = config.conv_layers * 2 * n * 2 * width * width
    widths = [width, *config.output_hidden, config.output_dim]
    head = sum(2 * a * b for a, b in itertools.pairwise(widths))
    knn = config.conv_layers * 2 * n * n * width
    return float((3 * (embed + convs + head) + knn).sum())


def matmul_peak() -> float:
    """fp32 GFLOP/s of a large ``torch.mm`` on the current thread setting (best of 3)."""
    a = torch.randn(PEAK_SIZE, PEAK_SIZE)
    b = torch.randn(PEAK_SIZE, PEAK_SIZE)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * PEAK_SIZE**3 / best / 1e9


# --- data ---------------------------------------------------------------------------------------


def _rs3l(*args: str) -> None:
    code = "import sys; from rs3l_coffea.cli import main; sys.argv[0] = 'rs3l'; main()"
    subprocess.run([sys.executable, "-c", code, *args], check=True, stdout=subprocess.DEVNULL)


def real_ntuples(directory: Path, events: int) -> list[str]:
    """Ntuple directories of generated zh_bb and zj jets in ``directory`` (made when missing)."""
    out = []
    for process in PROCESSES:
        ntuple = directory / f"ntuple_{process}_{events}"
        if not (ntuple / "ntuple.json").is_file():
            generated = directory / f"generated_{process}_{events}"
            print(f"generating {events} {process} events x 4 variants into {generated} ...", file=sys.stderr)
            _rs3l("generate", "--process", process, "--events", str(events), "--seed", "7", "--out", str(generated))
            _rs3l("ntuple", "-i", str(generated / "*.root"), "-o", str(ntuple))
        out.append(str(ntuple))
    return out


def real_stream(directories: list[str], pairs: int) -> JetStream:
    """Pair batches as ``Trainer`` streams them for pretraining (all rows, to reuse a small sample)."""
    shards = inspect_shards(expand_files(directories))
    return JetStream(shards, mode="pairs", split=None, pool="all", batch_size=pairs, seed=0)


def endless(stream: JetStream) -> Iterator[dict[str, torch.Tensor]]:
    for epoch in itertools.count():
        stream.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=0)
        yield from loader


def toy_batch(n_pairs: int, particles: int) -> dict[str, torch.Tensor]:
    rows = toy_pair_rows(n_pairs, seed=1)
    batch = {k: torch.from_numpy(rows[k]) for k in ("features", "mask", "partner_features", "partner_mask")}
    return {
        "x": batch["features"][:, :particles].contiguous(),
        "mask": batch["mask"][:, :particles].contiguous(),
        "x_partner": batch["partner_features"][:, :particles].contiguous(),
        "mask_partner": batch["partner_mask"][:, :particles].contiguous(),
        "label": torch.from_numpy(rows["label"]).long(),
    }


def capped(batch: dict[str, torch.Tensor], cap: int) -> dict[str, torch.Tensor]:
    out = dict(batch)
    for key in ("x", "mask", "x_partner", "mask_partner"):
        out[key] = batch[key][:, :cap]
    return out


# --- timing -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measured:
    seconds: float
    jets: int
    flops: float
    particles: int

    def add(self, other: Measured) -> Measured:
        return Measured(
            self.seconds + other.seconds, self.jets + other.jets, self.flops + other.flops,
            self.particles + other.particles,
        )


class Pretrainer:
    """One model + Adam; ``run(batches, n)`` times n steps, fetching each batch inside the clock."""

    def __init__(self, backbone_config: DGCNNConfig, bucket: int | None) -> None:
        torch.manual_seed(0)
        self.backbone_config = backbone_config
        self.view = TrainingView(build_model(ModelConfig(backbone=backbone_config)), bucket)
        self.optimizer = torch.optim.Adam(self.view.parameters(), lr=1e-3)
        self.config = load_config(None, ["loss.temperature=0.1"])

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        contrastive_loss(self.view, batch, resim_partner, torch.Generator(), self.config).backward()
        self.optimizer.step()

    def run(self, batches: Iterator[dict[str, torch.Tensor]], n_steps: int) -> Measured:
        total = Measured(0.0, 0, 0.0, 0)
        for _ in range(n_steps):
            start = time.perf_counter()
            batch = next(batches)
            self.step(batch)
            seconds = time.perf_counter() - start
            multiplicities = torch.cat([batch["mask"].sum(1), batch["mask_partner"].sum(1)])
            flops = step_flops(multiplicities, self.backbone_config)
            total = total.add(Measured(seconds, len(multiplicities), flops, int(multiplicities.sum())))
        return total


def _free_gather_max(table: torch.Tensor, index: torch.Tensor, custom_backward: bool = True) -> torch.Tensor:
    """Timing bound only: the first ``R`` table rows instead of the maximum over neighbours."""
    return table[:, : index.shape[1]] * 1.0


def _free_knn(query: torch.Tensor, points: torch.Tensor, point_mask: torch.Tensor, k: int,
              export_mode: bool = False) -> torch.Tensor:
    """Timing bound only: neighbour slots 0, 1, ..., k-1 (wrapped) for every query row."""
    slots = torch.arange(k, device=query.device) % max(points.shape[1], 1)
    return slots.expand(query.shape[0], query.shape[1], k)


def _free_center_plus_max(projections: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                          k: int, rows: int) -> torch.Tensor:
    """Timing bound only: the fused CPU path without its gather-max (its kNN still runs)."""
    edge_conv.dense_knn(x, x, mask, k)
    center, neighbour = projections.split(projections.shape[-1] // 2, dim=-1)
    return center + neighbour + bias


@contextlib.contextmanager
def patched(gather_max: bool, knn: bool) -> Iterator[None]:
    """Swap the EdgeConv gather-max (torch and fused CPU paths) and/or kNN for the free versions
    above, restored on exit."""
    saved = edge_conv._gather_max, edge_conv._fused_center_plus_max, edge_conv.dense_knn
    try:
        if gather_max:
            edge_conv._gather_max = _free_gather_max
            edge_conv._fused_center_plus_max = _free_center_plus_max
        if knn:
            edge_conv.dense_knn = _free_knn
        yield
    finally:
        edge_conv._gather_max, edge_conv._fused_center_plus_max, edge_conv.dense_knn = saved


def _time_steps(step, n_steps: int) -> list[float]:
    step()  # warm-up
    times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def other_tasks(batch: dict[str, torch.Tensor], bucket: int | None, n_steps: int) -> list[tuple[str, int, list[float]]]:
    """Fine-tuning (frozen backbone) and supervised steps on the toy batch (P jets)."""
    rows = []
    for name, frozen in (("finetune fixed (P toy jets)", True), ("supervised (P toy jets)", False)):
        model = build_model(ModelConfig(heads=(HeadConfig(name="score"),)))
        if frozen:
            for parameter in model.backbone.parameters():
                parameter.requires_grad_(False)
        view = TrainingView(model, bucket)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def step(view=view, optimizer=optimizer) -> None:
            optimizer.zero_grad()
            classification_loss(view, batch).backward()
            optimizer.step()

        rows.append((name, batch["x"].shape[0], _time_steps(step, n_steps)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved (peak, toy, real) rounds.")
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per round and data set.")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--particles", type=int, default=100, help="Toy jets padded to this many slots.")
    parser.add_argument("--bucket", type=int, default=32, help="TrainConfig.bucket_jets (0: none).")
    parser.add_argument("--real-dir", type=Path, default=Path.home() / ".cache" / "rs3l-coffea" / "benchmark-training")
    parser.add_argument("--events", type=int, default=1500, help="Hard events per process for the real sample.")
    parser.add_argument("--caps", default="", help="Particle caps for the trade-off table, e.g. 32,48,64,100.")
    parser.add_argument("--widths", default="", help="Model widths for the trade-off table, e.g. 64,128.")
    parser.add_argument("--bounds", action="store_true",
                        help="Add steps with a free gather-max, and a free gather-max and kNN (timing bounds).")
    parser.add_argument("--study-model", type=Path,
                        help="Also time pretraining steps of this study's model at its batch size.")
    parser.add_argument("--no-other-tasks", action="store_true", help="Skip the fine-tuning/supervised rows.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bucket = args.bucket or None

    real_dirs = real_ntuples(args.real_dir, args.events)
    real = endless(real_stream(real_dirs, args.pairs))
    toy = toy_batch(args.pairs, args.particles)
    paper = DGCNNConfig()
    trainer = Pretrainer(paper, bucket)
    trainer.step(toy)  # warm-up
    trainer.step(next(real))

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"torch {torch.__version__}, {args.threads} thread(s); P = {args.pairs} pairs (2P jets) per step, "
          f"bucket_jets {bucket}; {args.rounds} rounds x {args.steps} steps; real: {', '.join(real_dirs)}")
    print()
    print("| round | peak GFLOP/s | toy jets/s | toy % of peak | real jets/s | real % of peak | real particles/jet |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    toy_fraction, real_fraction, real_rates = [], [], []
    for round_index in range(args.rounds):
        peak = matmul_peak()
        toy_run = trainer.run(itertools.repeat(toy), args.steps)
        real_run = trainer.run(real, args.steps)
        peak = (peak + matmul_peak()) / 2
        toy_fraction.append(toy_run.flops / toy_run.seconds / 1e9 / peak)
        real_fraction.append(real_run.flops / real_run.seconds / 1e9 / peak)
        real_rates.append(real_run.jets / real_run.seconds)
        print(f"| {round_index} | {peak:.0f} | {toy_run.jets / toy_run.seconds:.0f} | {100 * toy_fraction[-1]:.1f} "
              f"| {real_rates[-1]:.0f} | {100 * real_fraction[-1]:.1f} | {real_run.particles / real_run.jets:.1f} |")
    print()
    print(f"median: toy {100 * statistics.median(toy_fraction):.1f} % of peak, real "
          f"{statistics.median(real_rates):.0f} jets/s = {100 * statistics.median(real_fraction):.1f} % of peak")

    if args.caps or args.widths:
        print()
        print("Trade-off on real jets (peak measured before each row; particle cap = x[:, :cap]):")
        print()
        print("| width | particle cap | s/step | jets/s | % of peak |")
        print("|---:|---:|---:|---:|---:|")
        caps = [int(c) for c in args.caps.split(",") if c] or [100]
        widths = [int(w) for w in args.widths.split(",") if w] or [paper.width]
        for width in widths:
            model = Pretrainer(dataclasses.replace(paper, width=width), bucket)
            for cap in caps:
                batches = (capped(b, cap) for b in real)
                model.step(next(batches))  # warm-up at this shape
                peak = matmul_peak()
                run = model.run(batches, args.steps)
                print(f"| {width} | {cap} | {run.seconds / args.steps:.3f} | {run.jets / run.seconds:.0f} "
                      f"| {100 * run.flops / run.seconds / 1e9 / peak:.1f} |")

    if args.bounds:
        print()
        print("Upper bounds on real jets (same model and batches; wrong outputs, time only; peak before each row):")
        print()
        print("| step | s/step | jets/s | % of peak |")
        print("|---|---:|---:|---:|")
        for title, free_gather, free_knn in (("as trained", False, False), ("gather-max free", True, False),
                                             ("gather-max and kNN free", True, True)):
            with patched(free_gather, free_knn):
                trainer.step(next(real))  # warm-up
                peak = matmul_peak()
                run = trainer.run(real, args.steps)
            print(f"| {title} | {run.seconds / args.steps:.3f} | {run.jets / run.seconds:.0f} "
                  f"| {100 * run.flops / run.seconds / 1e9 / peak:.1f} |")

    if args.study_model:
        from rs3l_coffea.study import load_study_config

        study = load_study_config(args.study_model)
        backbone = ModelConfig.from_dict(study.model).backbone
        if not isinstance(backbone, DGCNNConfig):
            raise SystemExit(f"--study-model: {args.study_model} does not use a DGCNN backbone")
        pairs = study.pretrain.batch_size
        study_batches = endless(real_stream(real_dirs, pairs))
        model = Pretrainer(backbone, bucket)
        model.step(next(study_batches))  # warm-up
        run = model.run(study_batches, args.steps)
        print()
        print(f"study model of {args.study_model} ({study.model['backbone']}), {pairs} pairs per step, "
              f"{args.threads} thread(s): {run.seconds / args.steps:.4f} s/step, {run.jets / run.seconds:.0f} jets/s")

    if not args.no_other_tasks:
        print()
        print("| other step | jets/step | median s/step | jets/s |")
        print("|---|---:|---:|---:|")
        for name, jets, times in other_tasks(toy, bucket, args.steps):
            median = statistics.median(times)
            print(f"| {name} | {jets} | {median:.3f} | {jets / median:.0f} |")


if __name__ == "__main__":
    main()
