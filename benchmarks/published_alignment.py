"""Do the published RS3L networks align our re-simulated pairs, the task they were trained on?

Nominal jets and their ``seed`` re-simulations (same hard event and jet index) of our generated
files are embedded; reported per model: NT-Xent (tau 0.1, 100 pairs per batch, as the
published training; random embeddings give about log(199) = 5.29), the mean cosine of positive
pairs and of shuffled pairs.

    python benchmarks/published_alignment.py --nominal gen/zh/zh_bb_nominal_00000.root gen/zj/zj_nominal_00000.root \\
        --seed-files gen/zh/zh_bb_seed_00000.root gen/zj/zj_seed_00000.root \\
        --published ../shared/reference/rs3l-published --pairs 800
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rs3l_coffea.features.pipeline import features_from_file
from rs3l_coffea.features.selection import JetSelection
from rs3l_coffea.inference.tagger import default_model_candidates
from rs3l_coffea.nn import load_model, load_published_rs3l


def paired(nominal: str, seed: str) -> tuple[np.ndarray, ...]:
    a = features_from_file(nominal, selection=JetSelection.generated())
    b = features_from_file(seed, selection=JetSelection.generated())
    index = {(h, j): i for i, (h, j) in enumerate(zip(a["hard_event_id"], a["jet"], strict=True))}
    ia, ib = [], []
    for i, key in enumerate(zip(b["hard_event_id"], b["jet"], strict=True)):
        if key in index:
            ia.append(index[key])
            ib.append(i)
    return a["features"][ia], a["mask"][ia], b["features"][ib], b["mask"][ib]


@torch.no_grad()
def unit_embedding(model: torch.nn.Module, x: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    parts = [model(torch.from_numpy(x[i : i + 200]), torch.from_numpy(mask[i : i + 200]))[0] for i in range(0, len(x), 200)]
    return torch.nn.functional.normalize(torch.cat(parts).double(), dim=1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1, batch: int = 100) -> float:
    losses = []
    for start in range(0, len(a) - batch + 1, batch):
        z = torch.cat([a[start : start + batch], b[start : start + batch]])
        similarity = z @ z.T / tau
        similarity.fill_diagonal_(-1e9)
        target = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)])
        losses.append(torch.nn.functional.cross_entropy(similarity, target).item())
    return float(np.mean(losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nominal", nargs="+", required=True)
    parser.add_argument("--seed-files", nargs="+", required=True)
    parser.add_argument("--published", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=800, help="pairs used, split evenly over the files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_file = args.pairs // len(args.nominal)
    parts = [paired(n, s) for n, s in zip(args.nominal, args.seed_files, strict=True)]
    xa, ma, xb, mb = (np.concatenate([p[k][:per_file] for p in parts]) for k in range(4))
    order = np.random.default_rng(1).permutation(len(xa))  # mix processes within batches
    xa, ma, xb, mb = xa[order], ma[order], xb[order], mb[order]
    default_path = next(p for p in default_model_candidates() if p.with_suffix(".json").is_file())
    models = {"default model": load_model(default_path)[0]}
    for name in ("mar20_run0", "mar20_run0_seed"):
        models[f"{name} (input adapter)"] = load_published_rs3l(args.published / f"{name}.pt")
        models[f"{name} (our features unchanged)"] = load_published_rs3l(args.published / f"{name}.pt", adapt_inputs=False)
    print(f"{len(xa)} pairs")
    for name, model in models.items():
        a, b = unit_embedding(model, xa, ma), unit_embedding(model, xb, mb)
        positive = (a * b).sum(1).mean().item()
        shuffled = (a * b.roll(1, 0)).sum(1).mean().item()
        print(f"{name:40s} NT-Xent {nt_xent(a, b):.3f}  cos(pairs) {positive:.3f}  cos(shuffled) {shuffled:.3f}")


if __name__ == "__main__":
    main()
