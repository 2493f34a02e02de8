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


def four_momenta(particles: Any) -> Any:
    """``Momentum4D`` records ``px, py, pz, E`` of awkward records with ``pt, eta, phi, energy``
    (the input fastjet takes; call ``vector.register_awkward()`` for the behaviour)."""
    import awkward as ak

    return ak.zip(
        {
            "px": particles.pt * np.cos(particles.phi),
            "py": particles.pt * np.sin(particles.phi),
            "pz": particles.pt * np.sinh(particles.eta),
            "E": particles.energy,
        },
        with_name="Momentum4D",
    )


def good_particles(
    pt: Any, eta: Any, phi: Any, energy: Any, charge: Any = None, d0: Any = None, dz: Any = None
) -> Any:
    """Mask of usable particles: each of ``pt, eta, phi, energy, charge, d0, dz`` finite,
    ``pt > 0``, ``energy > 0`` and ``|eta| < MAX_ABS_ETA``.

    ``charge``, ``d0`` and ``dz`` may be ``None`` for purely kinematic particles (then they are
    not checked). Elementwise on numpy or awkward arrays of any (equal) structure; comparisons
    with NaN are False without a warning.
    """
    with np.errstate(invalid="ignore"):
        good = np.isfinite(pt) & np.isfinite(eta) & np.isfinite(phi) & np.isfinite(energy)
        for extra in (charge, d0, dz):
            if extra is not None:
                good = good & np.isfinite(extra)
        return good & (pt > 0) & (energy > 0) & (abs(eta) < MAX_ABS_ETA)


def good_particle_records(particles: Any) -> Any:
    """:func:`good_particles` of particle records: the uniform fields of :mod:`rs3l_coffea.io`,
    or four-momenta without ``charge``/``d0``/``dz`` fields (those are then not checked)."""
    fields = set(particles.fields)
    return good_particles(
        particles.pt, particles.eta, particles.phi, particles.energy,
        *(particles[name] if name in fields else None for name in ("charge", "d0", "dz")),
    )
