"""Shared kinematics: angle wrapping, ΔR, energy from (pT, η, m) and the particle-quality rule.

Every function is written with plain operators and numpy ufuncs, so the same code runs on
numpy arrays, awkward arrays (ufuncs dispatch per element) and, for :func:`wrap_phi`, torch
tensors (``%`` is ``torch.remainder``, which like numpy takes the sign of the divisor).

The particle-quality rule (:func:`good_particles`) is the single definition of a usable
particle: the readers apply it before clustering, :func:`~rs3l_coffea.features.build_features`
before filling the feature slots and :func:`~rs3l_coffea.features.jet_observables` before
fastjet, so observables and features see exactly the same particles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_ABS_ETA = 10.0
"""Particles at ``|eta| >= MAX_ABS_ETA`` are unusable (Delphes writes pT = 0, eta = 999.9 tracks;
fastjet segfaults on them)."""


def wrap_phi(angle: Any) -> Any:
    """An angle (or angle difference) wrapped to ``[-pi, pi)``."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def delta_phi(phi1: Any, phi2: Any) -> Any:
    """``phi1 - phi2`` wrapped to ``[-pi, pi)``."""
    return wrap_phi(phi1 - phi2)


def delta_r(eta1: Any, phi1: Any, eta2: Any, phi2: Any) -> Any:
    """ΔR = sqrt(Δη² + Δφ²) with Δφ wrapped to ``[-pi, pi)`` (numpy broadcasting applies)."""
    return np.hypot(eta1 - eta2, delta_phi(phi1, phi2))


def energy_from_pt_eta_mass(pt: Any, eta: Any, mass: Any) -> Any:
    """``E = sqrt((pT cosh eta)^2 + m^2)``."""
    p = pt * np.cosh(eta)
    return np.sqrt(p * p + mass * mass)


def good_particles(
    pt: Any, eta: Any, phi: Any, energy: Any, charge: Any, d0: Any, dz: Any
) -> Any:
    """Mask of usable particles: every one of ``pt, eta, phi, energy, charge, d0, dz`` finite,
    ``pt > 0``, ``energy > 0`` and ``|eta| < MAX_ABS_ETA``.

    Elementwise on numpy or awkward arrays of any (equal) structure; comparisons with NaN are
    False without a warning.
    """
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(pt) & np.isfinite(eta) & np.isfinite(phi) & np.isfinite(energy)
        finite = finite & np.isfinite(charge) & np.isfinite(d0) & np.isfinite(dz)
        return finite & (pt > 0) & (energy > 0) & (abs(eta) < MAX_ABS_ETA)


def good_particle_records(particles: Any) -> Any:
    """:func:`good_particles` of records with the uniform fields of :mod:`rs3l_coffea.io`."""
    return good_particles(
        particles.pt, particles.eta, particles.phi, particles.energy,
        particles.charge, particles.d0, particles.dz,
    )
