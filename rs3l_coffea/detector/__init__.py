"""Parametric, vectorized, seeded CMS-like detector simulation (numpy/awkward only).

``simulate(particles, params, rng)`` turns final-state generator particles into Delphes-like
EFlow candidates (tracks with PID/charge/D0/DZ, photons, neutral hadrons). All parameters are
in :class:`DetectorParams`.
"""

from rs3l_coffea.detector.params import DetectorParams
from rs3l_coffea.detector.simulate import (
    FinalStateParticles,
    calo_resolution,
    impact_parameters,
    simulate,
    track_efficiency,
    track_pt_resolution,
)

__all__ = [
    "DetectorParams",
    "FinalStateParticles",
    "calo_resolution",
    "impact_parameters",
    "simulate",
    "track_efficiency",
    "track_pt_resolution",
]
