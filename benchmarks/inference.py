"""Inference throughput and memory of the paper-size DGCNN: our engine vs references.

Methods (all the same weights, float32, CPU):

* ``engine``: :class:`rs3l_coffea.inference.InferenceEngine` (jets sorted by multiplicity,
  particle-budget batches trimmed to their largest jet, algebraic EdgeConv, running gather-max).
* ``engine-invariant``: the same engine with ``batch_invariant=True`` (one call per jet,
  trimmed to its own multiplicity: bit-identical outputs under any batching).
* ``dense-padded``: one call of our model on the whole batch padded to 100 slots (no sorting).
* ``naive-dense``: explicit edge messages, the whole ``[B, 100, k, 256]`` edge tensor built at
  once (our ``edge_path="general"`` with chunking off), padded to 100.
* ``pyg-edgeconv``: PyG ``EdgeConv`` (max) on the flat batched graph with a per-jet pure-torch
  exact kNN (PyG 2.8's ``knn`` needs pyg-lib, unavailable here), ``global_add_pool``; when
  torch_geometric is not installed, ``sparse-edges``: the same computation written with
  ``scatter_reduce`` (what PyG's EdgeConv does internally).

Each (method, batch size) runs in a fresh subprocess; memory = peak RSS above the pre-call RSS
during the first (cold) call on the batch, sampled every 2 ms by a psutil thread (tracemalloc
does not see torch allocations); throughput = jets / wall time of one ``run`` over the batch,
best of the following repeats (and jets / CPU time of the calling process, less
sensitive to neighbours on shared cores); parity = max relative difference of the embeddings of the
first 64 jets vs the engine at a different particle budget.

Usage: ``.venv/bin/python benchmarks/inference.py [--batches 256 1024] [--threads 2]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "rs3l-published" / "mar20_run0.pt"
METHODS = ("engine", "engine-invariant", "dense-padded", "naive-dense", "pyg-edgeconv")
MAX_PARTICLES = 100


def make_jets(n_jets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random features with realistic multiplicities: gamma(4, 12.5) → mean ≈ 50, clipped to [2, 100]."""
    rng = np.random.default_rng(seed)
    multiplicity = np.clip(np.rint(rng.gamma(4.0, 12.5, n_jets)), 2, MAX_PARTICLES).astype(int)
    x = rng.normal(size=(n_jets, MAX_PARTICLES, 15)).astype(np.float32)
    mask = np.arange(MAX_PARTICLES) < multiplicity[:, None]
    x[~mask] = 0.0
    return x, mask


def load_model():
    from rs3l_coffea.nn import build_model, load_published_rs3l

    if PUBLISHED.is_file():
        return load_published_rs3l(PUBLISHED), "published mar20_run0 weights"
    import torch

    torch.manual_seed(0)
    return build_model().eval(), "random init (published weights not found)"


class PeakRSS:
    """Peak resident memory above the starting value, sampled in a background thread."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def pyg_runner(model):
    """Forward pass of the same weights as a PyG-style sparse graph computation."""
    import torch

    backbone = model.backbone
    try:
        from torch_geometric.nn import EdgeConv, global_add_pool

        convs = []
        for conv in backbone.convs:
            edge_conv = EdgeConv(torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ELU()), aggr="max")
            edge_conv.nn.load_state_dict(conv.message.state_dict())  # after __init__'s reset
            convs.append(edge_conv)
        name = "pyg-edgeconv"
    except ImportError:
        convs, global_add_pool = None, None
        name = "sparse-edges"

    def knn_edges(h: torch.Tensor, ptr: list[int], k: int) -> torch.Tensor:
        # per-jet brute-force exact kNN, as torch_cluster's CPU knn loops over examples
        sources, targets = [], []
        for start, stop in itertools.pairwise(ptr):
            block = h[start:stop]
            dist = torch.cdist(block, block, compute_mode="donot_use_mm_for_euclid_dist")
            nearest = torch.topk(dist, min(k, stop - start), dim=1, largest=False).indices
            sources.append(nearest.reshape(-1) + start)
            targets.append(torch.arange(start, stop).repeat_interleave(nearest.shape[1]))
        return torch.stack([torch.cat(sources), torch.cat(targets)])

    def run(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            counts = mask.sum(1)
            ptr = [0, *np.cumsum(counts).tolist()]
            h = torch.from_numpy(x[mask])  # flat (N_particles, 15), jets contiguous
            batch = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))
            h = backbone.embed(h)
            for index, conv in enumerate(backbone.convs):
                edges = knn_edges(h, ptr, conv.k)
                if convs is not None:
                    h = convs[index](h, edges)
                else:
                    xi, xj = h[edges[1]], h[edges[0]]
                    messages = conv.message(torch.cat([xi, xj - xi], dim=1))
                    out = torch.full((h.shape[0], messages.shape[1]), float("-inf"))
                    h = out.scatter_reduce(0, edges[1, :, None].expand_as(messages), messages, "amax")
            if global_add_pool is not None:
                pooled = global_add_pool(h, batch, size=len(counts))
            else:
                pooled = torch.zeros(len(counts), h.shape[1]).index_add_(0, batch, h)
            return backbone.output(pooled).numpy()

    return name, run


def worker(method: str, n_jets: int, threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from rs3l_coffea.inference import InferenceEngine

    model, weights = load_model()
    x, mask = make_jets(n_jets)
    name = method
    if method in ("engine", "engine-invariant"):
        engine = InferenceEngine(model, threads=threads, batch_invariant=method == "engine-invariant")

        def run(x, mask):
            return engine.run(x, mask)[0]
    elif method in ("dense-padded", "naive-dense"):
        from rs3l_coffea.nn import DGCNNConfig, ModelConfig, build_model

        if method == "naive-dense":
            config = ModelConfig(backbone=DGCNNConfig(edge_path="general", gather_budget=1 << 62))
            dense = build_model(config).eval()
            dense.load_state_dict(model.state_dict())
        else:
            dense = model

        def run(x, mask):
            with torch.inference_mode():
                return dense(torch.from_numpy(x), torch.from_numpy(mask))[0].numpy()
    else:
        name, run = pyg_runner(model)
    # First full call: peak memory from a cold start (it is also the warm-up), then timing.
    with PeakRSS() as rss:
        run(x, mask)
    peak = rss.delta_mb
    best = best_cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(x, mask)
        elapsed = time.perf_counter() - start
        best, best_cpu = min(best, elapsed), min(best_cpu, time.process_time() - start_cpu)
        if elapsed > 20:
            break
    check = run(x[:64], mask[:64])
    reference = InferenceEngine(model, particle_budget=2048, batch_invariant=False).run(x[:64], mask[:64])[0]
    parity = float(np.max(np.abs(check - reference).max(1) / np.abs(reference).max(1)))
    return {"method": name, "jets": n_jets, "jets_per_s": n_jets / best,
            "jets_per_cpu_s": n_jets / best_cpu, "peak_mb": peak,
            "parity": parity, "weights": weights, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "JETS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads, args.repeats)))
        return
    rows = []
    for n_jets in args.batches:
        for method in args.methods:
            command = [sys.executable, __file__, "--worker", method, str(n_jets),
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  done {method} @ {n_jets}", file=sys.stderr)
    baseline = {r["jets"]: r["jets_per_s"] for r in rows if r["method"] in ("pyg-edgeconv", "sparse-edges")}
    print(f"\nCommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"Model: paper-size DGCNN ({rows[0]['weights']}), float32, CPU, {args.threads} threads; "
          "multiplicity gamma(4, 12.5) clipped to [2, 100] (mean ~50)\n")
    print("| method | batch (jets) | jets/s | jets/CPU-s | × PyG-equivalent | peak RSS Δ (MB) "
          "| max rel. Δ vs engine (64 jets) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = r["jets_per_s"] / baseline[r["jets"]] if r["jets"] in baseline else float("nan")
        print(f"| {r['method']} | {r['jets']} | {r['jets_per_s']:.0f} | {r['jets_per_cpu_s']:.0f} | {speedup:.1f} | {r['peak_mb']:.0f} | {r['parity']:.1e} |")


if __name__ == "__main__":
    main()
