"""Jet-level observables: kinematics, soft-drop mass, N2 (ungroomed and groomed), constituent count.

All jets with at least two constituents are reclustered together in ONE fastjet
``ClusterSequence`` (each jet is one "event" of the sequence), with Cambridge/Aachen and a
radius large enough (``R = 10``) that every jet's constituents end in exactly one exclusive jet.

* ``msd``: soft-drop groomed mass, ``beta = 0``, ``z_cut = 0.1``, ``R0 = 0.8``
  (``exclusive_jets_softdrop_grooming``), on all constituents.
* ``n2``: ``exclusive_jets_energy_correlator(njets=1, func="nseries", npoint=2, beta=1.0)``,
  i.e. ``e3^(2) / (e2^(1))^2`` with pT fractions and rapidity-azimuth distances, on the
  **ungroomed** jet.
* ``n2_groomed``: the same N2 on the soft-drop groomed jet's constituents (soft drop as for
  ``msd``): N2 as CMS uses it (NanoAOD ``FatJet_n2b1``, computed on the soft-drop groomed PUPPI
  jet). Compared with CMS's stored ``n2b1`` on pfnano.root the values differ because CMS uses
  PUPPI-weighted candidates (pass ``puppi=True`` to the reader to do the same) and corrected
  jets; see docs/observables.md for the measured agreement.

Cost and the constituent cap: the energy correlator is O(n^3) in the number of particles
(one jet of 10,000 took 947 s) and fastjet's soft-drop grooming grows faster than linearly too;
on this machine (2 busy cores, ``python benchmarks/observables_cost.py``) N2 on every particle
took 7.3 s at 1,000 and 37 s at 2,000 constituents, soft drop 1.3 s and 2.0 s. ``msd``, ``n2`` and
``n2_groomed`` are therefore computed on the **leading ``max_particles`` constituents in pT**
(default 100, the same list the 15 features use). That is exact for every jet with at most
100 constituents (pfnano.root's FatJets have at most 84) and bounds the cost otherwise (0.09 s
for a 10,000-constituent jet in the benchmark above); for busier jets the softest constituents
are left out. ``max_particles=None`` uses every constituent (exact, O(n^3)). ``n_constituents``
always counts every constituent.

Unusable particles are dropped first with the one rule
:func:`rs3l_coffea.kinematics.good_particles` that :func:`~rs3l_coffea.features.build_features`
applies too (any non-finite field, pT <= 0, E <= 0, |eta| >= 10), so with the same cap the
observables see exactly the particles the features see; ``n_constituents`` counts the
remaining ones.
Jets with fewer than two constituents (or, rarely, a non-finite result, e.g. two exactly
collinear particles) get ``msd = 0``, ``n2 = 0`` and ``valid = False``; every other jet has
``valid = True``. ``n2_groomed_valid`` is False (and ``n2_groomed = 0``) where the groomed jet
keeps fewer than three particles (N2 is then 0 by construction; CMS stores -1 for exactly these
jets in pfnano.root) or ``valid`` is False. No NaN is ever returned.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.features.builder import DEFAULT_MAX_PARTICLES, flatten_jets
from rs3l_coffea.kinematics import four_momenta, good_particle_records

SOFTDROP_BETA = 0.0
SOFTDROP_ZCUT = 0.1
SOFTDROP_R0 = 0.8
N2_BETA = 1.0
N2_MAX_PARTICLES = DEFAULT_MAX_PARTICLES
_RECLUSTER_RADIUS = 10.0


def _leading(parts: ak.Array, max_particles: int | None) -> ak.Array:
    """The ``max_particles`` highest-pT particles of each jet (all of them when fewer or None)."""
    if max_particles is None or len(parts) == 0 or ak.max(ak.num(parts, axis=1)) <= max_particles:
        return parts
    if "pt" in parts.fields:
        pt2 = parts.pt
    else:
        pt2 = parts.px * parts.px + parts.py * parts.py
    order = ak.argsort(pt2, axis=1, ascending=False, stable=True)
    return parts[order][:, :max_particles]


def n2_of(momenta: ak.Array) -> np.ndarray:
    """N2 (beta = 1) of each jet of ``momenta`` (jets x particles, px/py/pz/E), every jet >= 2
    particles; NaN where fastjet gives a non-finite value. Costs O(n^3) per jet: cap first."""
    from rs3l_coffea._fastjet import import_fastjet

    fastjet = import_fastjet()  # banner off: it would go to standard output

    sequence = fastjet.ClusterSequence(
        ak.with_name(momenta, "Momentum4D"),
        fastjet.JetDefinition(fastjet.cambridge_algorithm, _RECLUSTER_RADIUS),
    )
    correlator = sequence.exclusive_jets_energy_correlator(
        njets=1, func="nseries", npoint=2, beta=N2_BETA
    )
    return np.asarray(ak.to_numpy(ak.flatten(correlator, axis=None)), dtype=np.float64)


def _good_particles(constituents: ak.Array) -> ak.Array:
    # The one particle-quality rule (rs3l_coffea.kinematics): the observables see exactly the
    # particles the features see, and fastjet never sees NaN/inf or pT <= 0.
    return constituents[good_particle_records(constituents)]


def jet_kinematics(jets: Any, constituents: Any) -> dict[str, np.ndarray]:
    """``pt, eta, phi, mass`` (float64) and ``n_constituents`` (int64) of each jet: the columns of
    :func:`jet_observables` that need no fastjet call (same values, jets flattened in event order)."""
    jets, constituents = flatten_jets(jets, constituents)
    return {
        "pt": np.asarray(ak.to_numpy(jets.pt), dtype=np.float64),
        "eta": np.asarray(ak.to_numpy(jets.eta), dtype=np.float64),
        "phi": np.asarray(ak.to_numpy(jets.phi), dtype=np.float64),
        "mass": np.asarray(ak.to_numpy(jets.mass), dtype=np.float64),
        "n_constituents": np.asarray(ak.to_numpy(ak.num(_good_particles(constituents), axis=1)), dtype=np.int64),
    }


def jet_observables(
    jets: Any, constituents: Any, max_particles: int | None = N2_MAX_PARTICLES
) -> dict[str, np.ndarray]:
    """Per-jet observables as numpy arrays (jets flattened in event order).

    Returns a dict with ``pt, eta, phi, mass, msd, n2, n2_groomed`` (float64),
    ``n_constituents`` (int64), ``valid`` and ``n2_groomed_valid`` (bool, see module docstring).
    ``max_particles`` caps the constituents ``msd``, ``n2`` and ``n2_groomed`` are computed on
    (leading in pT; ``None``: all, O(n^3) per jet).
    """
    import vector

    from rs3l_coffea._fastjet import import_fastjet

    fastjet = import_fastjet()  # banner off: it would go to standard output
    if max_particles is not None and max_particles < 3:
        raise ValueError(f"max_particles must be >= 3 for N2, got {max_particles}")
    vector.register_awkward()
    jets, constituents = flatten_jets(jets, constituents)
    n_jets = len(jets)
    constituents = _good_particles(constituents)
    n_constituents = np.asarray(ak.to_numpy(ak.num(constituents, axis=1)), dtype=np.int64)
    msd = np.zeros(n_jets)
    n2 = np.zeros(n_jets)
    n2_groomed = np.zeros(n_jets)
    valid = n_constituents >= 2
    groomed_valid = np.zeros(n_jets, dtype=bool)
    selected = np.flatnonzero(valid)
    if len(selected):
        momenta = four_momenta(_leading(constituents[selected], max_particles))
        sequence = fastjet.ClusterSequence(
            momenta, fastjet.JetDefinition(fastjet.cambridge_algorithm, _RECLUSTER_RADIUS)
        )
        groomed = sequence.exclusive_jets_softdrop_grooming(
            njets=1, beta=SOFTDROP_BETA, symmetry_cut=SOFTDROP_ZCUT, R0=SOFTDROP_R0
        )
        groomed_msd = np.asarray(ak.to_numpy(groomed.msoftdrop), dtype=np.float64)
        correlator = n2_of(momenta)
        finite = np.isfinite(groomed_msd) & np.isfinite(correlator)
        msd[selected] = np.where(finite, np.maximum(groomed_msd, 0.0), 0.0)
        n2[selected] = np.where(finite, correlator, 0.0)
        valid[selected] = finite

        groomed_parts = groomed.constituents
        # Three particles at least: with two, e3 = 0 and N2 = 0 says nothing (CMS stores -1).
        has_three = np.asarray(ak.to_numpy(ak.num(groomed_parts, axis=1)) >= 3) & finite
        if np.any(has_three):
            value = n2_of(groomed_parts[has_three])
            ok = np.isfinite(value)
            target = selected[has_three]
            n2_groomed[target] = np.where(ok, value, 0.0)
            groomed_valid[target] = ok
    return {
        "pt": np.asarray(ak.to_numpy(jets.pt), dtype=np.float64),
        "eta": np.asarray(ak.to_numpy(jets.eta), dtype=np.float64),
        "phi": np.asarray(ak.to_numpy(jets.phi), dtype=np.float64),
        "mass": np.asarray(ak.to_numpy(jets.mass), dtype=np.float64),
        "msd": msd,
        "n2": n2,
        "n2_groomed": n2_groomed,
        "n_constituents": n_constituents,
        "valid": valid,
        "n2_groomed_valid": groomed_valid,
    }
