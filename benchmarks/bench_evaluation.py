"""Wall time of the evaluation stage at study sizes (CPU, one torch/OpenMP thread by default).

Usage: ``python benchmarks/bench_evaluation.py [--jets 1000000] [--threads 1] [--out DIR]``.
Prints seconds per call for ROC/rejection, Wasserstein tables, probes, the anomaly autoencoder,
t-SNE and the corner plot. Inputs are synthetic Gaussians: timings depend on sizes only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hist
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from rs3l_coffea.evaluation import (
    anomaly_detection,
    background_rejection,
    knn_probe,
    linear_probe,
    plot_corner,
    roc_curve,
    subprocess_rocs,
    tsne_embedding,
    wasserstein_table,
    wasserstein_unbinned_table,
)

VARIANTS = ("nominal", "seed", "fsr_up", "fsr_down", "vincia", "vincia_althad", "rehadronize")


def timed(label: str, function: Callable[[], object]) -> object:
    start = time.perf_counter()
    result = function()
    print(f"{label:60s} {time.perf_counter() - start:8.2f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jets", type=int, default=1_000_000, help="jets for the ROC timings")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder for the corner plot")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_evaluation_"))

    with threadpool_limits(args.threads):
        n = args.jets
        truth = rng.uniform(size=n) < 0.3
        scores = rng.normal(size=n) + 2.0 * truth
        roc = timed(f"roc_curve, {n:,} jets", lambda: roc_curve(scores, truth))
        timed("background_rejection at 0.3/0.5/0.7", lambda: background_rejection(roc))
        labels = rng.integers(1, 9, size=n)
        backgrounds = {str(i): i for i in range(1, 9) if i != 4}
        timed(
            f"subprocess_rocs, {n:,} jets, 7 subprocesses + inclusive",
            lambda: subprocess_rocs(scores, labels, 4, backgrounds),
        )

        n_w = 200_000
        x = rng.normal(size=(n_w, 8))
        samples = {
            v: {f"z{d}": x[:, d] + 0.01 * i for d in range(8)} for i, v in enumerate(VARIANTS)
        }
        timed(
            f"unbinned W1 table, 7 variants x 8 dims x {n_w:,} jets",
            lambda: wasserstein_unbinned_table(samples),
        )
        h = hist.Hist(
            hist.axis.StrCategory(list(VARIANTS), name="variant"),
            hist.axis.IntCategory(list(range(8)), name="dim"),
            hist.axis.Regular(100, -6, 6, name="value"),
        )
        for v in VARIANTS:
            for d in range(8):
                h.fill(variant=v, dim=d, value=samples[v][f"z{d}"])
        timed(
            "binned W1 table from hist, 7 variants x 8 dims x 100 bins",
            lambda: wasserstein_table(h),
        )

        n_p = 50_000
        emb = rng.normal(size=(n_p, 8))
        lab = rng.integers(0, 2, size=n_p)
        emb[:, 0] += lab
        timed(f"linear_probe (logistic + LDA), {n_p:,} x 8", lambda: linear_probe(emb, lab))
        timed(f"knn_probe k=15, {n_p:,} x 8", lambda: knn_probe(emb, lab))
        timed(
            "anomaly_detection, 20k SM + 5k anomaly, 40 epochs",
            lambda: anomaly_detection(emb[:20_000], emb[20_000:25_000] + 1.0),
        )
        timed(
            "tsne_embedding, 2,000 points", lambda: tsne_embedding(emb[:2000], threads=args.threads)
        )
        timed(
            "plot_corner, 8 dims, 3 classes x 2,000 points (PNG + PDF)",
            lambda: plot_corner(emb[:6000], rng.integers(0, 3, 6000), out / "corner"),
        )


if __name__ == "__main__":
    main()
