"""Read the input convention of published RS3L checkpoints off their optimizer state.

For each checkpoint: the median over the 128 hidden units of ``sqrt(exp_avg_sq)`` of the first
layer's weight (Adam's gradient second moment, shape 128 x 15), per input column, divided by
that of the ``is_ch`` column (13). The gradient of ``W[u, f]`` is ``sum_particles delta_u x_f``,
so the ratio tracks the typical size of input ``f`` relative to the charged-hadron flag.
For our jets: ``sqrt(mean(x_f^2)) / sqrt(mean(is_ch^2))`` over all particles, for our
features as built and for the alternatives (linear GeV, linear ratios, absolute angles,
impact parameters in cm). Table in docs/published.md.

    python benchmarks/published_fingerprint.py --files gen/zh/zh_bb_nominal_00000.root gen/zj/zj_nominal_00000.root \\
        --published ../shared/reference/rs3l-published
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rs3l_coffea.features.names import FEATURE_NAMES
from rs3l_coffea.features.pipeline import concatenate_results, features_from_file
from rs3l_coffea.features.selection import JetSelection

CHECKPOINTS = ("mar20_run0", "mar20_run0_seed", "mar20_run0_seed_fsr", "mar20_run0_128outputdims")


def checkpoint_fingerprint(path: Path) -> np.ndarray:
    state = torch.load(path, map_location="cpu", weights_only=True)
    rms = state["opt"]["state"][0]["exp_avg_sq"].double().sqrt().numpy()
    return np.median(rms / rms[:, [13]], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", required=True)
    parser.add_argument("--published", type=Path, required=True)
    args = parser.parse_args()
    result = concatenate_results(
        [features_from_file(p, selection=JetSelection.generated()) for p in args.files]
    )
    mask = result["mask"]
    x = result["features"].astype(np.float64)
    values = x[mask]
    counts = mask.sum(axis=1)
    jet_eta, jet_phi = np.repeat(result["eta"], counts), np.repeat(result["phi"], counts)
    raw_ip = np.arctanh(np.clip(values[:, 7:9], -1 + 1e-6, 1 - 1e-6))  # mm
    alternatives = {
        0: ("linear GeV", np.exp(values[:, 0])), 1: ("linear", np.exp(values[:, 1])),
        2: ("absolute", values[:, 2] + jet_eta),
        3: ("absolute", np.mod(values[:, 3] + jet_phi + np.pi, 2 * np.pi) - np.pi),
        4: ("linear GeV", np.exp(values[:, 4])), 5: ("linear", np.exp(values[:, 5])),
        7: ("cm", raw_ip[:, 0] / 10), 8: ("cm", raw_ip[:, 1] / 10),
    }
    ch_rms = np.sqrt(np.mean(values[:, 13] ** 2))
    published = {
        name: checkpoint_fingerprint(args.published / f"{name}.pt")
        for name in CHECKPOINTS if (args.published / f"{name}.pt").is_file()
    }
    print(f"{len(x)} jets, {len(values)} particles; published: {' / '.join(published)}")
    for f, name in enumerate(FEATURE_NAMES):
        ours = np.sqrt(np.mean(values[:, f] ** 2)) / ch_rms
        alt = ""
        if f in alternatives:
            label, column = alternatives[f]
            alt = f"  {label}: {np.sqrt(np.mean(column ** 2)) / ch_rms:.3f}"
        pub = " / ".join(f"{fp[f]:.3f}" for fp in published.values())
        print(f"{f:2d} {name:18s} published {pub}   ours {ours:.3f}{alt}")
    for name in published:
        weight = torch.load(args.published / f"{name}.pt", map_location="cpu", weights_only=True)["model"]
        norms = weight["pf_encode.0.weight"].double().norm(dim=0).numpy()
        print(f"{name}: first-layer weight norm per column", " ".join(f"{v:.1f}" for v in norms))


if __name__ == "__main__":
    main()
