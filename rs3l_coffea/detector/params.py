"""The parameters of the parametric CMS-like detector simulation, in one table.

Every number the detector simulation uses lives in :class:`DetectorParams`; the same table is
rendered into ``docs/simulation.md`` (:func:`DetectorParams.markdown_table`) and recorded in the
provenance of every generated file. The values are CMS-like ballpark figures (in the spirit of
the Delphes CMS card), not a tuned CMS description.

Units: GeV for energies and momenta, mm for lengths.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rs3l_coffea.errors import ConfigError


@dataclass(frozen=True)
class DetectorParams:
    """Parametrisation of the tracker and calorimeters (see module docstring for units)."""

    # --- tracker ---
    track_eta_max: float = field(default=2.5, metadata={"doc": "tracker acceptance abs(eta) <"})
    track_pt_min: float = field(default=0.1, metadata={"doc": "minimum track pT (GeV)"})
    track_eta_barrel: float = field(
        default=1.5, metadata={"doc": "abs(eta) boundary between barrel and endcap parametrisations"}
    )
    track_eff_low_pt_barrel: float = field(
        default=0.70, metadata={"doc": "hadron/electron efficiency, pT in [min, 1 GeV), barrel"}
    )
    track_eff_low_pt_endcap: float = field(
        default=0.60, metadata={"doc": "hadron/electron efficiency, pT in [min, 1 GeV), endcap"}
    )
    track_eff_barrel: float = field(
        default=0.95, metadata={"doc": "hadron/electron efficiency, pT >= 1 GeV, barrel"}
    )
    track_eff_endcap: float = field(
        default=0.85, metadata={"doc": "hadron/electron efficiency, pT >= 1 GeV, endcap"}
    )
    track_eff_muon: float = field(default=0.99, metadata={"doc": "muon track efficiency (flat)"})
    track_pt_res_const_barrel: float = field(
        default=0.006, metadata={"doc": "sigma(pT)/pT = a (+) b*pT: a, barrel"}
    )
    track_pt_res_slope_barrel: float = field(
        default=1.5e-4, metadata={"doc": "sigma(pT)/pT = a (+) b*pT: b (1/GeV), barrel"}
    )
    track_pt_res_const_endcap: float = field(
        default=0.012, metadata={"doc": "sigma(pT)/pT = a (+) b*pT: a, endcap"}
    )
    track_pt_res_slope_endcap: float = field(
        default=3.0e-4, metadata={"doc": "sigma(pT)/pT = a (+) b*pT: b (1/GeV), endcap"}
    )
    d0_res_const: float = field(
        default=0.010, metadata={"doc": "sigma(d0) = a (+) b/pT: a (mm)"}
    )
    d0_res_slope: float = field(
        default=0.090, metadata={"doc": "sigma(d0) = a (+) b/pT: b (mm GeV)"}
    )
    dz_res_const: float = field(
        default=0.030, metadata={"doc": "sigma(dz) = a (+) b/pT: a (mm)"}
    )
    dz_res_slope: float = field(
        default=0.150, metadata={"doc": "sigma(dz) = a (+) b/pT: b (mm GeV)"}
    )
    # --- calorimeters ---
    calo_eta_max: float = field(default=3.0, metadata={"doc": "calorimeter acceptance abs(eta) <"})
    ecal_stochastic: float = field(
        default=0.03, metadata={"doc": "ECAL sigma(E)/E = s/sqrt(E) (+) c: s (sqrt GeV)"}
    )
    ecal_constant: float = field(default=0.005, metadata={"doc": "ECAL sigma(E)/E: c"})
    hcal_stochastic: float = field(
        default=1.00, metadata={"doc": "HCAL sigma(E)/E = s/sqrt(E) (+) c: s (sqrt GeV)"}
    )
    hcal_constant: float = field(default=0.05, metadata={"doc": "HCAL sigma(E)/E: c"})
    photon_e_min: float = field(
        default=0.5, metadata={"doc": "minimum (smeared) ECAL deposit energy (GeV)"}
    )
    neutral_hadron_e_min: float = field(
        default=1.0, metadata={"doc": "minimum (smeared) HCAL deposit energy (GeV)"}
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ConfigError(
                    f"detector parameter {item.name} must be a non-negative number, got {value!r}"
                )
        for name in (
            "track_eff_low_pt_barrel",
            "track_eff_low_pt_endcap",
            "track_eff_barrel",
            "track_eff_endcap",
            "track_eff_muon",
        ):
            if getattr(self, name) > 1:
                raise ConfigError(f"detector parameter {name} is an efficiency in [0, 1]")

    def as_dict(self) -> dict[str, Any]:
        """Plain ``{name: value}`` (for provenance JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectorParams:
        """Inverse of :meth:`as_dict`; unknown names raise :class:`ConfigError`."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown detector parameter(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)

    @classmethod
    def markdown_table(cls) -> str:
        """The default parameters as a markdown table (name, default, meaning)."""
        lines = ["| parameter | default | meaning |", "|---|---|---|"]
        defaults = cls()
        for item in dataclasses.fields(cls):
            lines.append(f"| `{item.name}` | {getattr(defaults, item.name)} | {item.metadata['doc']} |")
        return "\n".join(lines)
