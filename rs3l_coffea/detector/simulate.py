"""Vectorized parametric detector simulation: final-state particles -> EFlow-like candidates.

Works on all events of a batch at once (flat numpy arrays plus per-event counts); no
per-particle Python loop. All randomness comes from the ``numpy.random.Generator`` passed in,
so the same generator state gives the same candidates.

Physics choices (documented in ``docs/simulation.md``):

* Charged particles inside the tracker acceptance are reconstructed as tracks with an
  efficiency; the track keeps the true direction and mass, its pT is smeared with a Gaussian
  of relative width ``a (+) b*pT``. Charged particles that are not tracked (outside the
  tracker, or lost to the inefficiency) but inside the calorimeters deposit their energy like
  neutrals, as in particle flow: electrons in the ECAL (-> photon candidate), hadrons in the
  HCAL (-> neutral-hadron candidate). Untracked muons are lost (minimum ionising).
* Photons -> ECAL, all other visible neutrals (n, K0L, and K0S/Lambda which are stable with
  ``ParticleDecays:limitTau0 = on``) -> HCAL. Energies are smeared with ``s/sqrt(E) (+) c``,
  directions are kept, candidates are massless, deposits below the threshold are dropped.
  There is no tower granularity (every particle is its own deposit).
* Neutrinos (|PID| 12, 14, 16) are invisible.
* Impact parameters in the straight-line approximation from the true production vertex
  (x, y, z) and momentum: ``d0 = (x*py - y*px)/pT`` (signed like Delphes' ``D0``) and
  ``dz = z - (x*px + y*py)/pT * pz/pT`` (z at the point of closest approach to the beam
  line), then smeared with ``a (+) b/pT``. The beam spot is at the origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from rs3l_coffea.detector.columns import JaggedColumns, jagged_record
from rs3l_coffea.detector.params import DetectorParams

__all__ = ["FinalStateParticles", "jagged_record", "simulate", "simulate_columns"]

NEUTRINO_IDS = (12, 14, 16)
ELECTRON_ID = 11
MUON_ID = 13
PHOTON_ID = 22


@dataclass
class FinalStateParticles:
    """Flat arrays of the final-state particles of a batch of events (GeV, mm).

    ``counts[i]`` particles belong to event ``i``; ``index`` is each particle's index in its
    event's stored ``Particle`` record (carried into ``ParticleIndex`` of the candidates).
    ``pt``, ``eta``, ``phi`` may be passed when already computed (``hypot(px, py)``,
    ``arcsinh(pz / pt)`` where pT > 0, ``arctan2(py, px)``); they are derived otherwise.
    """

    counts: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    mass: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray
    index: np.ndarray
    pt: np.ndarray | None = None
    eta: np.ndarray | None = None
    phi: np.ndarray | None = None


def _quadrature(*terms: np.ndarray | float) -> np.ndarray:
    return np.sqrt(sum(np.square(term) for term in terms))


def track_pt_resolution(pt: np.ndarray, abs_eta: np.ndarray, params: DetectorParams) -> np.ndarray:
    """Relative track pT resolution sigma(pT)/pT = a (+) b*pT (barrel or endcap)."""
    barrel = abs_eta < params.track_eta_barrel
    const = np.where(barrel, params.track_pt_res_const_barrel, params.track_pt_res_const_endcap)
    slope = np.where(barrel, params.track_pt_res_slope_barrel, params.track_pt_res_slope_endcap)
    return _quadrature(const, slope * pt)


def track_efficiency(
    pt: np.ndarray, abs_eta: np.ndarray, abs_pid: np.ndarray, params: DetectorParams
) -> np.ndarray:
    """Track reconstruction probability inside the acceptance."""
    barrel = abs_eta < params.track_eta_barrel
    low = np.where(barrel, params.track_eff_low_pt_barrel, params.track_eff_low_pt_endcap)
    high = np.where(barrel, params.track_eff_barrel, params.track_eff_endcap)
    eff = np.where(pt < 1.0, low, high)
    return np.where(abs_pid == MUON_ID, params.track_eff_muon, eff)


def calo_resolution(energy: np.ndarray, stochastic: float, constant: float) -> np.ndarray:
    """Relative calorimeter resolution sigma(E)/E = s/sqrt(E) (+) c."""
    return _quadrature(stochastic / np.sqrt(np.maximum(energy, 1e-12)), constant)


def impact_parameters(
    vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True (d0, dz) in mm, straight-line extrapolation to the beam line (see module doc)."""
    pt = np.hypot(px, py)
    d0 = (vx * py - vy * px) / pt
    dz = vz - (vx * px + vy * py) / pt * (pz / pt)
    return d0, dz


def _event_index(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _counts(event_index: np.ndarray, n_events: int) -> np.ndarray:
    return np.bincount(event_index, minlength=n_events)


def simulate(
    particles: FinalStateParticles, params: DetectorParams, rng: np.random.Generator
) -> dict[str, ak.Array]:
    """Return jagged ``EFlowTrack``, ``EFlowPhoton``, ``EFlowNeutralHadron`` candidates.

    Tracks carry PT, Eta, Phi, Mass, Charge, PID (true PDG id), D0, DZ (mm) and ParticleIndex;
    photons and neutral hadrons carry ET, Eta, Phi, E and ParticleIndex.
    """
    return {
        name: candidates.to_awkward()
        for name, candidates in simulate_columns(particles, params, rng).items()
    }


def simulate_columns(
    particles: FinalStateParticles, params: DetectorParams, rng: np.random.Generator
) -> dict[str, JaggedColumns]:
    """:func:`simulate` with the candidates as flat columns (the generator joins batches).

    Tracks carry PT, Eta, Phi, Mass, Charge, PID (true PDG id), D0, DZ (mm) and ParticleIndex;
    photons and neutral hadrons carry ET, Eta, Phi, E and ParticleIndex.
    """
    p = particles
    n_events = len(p.counts)
    event = _event_index(p.counts)
    pt = np.hypot(p.px, p.py) if p.pt is None else p.pt
    has_pt = pt > 0  # exactly collinear particles (e.g. beam remnants at pT=0) go down the beam pipe
    if p.eta is None:
        eta = np.where(has_pt, np.arcsinh(p.pz / np.where(has_pt, pt, 1.0)), np.copysign(np.inf, p.pz))
    else:
        eta = np.where(has_pt, p.eta, np.copysign(np.inf, p.pz))
    abs_eta = np.abs(eta)
    phi = np.arctan2(p.py, p.px) if p.phi is None else p.phi
    abs_pid = np.abs(p.pid)
    charged = p.charge != 0
    neutrino = np.logical_or.reduce([abs_pid == pid for pid in NEUTRINO_IDS])  # no sort, unlike isin

    # Draw every random number for every particle up front (fixed number of draws per
    # particle), so one particle's outcome does not shift the others' random numbers.
    u_eff = rng.random(len(pt))
    g_pt, g_d0, g_dz, g_e = rng.standard_normal((4, len(pt)))

    in_tracker = charged & has_pt & (abs_eta < params.track_eta_max) & (pt >= params.track_pt_min)
    tracked = in_tracker & (u_eff < track_efficiency(pt, abs_eta, abs_pid, params))
    in_calo = has_pt & (abs_eta < params.calo_eta_max) & ~neutrino

    # --- tracks --- (integer indices: one gather per column instead of two boolean masks)
    t = np.flatnonzero(tracked)
    t_pt = pt[t] * (1.0 + track_pt_resolution(pt[t], abs_eta[t], params) * g_pt[t])
    d0, dz = impact_parameters(p.vx[t], p.vy[t], p.vz[t], p.px[t], p.py[t], p.pz[t])
    d0 = d0 + _quadrature(params.d0_res_const, params.d0_res_slope / pt[t]) * g_d0[t]
    dz = dz + _quadrature(params.dz_res_const, params.dz_res_slope / pt[t]) * g_dz[t]
    keep_track = np.flatnonzero(t_pt > 0)  # a >100% downward fluctuation is a lost track
    kept = t[keep_track]
    tracks = JaggedColumns(
        _counts(event[kept], n_events),
        {
            "PT": t_pt[keep_track].astype(np.float32),
            "Eta": eta[kept].astype(np.float32),
            "Phi": phi[kept].astype(np.float32),
            "Mass": p.mass[kept].astype(np.float32),
            "Charge": p.charge[kept].astype(np.int32),
            "PID": p.pid[kept].astype(np.int32),
            "D0": d0[keep_track].astype(np.float32),
            "DZ": dz[keep_track].astype(np.float32),
            "ParticleIndex": p.index[kept].astype(np.int32),
        },
    )

    # --- calorimeter deposits (neutrals, and charged particles that were not tracked) ---
    untracked = in_calo & ~tracked
    to_ecal = untracked & ((abs_pid == PHOTON_ID) | (abs_pid == ELECTRON_ID))
    to_hcal = untracked & ~to_ecal & (abs_pid != MUON_ID)
    ecal_res = calo_resolution(p.e, params.ecal_stochastic, params.ecal_constant)
    hcal_res = calo_resolution(p.e, params.hcal_stochastic, params.hcal_constant)
    smeared_e = p.e * (1.0 + np.where(to_ecal, ecal_res, hcal_res) * g_e)

    collections = {"EFlowTrack": tracks}
    for name, mask in (
        ("EFlowPhoton", to_ecal & (smeared_e >= params.photon_e_min)),
        ("EFlowNeutralHadron", to_hcal & (smeared_e >= params.neutral_hadron_e_min)),
    ):
        selected = np.flatnonzero(mask)
        energy = smeared_e[selected]
        selected_eta = eta[selected]
        collections[name] = JaggedColumns(
            _counts(event[selected], n_events),
            {
                "ET": (energy / np.cosh(selected_eta)).astype(np.float32),
                "Eta": selected_eta.astype(np.float32),
                "Phi": phi[selected].astype(np.float32),
                "E": energy.astype(np.float32),
                "ParticleIndex": p.index[selected].astype(np.int32),
            },
        )
    return collections
