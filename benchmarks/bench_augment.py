"""Throughput of the symmetry augmentations on padded batches (CPU, one thread by default).

Usage: ``python benchmarks/bench_augment.py [--jets 100] [--particles 100] [--threads 1]``.
Prints milliseconds per batch and jets per second for each augmentation and the JetCLR chain.
The batch is synthetic (random jets with 20-80 particles); timings do not depend on values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rs3l_coffea.augment import AUGMENTATIONS, build_augmentation
from rs3l_coffea.features.names import FEATURE_INDEX as FI
from rs3l_coffea.features.names import N_FEATURES


def synthetic_batch(n_jets: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(min(20, width), min(80, width) + 1, size=n_jets)
    mask = np.arange(width)[None, :] < counts[:, None]
    pt = np.sort(rng.pareto(1.5, size=(n_jets, width)) * 20 + 0.5, axis=1)[:, ::-1]
    deta, dphi = rng.normal(0, 0.2, (2, n_jets, width))
    eta_jet = rng.uniform(-2, 2, size=(n_jets, 1))
    energy = pt * np.cosh(eta_jet + deta)
    jet_pt, jet_e = (pt * mask).sum(1, keepdims=True), (energy * mask).sum(1, keepdims=True)
    x = np.zeros((n_jets, width, N_FEATURES), dtype=np.float32)
    x[..., FI["log_pt"]], x[..., FI["log_pt_rel"]] = np.log(pt), np.log(pt / jet_pt)
    x[..., FI["deta"]], x[..., FI["dphi"]] = deta, dphi
    x[..., FI["log_e"]], x[..., FI["log_e_rel"]] = np.log(energy), np.log(energy / jet_e)
    x[..., FI["delta_r"]] = np.hypot(deta, dphi)
    x[..., FI["is_photon"]] = 1.0
    x[~mask] = 0.0
    return torch.from_numpy(x), torch.from_numpy(mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=100)
    parser.add_argument("--particles", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, mask = synthetic_batch(args.jets, args.particles)
    generator = torch.Generator().manual_seed(0)
    print(f"batch {args.jets} jets x {args.particles} slots, {args.threads} thread(s)")
    for spec in [*AUGMENTATIONS, "rotate,translate,smear,split"]:
        augmentation = build_augmentation(spec)
        augmentation(x, mask, generator)  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeat):
            augmentation(x, mask, generator)
        per_batch = (time.perf_counter() - start) / args.repeat
        print(f"{spec:32s} {1e3 * per_batch:8.2f} ms/batch {args.jets / per_batch:10.0f} jets/s")


if __name__ == "__main__":
    main()
