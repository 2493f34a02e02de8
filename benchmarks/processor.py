"""Throughput and memory of RS3L tagging in coffea.

Part 1 -- the ``TaggingProcessor`` through ``processor.Runner`` on a generated Delphes-layout
ZH(bb) sample (``rs3l_coffea.generation``, reclustered anti-kT R=0.8 jets): events/s with the
iterative executor (one process) vs ``DaskExecutor`` on a ``LocalCluster`` of 2 worker processes
x 1 thread (same chunks), and the peak RSS of each process (``ru_maxrss``; workers queried with
``client.run`` after the run).

Part 2 -- the column producer alone on one big chunk of jets: :class:`RS3LTagger` (sorted,
particle-budget batches) vs the same weights through ``coffea.ml_tools.torch_wrapper``
(:class:`RS3LTorchWrapper`: one TorchScript call on the whole chunk padded to 100 slots, as
coffea's wrapper does). Jets are real reclustered jets of the sample, tiled to ``--jets``. Each
method runs in a fresh subprocess with ``--threads`` torch threads; memory = peak RSS above the
RSS before the call (after ``malloc_trim``; psutil sampled every 5 ms), throughput = jets / wall
time of the call (features are built inside the call by both methods).

Model: paper-size DGCNN (15-128-128, 3 EdgeConv k=24, 128-64-32-32-8) + one linear head,
random init (the shipped default model does not exist yet; speed does not depend on weights).

Usage::

    .venv/bin/python benchmarks/processor.py [--events 2000] [--chunksize 250] [--jets 100000]
        [--threads 1] [--skip-processor] [--skip-wrapper]

The CPU of the development machine is shared with other engineers: numbers are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_model(directory: Path) -> Path:
    import torch

    from rs3l_coffea.nn import HeadConfig, ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(heads=(HeadConfig("score"),))).eval()
    path = directory / "paper_dgcnn"
    save_model(path, model, {"description": "benchmark: random init, paper-size DGCNN"})
    return path


def make_sample(directory: Path, n_events: int) -> Path:
    from rs3l_coffea.generation import generate
    from rs3l_coffea.generation.config import GenerationConfig

    config = GenerationConfig(
        process="zh_bb", n_events=n_events, out_dir=directory, variants=("nominal",),
        seed=7, chunk_size=n_events,
    )
    (path,) = generate(config)
    return Path(path)


# ------------------------------------------------------------------------------- part 1
def bench_processor(sample: Path, model: Path, chunksize: int, workers: int) -> list[dict]:
    from coffea.processor import DaskExecutor
    from distributed import Client

    from rs3l_coffea.coffea_processing.runner import local_cluster, run_fileset
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.processors import TaggingProcessor

    fileset = {"zh": [str(sample)]}
    rows = []

    # warm-up (imports, fastjet banner, first model load) so that both runs are comparable
    processor_instance = TaggingProcessor(RS3LTagger.load(model, threads=1))
    run_fileset(fileset, processor_instance, chunksize=chunksize, maxchunks=1)
    cpu = _cpu_seconds()
    start = time.perf_counter()
    output = run_fileset(fileset, processor_instance, chunksize=chunksize)
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    events = output["cutflow"]["zh"]["events"]
    rows.append({
        "setup": "iterative, 1 process x 1 torch thread", "events": events,
        "seconds": elapsed, "events_per_s": events / elapsed,
        "peak_rss_mb": [round(_max_rss_mb())],
        "jets": output["cutflow"]["zh"]["jets"],
        "cpu_s": [cpu],
    })

    with local_cluster(workers) as cluster, Client(cluster) as client:
        executor = DaskExecutor(client=client, status=False)
        # warm-up over every chunk: each worker process imports and loads the model once
        run_fileset(fileset, processor_instance, executor=executor, chunksize=chunksize)
        cpu_before = client.run(_cpu_seconds)
        start = time.perf_counter()
        output = run_fileset(fileset, processor_instance, executor=executor, chunksize=chunksize)
        elapsed = time.perf_counter() - start
        cpu_after = client.run(_cpu_seconds)
        worker_rss = client.run(_max_rss_mb)
        rows.append({
            "setup": f"dask LocalCluster, {workers} workers x 1 thread", "events": output["cutflow"]["zh"]["events"],
            "seconds": elapsed, "events_per_s": output["cutflow"]["zh"]["events"] / elapsed,
            "peak_rss_mb": [round(v) for v in worker_rss.values()],
            "jets": output["cutflow"]["zh"]["jets"],
            "cpu_s": [cpu_after[w] - cpu_before[w] for w in cpu_after],
        })
    return rows


# ------------------------------------------------------------------------------- part 2
def _tiled_jets(sample: Path, n_jets: int):
    import awkward as ak
    import numpy as np

    from rs3l_coffea.io import load_jets

    jets, constituents = load_jets(sample)
    flat_jets = ak.flatten(jets)
    flat_constituents = ak.flatten(constituents, axis=1)
    keep = ak.num(flat_constituents, axis=1) > 0
    flat_jets, flat_constituents = flat_jets[keep], flat_constituents[keep]
    index = np.arange(n_jets) % len(flat_jets)
    return ak.to_packed(flat_jets[index]), ak.to_packed(flat_constituents[index])


def worker(method: str, sample: Path, model: Path, n_jets: int, threads: int) -> dict:
    import psutil  # noqa: F401  (fail early if missing)
    import torch

    torch.set_num_threads(threads)
    jets, constituents = _tiled_jets(sample, n_jets)
    if method == "tagger":
        from rs3l_coffea.inference.tagger import RS3LTagger

        producer = RS3LTagger.load(model, threads=threads)
        _ = producer.engine  # load outside the timed/measured call, like the wrapper below
    else:
        from rs3l_coffea.coffea_processing.torch_wrapper import RS3LTorchWrapper

        producer = RS3LTorchWrapper.from_model(model, Path(tempfile.mkdtemp()) / "model.pt")
        _ = producer.model  # coffea loads the TorchScript lazily
    # a tiny call first: one-off allocations and lazy initialisation are not the chunk's cost
    producer(jets[:8], constituents[:8])

    # Return the heap freed by input preparation to the OS: otherwise later allocations reuse
    # those pages without raising RSS and the peak would be underestimated.
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = _rss_mb()
    peak = [baseline]
    done = threading.Event()

    def sample_rss() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = producer(jets, constituents)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    import awkward as ak
    import numpy as np

    scores = np.asarray(ak.to_numpy(ak.fill_none(result.score, -1.0)))
    return {
        "method": method, "jets": n_jets, "seconds": elapsed, "jets_per_s": n_jets / elapsed,
        "peak_extra_mb": peak[0] - baseline, "score_checksum": float(np.round(scores.sum(), 1)),
    }


def bench_wrapper(
    sample: Path, model: Path, n_jets: int, threads: int, methods: list[str]
) -> list[dict]:
    rows = []
    for method in methods:
        command = [
            sys.executable, __file__, "--worker", method, "--sample", str(sample),
            "--model", str(model), "--jets", str(n_jets), "--threads", str(threads),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            rows.append({"method": method, "error": (result.stderr or result.stdout)[-600:]})
            continue
        rows.append(json.loads(lines[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--chunksize", type=int, default=250)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-processor", action="store_true")
    parser.add_argument("--skip-wrapper", action="store_true")
    parser.add_argument(
        "--methods", nargs="+", default=["tagger", "torch_wrapper"],
        choices=["tagger", "torch_wrapper"],
        help="column producers of part 2 (torch_wrapper needs ~0.47 GB per 1000 jets)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", choices=("tagger", "torch_wrapper"), help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.sample, args.model, args.jets, args.threads)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rs3l-bench-processor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "zh_bb_nominal_00000.root"
    if not sample.is_file():
        tick = time.perf_counter()
        sample = make_sample(workdir, args.events)
        print(f"generated {args.events} ZH(bb) events in {time.perf_counter() - tick:.0f} s: {sample}")
    model = make_model(workdir)
    print(f"CPU: {os.cpu_count()} cores, shared with other engineers' jobs (load average "
          f"{os.getloadavg()[0]:.1f}); numbers are indicative\n")

    if not args.skip_processor:
        rows = bench_processor(sample, model, args.chunksize, args.workers)
        print(f"### TaggingProcessor, {rows[0]['events']} events, {rows[0]['jets']} jets, chunksize {args.chunksize}\n")
        print("| setup | wall [s] | events/s | wall speed-up | CPU s per process | "
              "CPU-bound speed-up | peak RSS per process [MB] |")
        print("|---|---:|---:|---:|---|---:|---|")
        for row in rows:
            speedup = row["events_per_s"] / rows[0]["events_per_s"]
            # what the wall speed-up would be on idle cores: serial CPU time / busiest process
            cpu_speedup = sum(rows[0]["cpu_s"]) / max(row["cpu_s"])
            print(f"| {row['setup']} | {row['seconds']:.1f} | {row['events_per_s']:.1f} | "
                  f"{speedup:.2f}x | {', '.join(f'{c:.1f}' for c in row['cpu_s'])} | "
                  f"{cpu_speedup:.2f}x | {', '.join(map(str, row['peak_rss_mb']))} |")
        print("\nCPU-bound speed-up = iterative CPU time / CPU time of the busiest dask worker: the "
              "wall-clock speed-up on 2 otherwise idle cores, ignoring scheduling overhead.\n")

    if not args.skip_wrapper:
        rows = bench_wrapper(sample, model, args.jets, args.threads, args.methods)
        print(f"### Column producer on one chunk of {args.jets} jets, {args.threads} torch thread(s)\n")
        print("| method | wall [s] | jets/s | peak extra RSS [MB] | score checksum |")
        print("|---|---:|---:|---:|---:|")
        for row in rows:
            if "error" in row:
                print(f"| {row['method']} | failed: {row['error'].splitlines()[-1] if row['error'] else '?'} | | | |")
                continue
            print(f"| {row['method']} | {row['seconds']:.1f} | {row['jets_per_s']:.0f} | "
                  f"{row['peak_extra_mb']:.0f} | {row['score_checksum']} |")


if __name__ == "__main__":
    main()
