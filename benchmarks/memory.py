"""Peak memory of RS3L tagging versus the number of jets (is it bounded by the particle budget?).

Jets: the real FatJets of ``pfnano.root`` and the anti-kT R=0.8 jets of ``delphes.root``
(coffea test samples, read with :func:`rs3l_coffea.io.load_jets`), tiled to ``N`` jets in
events of 2 jets; their multiplicities are those of the real files.

Modes (each (mode, N) in a fresh subprocess):

* ``tagger``: one ``RS3LTagger(jets, constituents)`` call on all ``N`` jets.
* ``chunked``: the same jets fed in chunks of ``--chunk`` jets, as a coffea ``Runner`` does
  with ``chunksize`` (outputs kept).
* ``engine``: ``InferenceEngine.run(x, mask)`` on features built beforehand (the model part
  alone).

Memory = peak RSS (psutil, sampled every 2 ms in a thread) minus the RSS just before the
measured call (freed heap handed back to the OS first, glibc ``malloc_trim``), after the inputs are built, the model loaded and a 32-jet warm-up call run;
so it is what the call itself adds on top of its inputs. The size of the inputs (awkward
jets + constituents, or ``x``/``mask`` for ``engine``) and the absolute RSS before the call
are reported separately.

Usage::

    .venv/bin/python benchmarks/memory.py                      # N = 10k, 50k, 200k, all modes
    .venv/bin/python benchmarks/memory.py --jets 20000 --modes engine --width 128 --k 24 --convs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

MODES = ("tagger", "chunked", "engine")


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc ``malloc_trim``), so that the measured call cannot
    hide its allocations in memory freed earlier (e.g. by the feature builder)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


class PeakSampler:
    """Peak RSS of this process while the ``with`` block runs (a 2 ms sampling thread)."""

    def __enter__(self) -> PeakSampler:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def real_jets():
    """Flat jets and constituents of the two real samples (``pt, eta, phi, mass`` / uniform)."""
    import awkward as ak

    from rs3l_coffea.io import load_jets
    from rs3l_coffea.testing import sample_path

    parts = [load_jets(sample_path("pfnano.root")), load_jets(sample_path("delphes.root"), recluster_radius=0.8)]
    jets = ak.concatenate([ak.flatten(ak.without_parameters(j), axis=1) for j, _ in parts])
    constituents = ak.concatenate([ak.flatten(c, axis=1) for _, c in parts])
    keep = ak.num(constituents, axis=1) > 0
    return jets[keep], constituents[keep]


def tiled(n_jets: int):
    """``n_jets`` real jets (cycled) as events x jets (2 per event), fully materialised."""
    import awkward as ak

    jets, constituents = real_jets()
    index = np.arange(n_jets) % len(jets)
    flat_jets = ak.to_packed(jets[index])
    flat_constituents = ak.to_packed(constituents[index])
    counts = np.full(n_jets // 2, 2, dtype=np.int64)
    if n_jets % 2:
        counts = np.append(counts, 1)
    return ak.unflatten(flat_jets, counts), ak.unflatten(flat_constituents, counts)


def save_model(directory: Path, width: int, k: int, convs: int) -> Path:
    import torch

    from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

    torch.manual_seed(0)
    config = ModelConfig(
        backbone=DGCNNConfig(width=width, k=k, conv_layers=convs),
        heads=(HeadConfig("score"),),
    )
    path = directory / "model"
    save_model(path, build_model(config).eval())
    return path


def measure(mode: str, n_jets: int, args: argparse.Namespace) -> dict[str, float]:
    """Run one (mode, N) in this process and return the measurements."""
    import awkward as ak
    import torch

    from rs3l_coffea.features import build_features
    from rs3l_coffea.inference.tagger import RS3LTagger

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tagger = RS3LTagger.load(
            save_model(Path(tmp), args.width, args.k, args.convs),
            threads=args.threads, particle_budget=args.particle_budget,
        )
        jets, constituents = tiled(n_jets)
        n_particles = int(ak.sum(ak.num(constituents, axis=2)))
        tagger(jets[:32], constituents[:32])  # warm-up: model load, thread pools, allocator
        if mode == "engine":
            x, mask = build_features(jets, constituents, max_particles=tagger.max_particles)
            del jets, constituents
            inputs_mb = (x.nbytes + mask.nbytes) / 2**20
        else:
            inputs_mb = (jets.layout.nbytes + constituents.layout.nbytes) / 2**20
        release_freed_memory()
        before = rss_mb()
        tick = time.perf_counter()
        with PeakSampler() as sampler:
            if mode == "tagger":
                result = tagger(jets, constituents)
            elif mode == "chunked":
                pieces = []
                n_events = len(jets)
                step = max(1, args.chunk // 2)  # events of 2 jets
                for first in range(0, n_events, step):
                    pieces.append(tagger(jets[first : first + step], constituents[first : first + step]))
                result = ak.concatenate(pieces)
            else:
                result = tagger.engine.run(x, mask)
        wall = time.perf_counter() - tick
    del result
    return {
        "mode": mode,
        "jets": n_jets,
        "particles": n_particles,
        "inputs_mb": round(inputs_mb, 1),
        "rss_before_mb": round(before, 1),
        "extra_peak_mb": round(sampler.peak - before, 1),
        "wall_s": round(wall, 1),
        "jets_per_s": round(n_jets / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--chunk", type=int, default=10_000, help="jets per chunk in 'chunked' mode")
    parser.add_argument("--particle-budget", type=int, default=4096, help="tagger default: 4096")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--k", type=int, default=24)
    parser.add_argument("--convs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return

    print(
        f"DGCNN width {args.width}, k {args.k}, {args.convs} EdgeConv layers; particle budget "
        f"{args.particle_budget}; {args.threads} torch thread(s); chunk {args.chunk} jets; "
        f"{os.cpu_count()} CPUs visible (shared: timings are indicative only)"
    )
    print(f"{'mode':8s} {'jets':>8s} {'particles':>10s} {'inputs MB':>10s} {'RSS before':>11s} "
          f"{'extra peak MB':>14s} {'MB/1k jets':>11s} {'wall s':>7s} {'jets/s':>7s}")
    forwarded = [
        "--chunk", str(args.chunk), "--particle-budget", str(args.particle_budget), "--width", str(args.width),
        "--k", str(args.k), "--convs", str(args.convs), "--threads", str(args.threads),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for mode in args.modes:
        for n_jets in args.jets:
            completed = subprocess.run(
                [sys.executable, __file__, "--worker", mode, str(n_jets), *forwarded],
                capture_output=True, text=True, env=env, check=False,
            )
            if completed.returncode != 0:
                print(f"{mode} {n_jets}: failed ({completed.returncode}): {completed.stderr[-500:]}")
                continue
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            print(
                f"{row['mode']:8s} {row['jets']:8d} {row['particles']:10d} {row['inputs_mb']:10.1f} "
                f"{row['rss_before_mb']:11.1f} "
                f"{row['extra_peak_mb']:14.1f} {1000 * row['extra_peak_mb'] / row['jets']:11.2f} "
                f"{row['wall_s']:7.1f} {row['jets_per_s']:7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
