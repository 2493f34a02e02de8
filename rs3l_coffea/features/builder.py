"""The 15 per-particle RS3L features as a dense, padded array (fully vectorised).

Definitions (in :data:`~rs3l_coffea.features.names.FEATURE_NAMES` order), natural logs,
momenta and energies in GeV, impact parameters in mm:

* ``log_pt = log(pT)``, ``log_pt_rel = log(pT / pT_jet)``
* ``deta = eta - eta_jet``, ``dphi = phi - phi_jet`` wrapped to ``[-pi, pi)``
* ``log_e = log(E)``, ``log_e_rel = log(E / E_jet)`` with ``E_jet = sqrt((pT_jet cosh eta_jet)^2 + m_jet^2)``
* ``charge``, ``tanh_d0 = tanh(d0 / mm)``, ``tanh_dz = tanh(dz / mm)``
* ``delta_r = sqrt(deta^2 + dphi^2)``
* particle type from ``pdg_id`` and ``charge``: photon ``pdg_id == 22``; electron
  ``|pdg_id| == 11``; muon ``|pdg_id| == 13``; charged hadron: any other particle with
  ``charge != 0``; neutral hadron: any other particle with ``charge == 0`` (not a photon).
  Exactly one flag is 1 for every real particle.

Particles are sorted by pT descending within each jet, the leading ``max_particles`` kept,
the rest of each row zero-padded (features exactly 0, ``mask`` False). Unusable particles
(:func:`rs3l_coffea.kinematics.good_particles`: any non-finite field, pT <= 0, E <= 0 or
|eta| >= 10) are dropped first (the readers already remove them); the observables of
:func:`~rs3l_coffea.features.jet_observables` see exactly the same particles.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.errors import InputFileError
from rs3l_coffea.features.names import FEATURE_INDEX, N_FEATURES
from rs3l_coffea.kinematics import delta_phi, energy_from_pt_eta_mass, good_particles

DEFAULT_MAX_PARTICLES = 100
_NEEDED_CONSTITUENT_FIELDS = ("pt", "eta", "phi", "energy", "charge", "pdg_id", "d0", "dz")


def flatten_jets(jets: Any, constituents: Any) -> tuple[ak.Array, ak.Array]:
    """Accept events x jets (x particles) or already flat jets (x particles); return flat ones."""
    jets = ak.Array(jets)
    constituents = ak.Array(constituents)
    if constituents.ndim == 3:
        constituents = ak.flatten(constituents, axis=1)
    elif constituents.ndim != 2:
        raise ValueError(
            "constituents must be events x jets x particles or jets x particles, got "
            f"type {constituents.type}"
        )
    if jets.ndim == 2:
        jets = ak.flatten(jets, axis=1)
    if len(jets) != len(constituents):
        raise ValueError(
            f"{len(jets)} jets but {len(constituents)} constituent lists: jets and constituents "
            "must come from the same reader call"
        )
    return jets, constituents


def _numpy(array: Any, dtype: type = np.float64) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.fill_none(array, 0)), dtype=dtype)


def build_features(
    jets: Any, constituents: Any, max_particles: int = DEFAULT_MAX_PARTICLES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle features ``x`` (float32, ``(n_jets, max_particles, 15)``) and ``mask``.

    Args:
        jets: events x jets (or flat jets) records with ``pt, eta, phi, mass``.
        constituents: events x jets x particles (or jets x particles) records with the uniform
            fields of :mod:`rs3l_coffea.io` (``pt, eta, phi, energy, charge, pdg_id, d0, dz``).
        max_particles: number of particle slots per jet (leading in pT).

    Returns:
        ``(x, mask)``; jets in event order (flattened), ``mask`` bool ``(n_jets, max_particles)``.

    Raises:
        InputFileError: a jet has non-finite or non-positive pT/energy.
    """
    if max_particles < 1:
        raise ValueError(f"max_particles must be >= 1, got {max_particles}")
    jets, constituents = flatten_jets(jets, constituents)
    missing = [f for f in _NEEDED_CONSTITUENT_FIELDS if f not in constituents.fields]
    if missing:
        raise ValueError(f"constituents lack field(s) {', '.join(missing)} (use rs3l_coffea.io)")
    n_jets = len(jets)
    x = np.zeros((n_jets, max_particles, N_FEATURES), dtype=np.float32)
    mask = np.zeros((n_jets, max_particles), dtype=bool)
    if n_jets == 0:
        return x, mask

    jet_pt, jet_eta = _numpy(jets.pt), _numpy(jets.eta)
    jet_phi, jet_mass = _numpy(jets.phi), _numpy(jets.mass)
    with np.errstate(over="ignore", invalid="ignore"):
        jet_e = energy_from_pt_eta_mass(jet_pt, jet_eta, jet_mass)
    bad_jet = ~(np.isfinite(jet_pt) & np.isfinite(jet_eta) & np.isfinite(jet_phi))
    bad_jet |= ~np.isfinite(jet_e) | (jet_pt <= 0) | (jet_e <= 0)
    if np.any(bad_jet):
        first = int(np.flatnonzero(bad_jet)[0])
        raise InputFileError(
            f"jet {first} (flattened order) has invalid kinematics pt={jet_pt[first]!r}, "
            f"eta={jet_eta[first]!r}, phi={jet_phi[first]!r}, E={jet_e[first]!r}"
        )

    # Sort by pT descending inside each jet with awkward's per-list sort (C++, much faster than
    # a global numpy sort), then work on flat numpy arrays in that order.
    counts = _numpy(ak.num(constituents, axis=1), np.int64)
    local_order = ak.argsort(constituents.pt, axis=1, ascending=False, stable=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    jet_of = np.repeat(np.arange(n_jets, dtype=np.int64), counts)
    order = starts[jet_of] + _numpy(ak.flatten(local_order), np.int64)
    flat = ak.flatten(constituents, axis=1)
    pt, eta, phi = _numpy(flat.pt)[order], _numpy(flat.eta)[order], _numpy(flat.phi)[order]
    energy, charge = _numpy(flat.energy)[order], _numpy(flat.charge)[order]
    pdg = _numpy(flat.pdg_id, np.int64)[order]
    d0, dz = _numpy(flat.d0)[order], _numpy(flat.dz)[order]

    good = good_particles(pt, eta, phi, energy, charge, d0, dz)
    if not np.all(good):
        # NaN pT sorts anywhere: dropping after the sort keeps the others in pT order.
        pt, eta, phi, energy = pt[good], eta[good], phi[good], energy[good]
        charge, pdg, d0, dz, jet_of = charge[good], pdg[good], d0[good], dz[good], jet_of[good]
        counts = np.bincount(jet_of, minlength=n_jets)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    slot = np.arange(len(jet_of), dtype=np.int64) - starts[jet_of]
    keep = slot < max_particles
    if not np.all(keep):
        slot, row = slot[keep], jet_of[keep]
        pt, eta, phi, energy = pt[keep], eta[keep], phi[keep], energy[keep]
        charge, pdg, d0, dz = charge[keep], pdg[keep], d0[keep], dz[keep]
    else:
        row = jet_of

    deta = eta - jet_eta[row]
    dphi = delta_phi(phi, jet_phi[row])
    abs_pdg = np.abs(pdg)
    is_photon = pdg == 22
    is_electron = abs_pdg == 11
    is_muon = abs_pdg == 13
    is_charged_hadron = (charge != 0) & ~is_electron & ~is_muon
    is_neutral_hadron = (charge == 0) & ~is_photon & ~is_electron & ~is_muon
    log_pt, log_e = np.log(pt), np.log(energy)

    # Fill one contiguous (particles, 15) block, then scatter whole rows once.
    values = np.empty((len(row), N_FEATURES), dtype=np.float32)
    values[:, FEATURE_INDEX["log_pt"]] = log_pt
    values[:, FEATURE_INDEX["log_pt_rel"]] = log_pt - np.log(jet_pt)[row]
    values[:, FEATURE_INDEX["deta"]] = deta
    values[:, FEATURE_INDEX["dphi"]] = dphi
    values[:, FEATURE_INDEX["log_e"]] = log_e
    values[:, FEATURE_INDEX["log_e_rel"]] = log_e - np.log(jet_e)[row]
    values[:, FEATURE_INDEX["charge"]] = charge
    values[:, FEATURE_INDEX["tanh_d0"]] = np.tanh(d0)
    values[:, FEATURE_INDEX["tanh_dz"]] = np.tanh(dz)
    values[:, FEATURE_INDEX["delta_r"]] = np.hypot(deta, dphi)
    values[:, FEATURE_INDEX["is_photon"]] = is_photon
    values[:, FEATURE_INDEX["is_muon"]] = is_muon
    values[:, FEATURE_INDEX["is_electron"]] = is_electron
    values[:, FEATURE_INDEX["is_charged_hadron"]] = is_charged_hadron
    values[:, FEATURE_INDEX["is_neutral_hadron"]] = is_neutral_hadron
    destination = row * max_particles + slot
    x.reshape(n_jets * max_particles, N_FEATURES)[destination] = values
    mask.reshape(-1)[destination] = True
    return x, mask
