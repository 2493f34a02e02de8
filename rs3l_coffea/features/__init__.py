"""Feature builder: the 15 RS3L particle features, jet observables, selection and truth labels.

Public API:

* :data:`FEATURE_NAMES`, :data:`N_FEATURES`, :data:`FEATURE_INDEX` -- the fixed feature order.
* :func:`build_features` ``(jets, constituents, max_particles=100) -> (x, mask)``.
* :func:`jet_observables` ``(jets, constituents) -> dict`` (pt, eta, phi, mass, msd, n2, ...).
* :class:`JetSelection` -- configurable kinematic selection.
* :class:`JetLabel`, :func:`truth_labels` -- generator-level jet labels.
"""

from __future__ import annotations

from rs3l_coffea.features.builder import DEFAULT_MAX_PARTICLES, build_features
from rs3l_coffea.features.names import FEATURE_INDEX, FEATURE_NAMES, N_FEATURES
from rs3l_coffea.features.observables import jet_observables
from rs3l_coffea.features.selection import JetSelection
from rs3l_coffea.features.truth import JetLabel, truth_labels

__all__ = [
    "DEFAULT_MAX_PARTICLES",
    "FEATURE_INDEX",
    "FEATURE_NAMES",
    "N_FEATURES",
    "JetLabel",
    "JetSelection",
    "build_features",
    "jet_observables",
    "truth_labels",
]
