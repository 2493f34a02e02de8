"""The shared kinematics kernels and the one particle-quality rule."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch

from rs3l_coffea.features import build_features, jet_observables
from rs3l_coffea.io import recluster
from rs3l_coffea.kinematics import delta_r, good_particle_records, good_particles, wrap_phi

RNG = np.random.default_rng(11)


def test_wrap_phi_matches_atan2_for_numpy_awkward_and_torch():
    angles = RNG.uniform(-20.0, 20.0, size=1000)
    reference = np.arctan2(np.sin(angles), np.cos(angles))  # in (-pi, pi]
    wrapped = wrap_phi(angles)
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    # same angle modulo 2 pi: equal to atan2 except where atan2 gives +pi and we give -pi
    np.testing.assert_allclose(np.cos(wrapped - reference), 1.0, atol=1e-9)
    np.testing.assert_allclose(ak.to_numpy(wrap_phi(ak.Array(angles))), wrapped, rtol=0, atol=1e-12)
    np.testing.assert_allclose(wrap_phi(torch.from_numpy(angles)).numpy(), wrapped, rtol=0, atol=1e-12)


def test_delta_r_across_the_phi_boundary():
    # 3.1 and -3.1 rad are 2 pi - 6.2 apart, not 6.2
    np.testing.assert_allclose(delta_r(np.array([0.0]), np.array([3.1]), np.array([0.3]), np.array([-3.1])),
                               np.hypot(0.3, 2 * np.pi - 6.2), rtol=1e-12)


def test_good_particles_rule():
    nan, inf = float("nan"), float("inf")
    rows = [  # (pt, eta, phi, energy, charge, d0, dz) -> usable?
        ((10.0, 0.5, 0.1, 12.0, 1.0, 0.0, 0.0), True),
        ((0.0, 0.5, 0.1, 12.0, 1.0, 0.0, 0.0), False),   # pT = 0
        ((10.0, 0.5, 0.1, 0.0, 1.0, 0.0, 0.0), False),   # E = 0
        ((10.0, 999.9, 0.1, 12.0, 1.0, 0.0, 0.0), False),  # Delphes sentinel eta
        ((10.0, -10.0, 0.1, 12.0, 1.0, 0.0, 0.0), False),  # |eta| = 10
        ((10.0, 0.5, nan, 12.0, 1.0, 0.0, 0.0), False),
        ((10.0, 0.5, 0.1, inf, 1.0, 0.0, 0.0), False),
        ((10.0, 0.5, 0.1, 12.0, nan, 0.0, 0.0), False),  # charge
        ((10.0, 0.5, 0.1, 12.0, 1.0, nan, 0.0), False),  # d0
        ((10.0, 0.5, 0.1, 12.0, 1.0, 0.0, -inf), False),  # dz
    ]
    columns = np.array([r for r, _ in rows]).T
    expected = np.array([ok for _, ok in rows])
    np.testing.assert_array_equal(good_particles(*columns), expected)
    records = ak.zip(dict(zip(("pt", "eta", "phi", "energy", "charge", "d0", "dz"), columns, strict=True)))
    np.testing.assert_array_equal(ak.to_numpy(good_particle_records(records)), expected)
    # four-momenta without charge/d0/dz: those are simply not checked
    kinematic = ak.zip({"pt": columns[0], "eta": columns[1], "phi": columns[2], "energy": columns[3]})
    np.testing.assert_array_equal(ak.to_numpy(good_particle_records(kinematic)), expected | (np.arange(10) >= 7))


def _particle(pt, eta, phi, charge=1, d0=0.0, dz=0.0):
    energy = float(np.hypot(pt * np.cosh(eta), 0.14))
    return {"pt": pt, "eta": eta, "phi": phi, "energy": energy, "charge": charge,
            "pdg_id": 211, "d0": d0, "dz": dz}


@pytest.mark.parametrize("n_good", [8, 130])  # below and above the 100-particle cap
def test_observables_see_exactly_the_particles_the_features_see(n_good):
    eta = RNG.normal(0.0, 0.3, n_good)
    phi = RNG.normal(0.0, 0.3, n_good)
    pt = RNG.uniform(1.0, 30.0, n_good)
    good = [_particle(float(a), float(b), float(c)) for a, b, c in zip(pt, eta, phi, strict=True)]
    # The hardest particles are unusable only through d0, dz or charge (the checks the
    # observables used to skip), so with a cap they would push good particles out.
    bad = [_particle(500.0, 0.01, 0.02, d0=float("nan")), _particle(400.0, -0.02, 0.01, dz=float("inf")),
           _particle(300.0, 0.03, -0.01, charge=float("nan")), _particle(200.0, 11.0, 0.0)]
    jet = {"pt": float(pt.sum()), "eta": 0.0, "phi": 0.0, "mass": 10.0}
    mixed = ak.Array([bad + good])
    _, mask = build_features(ak.Array([jet]), mixed)
    assert mask.sum() == min(n_good, 100)
    observables = jet_observables(ak.Array([jet]), mixed)
    assert observables["n_constituents"].tolist() == [n_good]
    # Independent of the filter: the leading min(n, 100) good particles, given explicitly.
    leading = [good[i] for i in np.argsort(-pt, kind="stable")[:100]]
    clean = jet_observables(ak.Array([jet]), ak.Array([leading]), max_particles=None)
    for name in ("msd", "n2", "n2_groomed"):
        np.testing.assert_allclose(observables[name], clean[name], rtol=1e-10, err_msg=name)
    assert observables["valid"].tolist() == [True]
    # the reclustering readers drop the same particles
    _, constituents = recluster(mixed, 0.8, 0.0)
    assert int(ak.sum(ak.num(constituents, axis=2))) <= n_good
    assert ak.all(np.isfinite(ak.flatten(constituents.d0, axis=None)))
