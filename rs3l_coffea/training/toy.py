"""A learnable toy data set for tests, benchmarks and smoke runs (not physics).

Two jet classes with distinct substructure: class 0 has one hard prong, class 1 two prongs
separated by ΔR ≈ 0.4-0.7 (a boosted two-body decay) and more particles. A jet's re-simulated "partner" is a
noisy copy of it: particle momenta smeared, angles jittered, a few soft particles dropped,
as a different shower seed would do. Rows come in the training-ntuple layout
(:func:`rs3l_coffea.training.ntuple.build_pair_rows`), one pair per hard event.
"""

from __future__ import annotations

import numpy as np

from rs3l_coffea.features.names import FEATURE_INDEX, N_FEATURES
from rs3l_coffea.training.ntuple import JET_OBSERVABLES, MAX_PARTICLES
from rs3l_coffea.variants import VARIANT_CODES

_PID_FEATURES = ("is_photon", "is_muon", "is_electron", "is_charged_hadron", "is_neutral_hadron")


def _particles(rng: np.random.Generator, label: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT fractions, Δη, Δφ of ``n`` particles of a one-prong (0) or two-prong (1) jet."""
    fractions = rng.dirichlet(np.full(n, 0.6))
    if label == 0:
        spread = 0.05 + 0.1 * rng.random(n) * (1 - fractions) ** 2
        deta = rng.normal(0, 1, n) * spread
        dphi = rng.normal(0, 1, n) * spread
    else:
        separation = rng.uniform(0.4, 0.7)
        angle = rng.uniform(0, 2 * np.pi)
        prong = rng.random(n) < 0.5
        centre_eta = np.where(prong, 0.5, -0.5) * separation * np.cos(angle)
        centre_phi = np.where(prong, 0.5, -0.5) * separation * np.sin(angle)
        deta = centre_eta + rng.normal(0, 0.04, n)
        dphi = centre_phi + rng.normal(0, 0.04, n)
    return fractions, deta, dphi


def _features(
    jet_pt: float, fractions: np.ndarray, deta: np.ndarray, dphi: np.ndarray, kind: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((MAX_PARTICLES, N_FEATURES), np.float32)
    mask = np.zeros(MAX_PARTICLES, bool)
    order = np.argsort(-fractions)[:MAX_PARTICLES]
    n = len(order)
    pt = jet_pt * fractions[order]
    energy = pt * np.cosh(deta[order])  # jet at η = 0
    x[:n, FEATURE_INDEX["log_pt"]] = np.log(pt)
    x[:n, FEATURE_INDEX["log_pt_rel"]] = np.log(fractions[order])
    x[:n, FEATURE_INDEX["deta"]] = deta[order]
    x[:n, FEATURE_INDEX["dphi"]] = dphi[order]
    x[:n, FEATURE_INDEX["log_e"]] = np.log(energy)
    x[:n, FEATURE_INDEX["log_e_rel"]] = np.log(energy / energy.sum())
    x[:n, FEATURE_INDEX["delta_r"]] = np.hypot(deta[order], dphi[order])
    pid = kind[order]
    x[:n, FEATURE_INDEX["charge"]] = np.where(pid == 3, 1.0, 0.0)
    for k, name in enumerate(_PID_FEATURES):
        x[:n, FEATURE_INDEX[name]] = pid == k
    mask[:n] = True
    return x, mask


def toy_pair_rows(
    n_events: int,
    seed: int = 0,
    variants: tuple[str, ...] = ("seed",),
    noise: float = 0.1,
    first_event_id: int = 0,
) -> dict[str, np.ndarray]:
    """Rows in the ntuple layout: for each hard event one jet (label 0 or 1, alternating with
    probability 1/2) and one partner per variant (a noisy copy)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {k: [] for k in (
        "features", "mask", "partner_features", "partner_mask", "variant", "pair_rank",
        "hard_event_id", "jet_index", "label", "jettype", "pair_delta_r",
        *(f"jet_{o}" for o in JET_OBSERVABLES), *(f"partner_{o}" for o in JET_OBSERVABLES),
    )}
    for event in range(n_events):
        label = int(rng.random() < 0.5)
        # Two-prong jets also carry more particles (as H->bb jets do than light-quark jets).
        n = int(rng.integers(25, 50)) if label else int(rng.integers(10, 30))
        jet_pt = float(rng.uniform(400, 600))
        fractions, deta, dphi = _particles(rng, label, n)
        kind = rng.choice(5, size=n, p=[0.25, 0.02, 0.03, 0.5, 0.2])
        x, mask = _features(jet_pt, fractions, deta, dphi, kind)
        for rank, variant in enumerate(variants):
            keep = (fractions > 0.002) | (rng.random(n) < 0.5)  # drop some soft particles
            smeared = fractions[keep] * rng.lognormal(0, noise, keep.sum())
            smeared /= smeared.sum()
            px, mx = _features(
                jet_pt * rng.lognormal(0, noise / 4),
                smeared,
                deta[keep] + rng.normal(0, noise / 5, keep.sum()),
                dphi[keep] + rng.normal(0, noise / 5, keep.sum()),
                kind[keep],
            )
            columns["features"].append(x)
            columns["mask"].append(mask)
            columns["partner_features"].append(px)
            columns["partner_mask"].append(mx)
            columns["variant"].append(VARIANT_CODES[variant])
            columns["pair_rank"].append(rank)
            columns["hard_event_id"].append(first_event_id + event)
            columns["jet_index"].append(0)
            columns["label"].append(label)
            columns["jettype"].append(4 if label else 1)  # JetLabel H_BB vs LIGHT
            columns["pair_delta_r"].append(0.0)
            for o, value in zip(JET_OBSERVABLES, (jet_pt, 0.0, 0.0, 0.0), strict=True):
                columns[f"jet_{o}"].append(value)
                columns[f"partner_{o}"].append(value)
    dtypes = {"variant": np.int32, "pair_rank": np.int32, "hard_event_id": np.int64,
              "jet_index": np.int32, "label": np.int32, "jettype": np.int32}
    return {
        k: np.asarray(v, dtype=dtypes.get(k, bool if "mask" in k else np.float32))
        for k, v in columns.items()
    }
