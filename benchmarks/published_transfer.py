"""Does the published RS3L representation transfer to our jets? A linear-probe measurement.

H->bb (signal: jets of the ZH files labelled H_BB) against Z+jet (all selected jets of the
Z+jet files), ``generated`` selection. For each representation a logistic regression is
trained on the unit-normalised embeddings of 70% of the jets and scored on the other 30%
(``rs3l_coffea.evaluation.representation.linear_probe``); the split is repeated for ten
seeds and the mean and standard deviation of the test AUC are reported. Representations:

* the published checkpoints fed our features unchanged (``adapt_inputs=False``: the state
  before the input adapter) and through ``PublishedInputAdapter`` (``load_published_rs3l``
  default), and with the two lepton flags swapped (the ``CLV1ROOT`` naming);
* a randomly initialised DGCNN of the same architecture (``torch.manual_seed(0)``);
* our default model (``rs3l_coffea/data/models/default``);
* jet mass alone (``m``) and a mass window (``m, m^2``), same probe without normalisation.

Usage (numbers in docs/published.md)::

    rs3l generate --process zh_bb --events 4000 --variants nominal,seed --seed 17 --out gen/zh --chunk-size 4000
    rs3l generate --process zh_bb --events 4000 --variants nominal --seed 27 --out gen/zh2 --chunk-size 4000
    rs3l generate --process zj --events 4000 --variants nominal,seed --seed 18 --out gen/zj --chunk-size 4000
    rs3l generate --process zj --events 8000 --variants nominal --seed 28 --out gen/zj2 --chunk-size 8000
    python benchmarks/published_transfer.py --signal gen/zh/zh_bb_nominal_00000.root gen/zh2/zh_bb_nominal_00000.root \\
        --background gen/zj/zj_nominal_00000.root gen/zj2/zj_nominal_00000.root \\
        --published ../shared/reference/rs3l-published --out transfer.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rs3l_coffea.evaluation.representation import linear_probe
from rs3l_coffea.features.pipeline import concatenate_results, features_from_file
from rs3l_coffea.features.selection import JetSelection
from rs3l_coffea.features.truth import JetLabel
from rs3l_coffea.inference.tagger import default_model_candidates
from rs3l_coffea.nn import build_model, load_model, load_published_rs3l


@torch.no_grad()
def embed(model: torch.nn.Module, x: np.ndarray, mask: np.ndarray, batch: int = 256) -> np.ndarray:
    parts = [
        model(torch.from_numpy(x[i : i + batch]), torch.from_numpy(mask[i : i + batch]))[0].double().numpy()
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(parts)


def probe(values: np.ndarray, labels: np.ndarray, *, normalize: bool, seeds: int) -> dict[str, float]:
    aucs = [
        linear_probe(values, labels, seed=seed, l2_normalize=normalize)["logistic"].auc
        for seed in range(seeds)
    ]
    return {"auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs, ddof=1)), "splits": seeds}


def swap_lepton_flags(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[..., [11, 12]] = x[..., [12, 11]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", nargs="+", required=True)
    parser.add_argument("--background", nargs="+", required=True)
    parser.add_argument("--published", type=Path, required=True, help="folder with mar20_run0*.pt")
    parser.add_argument("--checkpoints", nargs="+", default=["mar20_run0", "mar20_run0_seed"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    selection = JetSelection.generated()
    sig = concatenate_results([features_from_file(p, selection=selection) for p in args.signal])
    bkg = concatenate_results([features_from_file(p, selection=selection) for p in args.background])
    keep = sig["label"] == int(JetLabel.H_BB)
    x = np.concatenate([sig["features"][keep], bkg["features"]])
    mask = np.concatenate([sig["mask"][keep], bkg["mask"]])
    mass = np.concatenate([sig["mass"][keep], bkg["mass"]])
    labels = np.r_[np.ones(int(keep.sum())), np.zeros(len(bkg["features"]))]
    results: dict[str, object] = {
        "n_signal": int(keep.sum()), "n_background": len(bkg["features"]), "test_fraction": 0.3,
    }
    rows: dict[str, dict[str, float]] = {}
    rows["mass"] = probe(mass[:, None], labels, normalize=False, seeds=args.seeds)
    rows["mass_window"] = probe(np.c_[mass, mass**2 / 100.0], labels, normalize=False, seeds=args.seeds)
    for name in args.checkpoints:
        path = args.published / f"{name}.pt"
        bare = load_published_rs3l(path, adapt_inputs=False)
        adapted = load_published_rs3l(path)
        rows[f"{name}/our_features_unchanged"] = probe(embed(bare, x, mask), labels, normalize=True, seeds=args.seeds)
        rows[f"{name}/lepton_flags_swapped"] = probe(
            embed(bare, swap_lepton_flags(x), mask), labels, normalize=True, seeds=args.seeds
        )
        rows[f"{name}/input_adapter"] = probe(embed(adapted, x, mask), labels, normalize=True, seeds=args.seeds)
        print(name, {k: v for k, v in rows.items() if k.startswith(name)}, flush=True)
    torch.manual_seed(0)
    rows["random_init_dgcnn"] = probe(embed(build_model().eval(), x, mask), labels, normalize=True, seeds=args.seeds)
    default_path = next(p for p in default_model_candidates() if p.with_suffix(".json").is_file())
    default, _ = load_model(default_path)
    rows["default_model"] = probe(embed(default, x, mask), labels, normalize=True, seeds=args.seeds)
    results["probe_auc"] = rows
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in rows.items():
        print(f"{key:45s} {value['auc_mean']:.3f} +- {value['auc_std']:.3f}")


if __name__ == "__main__":
    main()
