"""Generator-level jet labels (truth matching within Delta R < 0.8).

Input generator particles are the uniform records of
:func:`rs3l_coffea.io.gen_particles_from_events` (``pt, eta, phi, pdg_id, status, mother``;
Pythia8 status codes, absolute values; ``mother`` = event-local index of the first mother).

The rule, applied to every jet independently (``R = 0.8`` below, Delta R with wrapped phi):

1. **Boson decays.** A *boson* is a generator particle with ``|pdg_id|`` 23 (Z), 24 (W) or
   25 (H) that is the mother of exactly two quarks (``1 <= |pdg_id| <= 5``). If both decay quarks
   lie within R of the jet, the jet is ``H_BB`` (H and both quarks b), ``W_QQ`` (W), ``Z_QQ`` (Z);
   an H decaying to other quarks gives ``UNKNOWN``. With several such bosons, the hardest wins.
2. **Hard partons.** Otherwise take the hardest outgoing hard-process parton (status 23, a quark
   ``1 <= |pdg_id| <= 5`` or a gluon 21) within R of the jet. Quarks: ``|pdg_id|`` 1-3 ->
   ``LIGHT``, 4 -> ``C``, 5 -> ``B``.
3. **Gluons** are classified by the quark-antiquark pairs produced after the hard process
   (generator quarks with status outside 21-29) within R of the jet: a b and an anti-b ->
   ``G_BB``; else a c and an anti-c -> ``G_CC``; else a light quark and its antiquark (same
   ``|pdg_id|`` 1-3, opposite signs) -> ``G_QQ``; else ``G_GG``.
4. Nothing matched (or no generator record) -> ``UNKNOWN``.

The numbering follows the published RS3L ``jettype`` (1 q ... 8 g->gg), extended with W and Z.
"""

from __future__ import annotations

import enum
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.kinematics import delta_r

MATCH_RADIUS = 0.8
_BOSONS = {23: "Z", 24: "W", 25: "H"}


class JetLabel(enum.IntEnum):
    """Truth label of a jet (see the module docstring for the matching rule)."""

    UNKNOWN = 0
    LIGHT = 1
    C = 2
    B = 3
    H_BB = 4
    G_QQ = 5
    G_CC = 6
    G_BB = 7
    G_GG = 8
    W_QQ = 9
    Z_QQ = 10


def _label_event(
    jet_eta: np.ndarray, jet_phi: np.ndarray, gen: dict[str, np.ndarray], radius: float
) -> np.ndarray:
    labels = np.full(len(jet_eta), JetLabel.UNKNOWN, dtype=np.int64)
    n_gen = len(gen["pdg_id"])
    if len(jet_eta) == 0 or n_gen == 0:
        return labels
    pdg, status, mother, pt = gen["pdg_id"], gen["status"], gen["mother"], gen["pt"]
    abs_pdg = np.abs(pdg)
    inside = delta_r(jet_eta[:, None], jet_phi[:, None], gen["eta"][None, :], gen["phi"][None, :])
    inside = inside < radius  # (jets, gen)
    is_quark = (abs_pdg >= 1) & (abs_pdg <= 5)
    valid_mother = (mother >= 0) & (mother < n_gen)
    mother_pdg = np.where(valid_mother, np.abs(pdg[np.clip(mother, 0, n_gen - 1)]), 0)
    decay_quark = is_quark & valid_mother & np.isin(mother_pdg, list(_BOSONS))

    # 1. bosons with exactly two decay quarks, hardest first
    boson_candidates = np.unique(mother[decay_quark])
    boson_candidates = boson_candidates[np.argsort(-pt[boson_candidates], kind="stable")]
    decided = np.zeros(len(jet_eta), dtype=bool)
    for boson in boson_candidates:
        daughters = np.flatnonzero(decay_quark & (mother == boson))
        if len(daughters) != 2:
            continue
        contains = inside[:, daughters].all(axis=1) & ~decided
        kind = abs_pdg[boson]
        if kind == 25:
            label = JetLabel.H_BB if np.all(abs_pdg[daughters] == 5) else JetLabel.UNKNOWN
        else:
            label = JetLabel.W_QQ if kind == 24 else JetLabel.Z_QQ
        labels[contains] = label
        decided |= contains

    # 2. hardest outgoing hard-process parton inside the jet
    hard_parton = (status == 23) & (is_quark | (abs_pdg == 21))
    hard_index = np.flatnonzero(hard_parton)
    if len(hard_index) == 0:
        return labels
    hard_index = hard_index[np.argsort(-pt[hard_index], kind="stable")]
    hard_inside = inside[:, hard_index]
    has_hard = hard_inside.any(axis=1) & ~decided
    first = np.argmax(hard_inside, axis=1)
    matched_pdg = abs_pdg[hard_index[first]]
    quark_labels = np.where(
        matched_pdg == 5, JetLabel.B, np.where(matched_pdg == 4, JetLabel.C, JetLabel.LIGHT)
    )
    is_gluon = matched_pdg == 21
    labels = np.where(has_hard & ~is_gluon, quark_labels, labels)

    # 3. gluons: quark-antiquark pairs from after the hard process inside the jet
    later_quark = is_quark & ((status < 21) | (status > 29))

    def pair_inside(flavour: int) -> np.ndarray:
        quark = later_quark & (pdg == flavour)
        antiquark = later_quark & (pdg == -flavour)
        # asarray: numpy's stubs type ``any(axis=...)`` as possibly a scalar.
        return np.asarray(inside[:, quark].any(axis=1) & inside[:, antiquark].any(axis=1))

    light_pair = pair_inside(1) | pair_inside(2) | pair_inside(3)
    gluon_labels = np.where(
        pair_inside(5),
        JetLabel.G_BB,
        np.where(pair_inside(4), JetLabel.G_CC, np.where(light_pair, JetLabel.G_QQ, JetLabel.G_GG)),
    )
    return np.where(has_hard & is_gluon, gluon_labels, labels)


def truth_labels(jets: Any, gen: Any | None, radius: float = MATCH_RADIUS) -> np.ndarray:
    """Labels (int64 :class:`JetLabel` values) for events x jets, flattened in event order.

    ``gen`` is events x particles (uniform generator records) or ``None`` (all ``UNKNOWN``).
    The loop runs over events (numpy inside); labelling is not on the training hot path.
    """
    jets = ak.Array(jets)
    if jets.ndim != 2:
        raise ValueError(f"truth_labels needs events x jets, got type {jets.type}")
    counts = np.asarray(ak.to_numpy(ak.num(jets, axis=1)), dtype=np.int64)
    if gen is None:
        return np.zeros(int(counts.sum()), dtype=np.int64)
    gen = ak.Array(gen)
    if len(gen) != len(jets):
        raise ValueError(f"{len(jets)} events of jets but {len(gen)} of generator particles")
    jet_eta = ak.to_numpy(ak.flatten(jets.eta)).astype(np.float64)
    jet_phi = ak.to_numpy(ak.flatten(jets.phi)).astype(np.float64)
    gen_counts = np.asarray(ak.to_numpy(ak.num(gen, axis=1)), dtype=np.int64)
    flat_gen = {
        field: ak.to_numpy(ak.flatten(gen[field])).astype(
            np.float64 if field in ("pt", "eta", "phi") else np.int64
        )
        for field in ("pt", "eta", "phi", "pdg_id", "status", "mother")
    }
    jet_offsets = np.concatenate([[0], np.cumsum(counts)])
    gen_offsets = np.concatenate([[0], np.cumsum(gen_counts)])
    labels = np.zeros(int(counts.sum()), dtype=np.int64)
    for event in np.flatnonzero(counts):
        j0, j1 = jet_offsets[event], jet_offsets[event + 1]
        g0, g1 = gen_offsets[event], gen_offsets[event + 1]
        labels[j0:j1] = _label_event(
            jet_eta[j0:j1],
            jet_phi[j0:j1],
            {k: v[g0:g1] for k, v in flat_gen.items()},
            radius,
        )
    return labels
