"""Per-event and per-step cost of the study's heaviest stages, to size a study before running it.

    PYTHONPATH=. python benchmarks/study_stages.py --config studies/at_scale.yaml --events 400

1. One chunk of ``--events`` hard events per process of the config, on one worker: generation
   (Pythia + detector, every variant of the process) and chunk ntupling, per event, plus the ROOT
   and ntuple bytes per event.
2. NT-Xent pretraining of the config's model on those ntuples with ``--batch`` pairs per step:
   1 epoch and ``--epochs`` epochs, the difference giving the steady-state seconds per step
   (startup and the first validation excluded).
Prints the rates and the resulting estimate for the config's sizes. A script, not a test: the
numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from rs3l_coffea.generation import GenerationConfig, generate_chunk
from rs3l_coffea.study import load_study_config
from rs3l_coffea.study.layout import StudyLayout
from rs3l_coffea.study.samples import ntuple_chunk
from rs3l_coffea.study.splits import ntuple_shards, read_ntuple
from rs3l_coffea.study.trainings import pretrain_config, train_model


def time_generation(config, work: Path, n_events: int) -> dict[str, dict[str, float]]:
    gen, rates = config.generation, {}
    for process in gen.events:
        variants = tuple(gen.variants if process in ("zh_bb", "zj") else gen.ood_variants)
        gc = GenerationConfig(process=process, n_events=n_events, out_dir=work / "gen" / process, variants=variants,
                              seed=gen.seed + 1000, chunk_size=n_events, eta_max=gen.eta_max)
        start = time.perf_counter()
        paths = generate_chunk(gc, 0)
        generated = time.perf_counter()
        root_bytes = sum(p.stat().st_size for p in paths)
        chunk_dir = work / "ntuple" / process / "chunk_00000"
        ntuple_chunk(paths, chunk_dir, config.split.selection, config.split.shard_size, keep_root=False)
        done = time.perf_counter()
        jets = int((read_ntuple(chunk_dir, ["pair_rank"])["pair_rank"] == 0).sum())
        rates[process] = {"generate_s": (generated - start) / n_events, "ntuple_s": (done - generated) / n_events,
                          "root_bytes_per_variant": root_bytes / n_events / len(variants),
                          "ntuple_bytes": sum(p.stat().st_size for p in ntuple_shards(chunk_dir)) / n_events,
                          "jets": jets / n_events}
        print(f"{process}: {n_events} events x {len(variants)} variants: generation {rates[process]['generate_s'] * 1e3:.1f} "
              f"ms/event, ntupling {rates[process]['ntuple_s'] * 1e3:.1f} ms/event, ROOT "
              f"{rates[process]['root_bytes_per_variant'] / 1e3:.1f} KB/event/variant, ntuple "
              f"{rates[process]['ntuple_bytes'] / 1e3:.1f} KB/event, {rates[process]['jets']:.2f} nominal jets/event",
              flush=True)
    return rates


def time_pretraining(config, work: Path, batch: int, epochs: int) -> float:
    data = work / "data" / "pretrain"
    data.mkdir(parents=True)
    for i, shard in enumerate(ntuple_shards(work / "ntuple")):
        if shard.parts[-3] in ("zh_bb", "zj"):
            (data / f"shard_{i:05d}.root").symlink_to(shard)
    walls = {}
    for n in (1, epochs):
        study = config.model_copy(update={"device": "cpu"}, deep=True)
        study.pretrain.epochs, study.pretrain.batch_size, study.pretrain.max_steps_per_epoch = n, batch, None
        tc = pretrain_config(study, "resim", StudyLayout(work))
        tc = dataclasses.replace(tc, out_dir=str(work / "train" / f"epochs-{n}"))
        start = time.perf_counter()
        steps = train_model(tc, print)["steps"]
        walls[n] = (steps, time.perf_counter() - start)
    (s1, w1), (sn, wn) = walls[1], walls[epochs]
    per_step = (wn - w1) / (sn - s1)
    print(f"pretraining: {per_step:.2f} s per step of {batch} pairs ({batch / per_step:.1f} pairs/s; "
          f"{s1} steps in {w1:.1f} s, {sn} steps in {wn:.1f} s)", flush=True)
    return per_step / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/at_scale.yaml")
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    config = load_study_config(args.config)
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="rs3l-study-timing-") as tmp:
        work = Path(tmp)
        rates = time_generation(config, work, args.events)
        seconds_per_pair = time_pretraining(config, work, args.batch, args.epochs)
    cpu = sum(config.generation.events[p] * (r["generate_s"] + r["ntuple_s"]) for p, r in rates.items())
    pre = config.pretrain
    pairs = pre.epochs * (pre.max_steps_per_epoch or 0) * pre.batch_size
    print(f"estimate for {args.config}: generation + ntupling {cpu:.0f} CPU-s "
          f"({cpu / 3600 / max(1, config.generation.workers):.1f} h on {config.generation.workers} workers)")
    if pairs:
        print(f"  one pretraining of {pairs} pairs: {pairs * seconds_per_pair / 3600:.1f} h")


if __name__ == "__main__":
    main()
