"""Kinematic jet selection (a small dataclass with named presets).

* :meth:`JetSelection.generated` -- our re-simulated samples: pT > 450 GeV, m > 10 GeV, |eta| < 1.5.
* :meth:`JetSelection.paper` -- as above with the RS3L paper's |eta| < 0.1.
* :meth:`JetSelection.permissive` -- the default for other files: pT > 0, any mass, |eta| < 5,
  at least one constituent.

Cuts are strict inequalities on the jet kinematics of the reader and on the number of
constituents (``>= min_constituents``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class JetSelection:
    """Jet cuts: ``pt > pt_min``, ``mass > mass_min``, ``|eta| < abs_eta_max``, enough particles."""

    pt_min: float = 0.0
    mass_min: float = -math.inf
    abs_eta_max: float = 5.0
    min_constituents: int = 1

    def __post_init__(self) -> None:
        if not self.abs_eta_max > 0:
            raise ConfigError(f"abs_eta_max must be > 0, got {self.abs_eta_max}")
        if self.min_constituents < 0:
            raise ConfigError(f"min_constituents must be >= 0, got {self.min_constituents}")

    @classmethod
    def generated(cls) -> JetSelection:
        """Default for our generated samples: pT > 450 GeV, m > 10 GeV, |eta| < 1.5."""
        return cls(pt_min=450.0, mass_min=10.0, abs_eta_max=1.5)

    @classmethod
    def paper(cls) -> JetSelection:
        """The RS3L paper's selection: pT > 450 GeV, m > 10 GeV, |eta| < 0.1."""
        return cls(pt_min=450.0, mass_min=10.0, abs_eta_max=0.1)

    @classmethod
    def permissive(cls) -> JetSelection:
        """Default for other files: every jet with |eta| < 5 and at least one constituent."""
        return cls()

    @classmethod
    def named(cls, name: str) -> JetSelection:
        """Preset by name: ``generated``, ``paper`` or ``permissive``."""
        presets = {"generated": cls.generated, "paper": cls.paper, "permissive": cls.permissive}
        if name not in presets:
            raise ConfigError(f"unknown selection {name!r}; valid: {', '.join(presets)}")
        return presets[name]()

    def mask(self, jets: Any, constituents: Any | None = None) -> Any:
        """Boolean mask with the shape of ``jets`` (events x jets or flat); works on awkward."""
        jets = ak.Array(jets)
        passed = (
            (jets.pt > self.pt_min)
            & (jets.mass > self.mass_min)
            & (np.abs(jets.eta) < self.abs_eta_max)
        )
        if constituents is not None and self.min_constituents > 0:
            axis = ak.Array(constituents).ndim - 1
            passed = passed & (ak.num(constituents, axis=axis) >= self.min_constituents)
        return passed
