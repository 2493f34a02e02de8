"""The 15 per-particle RS3L input features, in the fixed order every model expects.

The order follows the published RS3L training data (the h5 ``features`` of
jeffkrupa/deepjet-geometric, written by their merge script): pt, relpt, eta, phi, e, rele,
charge, d0, dz, dr, isPhoton, isMuon (|pdg| == 13), isElectron (|pdg| == 11), isCH, isNH.
Their ROOT inference loader (``CLV1ROOT``) names and fills the two lepton flags the other way
round; the published checkpoints were trained on the h5 order, which is ours. They saw the
energy ratio linear (E / E_jet), not as a log: ``rs3l_coffea.nn.published`` adapts our
features for them (``docs/published.md``).
Kinematic features are relative to the jet axis; energies and momenta in GeV, logs natural.
"""

from __future__ import annotations

FEATURE_NAMES: tuple[str, ...] = (
    "log_pt",             # log(pT / GeV)
    "log_pt_rel",         # log(pT / pT_jet)
    "deta",               # eta - eta_jet
    "dphi",               # phi - phi_jet wrapped to [-pi, pi)
    "log_e",              # log(E / GeV)
    "log_e_rel",          # log(E / E_jet)
    "charge",             # electric charge in units of e
    "tanh_d0",            # tanh(d0 / mm), transverse impact parameter
    "tanh_dz",            # tanh(dz / mm), longitudinal impact parameter
    "delta_r",            # sqrt(deta^2 + dphi^2)
    "is_photon",
    "is_muon",
    "is_electron",
    "is_charged_hadron",
    "is_neutral_hadron",
)

N_FEATURES: int = len(FEATURE_NAMES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
