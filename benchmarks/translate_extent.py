"""How far JetCLR's per-jet translation reaches on our jets (docs/augmentations.md).

JetCLR shifts a jet by up to ``width`` x its own Δη (Δφ) extent; our default shifts every jet by
up to ±1. Prints the extent quantiles and the fraction of jets with an extent below 1 (where
width 1 reaches less far than the fixed range), per file.

    python benchmarks/translate_extent.py gen/zh/zh_bb_nominal_00000.root gen/zj/zj_nominal_00000.root
"""

from __future__ import annotations

import sys

import torch

from rs3l_coffea.augment import jetclr_translation_bounds
from rs3l_coffea.features.names import FEATURE_INDEX
from rs3l_coffea.features.pipeline import features_from_file
from rs3l_coffea.features.selection import JetSelection

for path in sys.argv[1:]:
    result = features_from_file(path, selection=JetSelection.generated())
    x, mask = torch.from_numpy(result["features"]).double(), torch.from_numpy(result["mask"])
    _, eta_high, _, _ = jetclr_translation_bounds(
        x[..., FEATURE_INDEX["deta"]], x[..., FEATURE_INDEX["dphi"]], mask, 1.0
    )
    _, phi_extent, _, _ = jetclr_translation_bounds(
        x[..., FEATURE_INDEX["dphi"]], x[..., FEATURE_INDEX["deta"]], mask, 1.0
    )
    quantiles = torch.quantile(eta_high, torch.tensor([0.16, 0.5, 0.84], dtype=torch.float64))
    print(
        f"{path}: {len(x)} jets; Δη extent 16/50/84% {[round(float(q), 2) for q in quantiles]}; "
        f"extent < 1: Δη {float((eta_high < 1).double().mean()):.3f}, Δφ {float((phi_extent < 1).double().mean()):.3f}"
    )
