"""Jet-level observables: kinematics, soft-drop mass, N2 and constituent count (fastjet).

All jets with at least two constituents are reclustered together in ONE fastjet
``ClusterSequence`` (each jet is one "event" of the sequence), with Cambridge/Aachen and a
radius large enough (``R = 10``) that every jet's constituents end in exactly one exclusive jet.

* ``msd``: soft-drop groomed mass, ``beta = 0``, ``z_cut = 0.1``, ``R0 = 0.8``
  (``exclusive_jets_softdrop_grooming``).
* ``n2``: ``exclusive_jets_energy_correlator(njets=1, func="nseries", npoint=2, beta=1.0)``,
  i.e. ``e3^(2) / (e2^(1))^2``.

Particles with non-finite kinematics, pT <= 0 or E <= 0 are dropped first (as in
:func:`~rs3l_coffea.features.build_features`); ``n_constituents`` counts the remaining ones.
Jets with fewer than two constituents (or, rarely, a non-finite result, e.g. two exactly
collinear particles) get ``msd = 0``, ``n2 = 0`` and ``valid = False``; every other jet has
``valid = True``. No NaN is ever returned.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.features.builder import flatten_jets

SOFTDROP_BETA = 0.0
SOFTDROP_ZCUT = 0.1
SOFTDROP_R0 = 0.8
N2_BETA = 1.0
_RECLUSTER_RADIUS = 10.0


def jet_observables(jets: Any, constituents: Any) -> dict[str, np.ndarray]:
    """Per-jet observables as numpy arrays (jets flattened in event order).

    Returns a dict with ``pt, eta, phi, mass, msd, n2`` (float64), ``n_constituents`` (int64)
    and ``valid`` (bool, see module docstring).
    """
    import vector

    from rs3l_coffea._fastjet import import_fastjet

    fastjet = import_fastjet()  # banner off: it would go to standard output

    vector.register_awkward()
    jets, constituents = flatten_jets(jets, constituents)
    n_jets = len(jets)
    # Same particle filter as build_features: fastjet must never see NaN/inf or pT <= 0.
    with np.errstate(invalid="ignore"):
        good = (
            np.isfinite(constituents.pt)
            & np.isfinite(constituents.eta)
            & np.isfinite(constituents.phi)
            & np.isfinite(constituents.energy)
            & (constituents.pt > 0)
            & (constituents.energy > 0)
        )
    constituents = constituents[good]
    n_constituents = np.asarray(ak.to_numpy(ak.num(constituents, axis=1)), dtype=np.int64)
    msd = np.zeros(n_jets)
    n2 = np.zeros(n_jets)
    valid = n_constituents >= 2
    selected = np.flatnonzero(valid)
    if len(selected):
        parts = constituents[selected]
        momenta = ak.zip(
            {
                "px": parts.pt * np.cos(parts.phi),
                "py": parts.pt * np.sin(parts.phi),
                "pz": parts.pt * np.sinh(parts.eta),
                "E": parts.energy,
            },
            with_name="Momentum4D",
        )
        sequence = fastjet.ClusterSequence(
            momenta, fastjet.JetDefinition(fastjet.cambridge_algorithm, _RECLUSTER_RADIUS)
        )
        groomed = sequence.exclusive_jets_softdrop_grooming(
            njets=1, beta=SOFTDROP_BETA, symmetry_cut=SOFTDROP_ZCUT, R0=SOFTDROP_R0
        )
        groomed_msd = np.asarray(ak.to_numpy(groomed.msoftdrop), dtype=np.float64)
        correlator = sequence.exclusive_jets_energy_correlator(
            njets=1, func="nseries", npoint=2, beta=N2_BETA
        )
        correlator = np.asarray(ak.to_numpy(ak.flatten(correlator, axis=None)), dtype=np.float64)
        finite = np.isfinite(groomed_msd) & np.isfinite(correlator)
        msd[selected] = np.where(finite, np.maximum(groomed_msd, 0.0), 0.0)
        n2[selected] = np.where(finite, correlator, 0.0)
        valid[selected] = finite
    return {
        "pt": np.asarray(ak.to_numpy(jets.pt), dtype=np.float64),
        "eta": np.asarray(ak.to_numpy(jets.eta), dtype=np.float64),
        "phi": np.asarray(ak.to_numpy(jets.phi), dtype=np.float64),
        "mass": np.asarray(ak.to_numpy(jets.mass), dtype=np.float64),
        "msd": msd,
        "n2": n2,
        "n_constituents": n_constituents,
        "valid": valid,
    }
