"""Parametric detector simulation: resolutions, efficiencies, acceptance, IP geometry, seeding.

Inputs are synthetic particles (no Pythia), so expectations come from the parametrisation
written out by hand here, and from straight-line geometry.
"""

from __future__ import annotations

import dataclasses

import awkward as ak
import numpy as np
import pytest

from rs3l_coffea.detector import DetectorParams, FinalStateParticles, simulate
from rs3l_coffea.errors import ConfigError


def particles(pid, charge, pt, eta, phi=None, mass=0.0, vertex=(0.0, 0.0, 0.0), per_event=None):
    """Flat FinalStateParticles from (pid, charge, pt, eta, phi), one event unless per_event."""
    pt = np.asarray(pt, float)
    n = pt.size
    eta = np.broadcast_to(np.asarray(eta, float), (n,))
    phi = np.linspace(-3.1, 3.1, n) if phi is None else np.broadcast_to(np.asarray(phi, float), (n,))
    mass = np.broadcast_to(np.asarray(mass, float), (n,))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    vx, vy, vz = (np.broadcast_to(np.asarray(v, float), (n,)) for v in vertex)
    counts = np.array([n]) if per_event is None else np.full(n // per_event, per_event)
    return FinalStateParticles(
        counts=counts, pid=np.broadcast_to(np.asarray(pid), (n,)).astype(np.int64),
        charge=np.broadcast_to(np.asarray(charge, float), (n,)).copy(), px=px, py=py, pz=pz, e=e,
        mass=mass.copy(), vx=vx.copy(), vy=vy.copy(), vz=vz.copy(), index=np.arange(n),
    )


def flat(array, field):
    return ak.to_numpy(ak.flatten(array[field]))


def assert_width(values, expected_sigma, label):
    """Sample std equals the expected width within 5 statistical standard errors."""
    n = values.size
    std = np.std(values, ddof=1)
    stat = expected_sigma / np.sqrt(2 * (n - 1))
    assert abs(std - expected_sigma) < 5 * stat, f"{label}: std {std:.5g} vs {expected_sigma:.5g}"


N = 20_000


@pytest.mark.parametrize(("pt", "eta", "a", "b"), [(50.0, 0.5, 0.006, 1.5e-4), (200.0, 2.0, 0.012, 3.0e-4)])
def test_track_pt_resolution_matches_parametrisation(pt, eta, a, b):
    params = DetectorParams()
    assert (params.track_pt_res_const_barrel, params.track_pt_res_slope_barrel) == (0.006, 1.5e-4)
    out = simulate(particles(211, 1, np.full(N, pt), eta), params, np.random.default_rng(1))
    ratio = flat(out["EFlowTrack"], "PT") / pt - 1.0
    expected = np.hypot(a, b * pt)  # sigma/pT = a (+) b*pT, written out by hand
    assert abs(np.mean(ratio)) < 5 * expected / np.sqrt(ratio.size)
    assert_width(ratio, expected, "track pT")


def test_calorimeter_resolutions_match_parametrisation():
    params = DetectorParams()
    e_photon, e_neutral = 40.0, 100.0
    photons = simulate(particles(22, 0, np.full(N, e_photon), 0.0), params, np.random.default_rng(2))
    ratio = flat(photons["EFlowPhoton"], "E") / e_photon - 1.0
    assert_width(ratio, np.hypot(0.03 / np.sqrt(e_photon), 0.005), "ECAL")
    neutrons = simulate(
        particles(2112, 0, np.full(N, e_neutral), 0.0, mass=0.0), params, np.random.default_rng(3)
    )
    ratio = flat(neutrons["EFlowNeutralHadron"], "E") / e_neutral - 1.0
    assert ratio.size == N  # 100 GeV is far above the 1 GeV threshold
    assert_width(ratio, np.hypot(1.0 / np.sqrt(e_neutral), 0.05), "HCAL")
    # ET = E / cosh(eta), taken directly from the stored columns
    e = flat(photons["EFlowPhoton"], "E")
    np.testing.assert_allclose(flat(photons["EFlowPhoton"], "ET"), e / np.cosh(0.0), rtol=1e-6)


def test_impact_parameter_resolution_and_geometry():
    params = DetectorParams()
    pt = 2.0
    out = simulate(particles(211, 1, np.full(N, pt), 0.3), params, np.random.default_rng(4))
    assert_width(flat(out["EFlowTrack"], "D0"), np.hypot(0.010, 0.090 / pt), "d0")
    assert_width(flat(out["EFlowTrack"], "DZ"), np.hypot(0.030, 0.150 / pt), "dz")

    # Exact straight-line geometry with the smearing switched off.
    exact = dataclasses.replace(
        params, d0_res_const=0, d0_res_slope=0, dz_res_const=0, dz_res_slope=0
    )
    # Vertex (1, 0, 5) mm, momentum along +y with pz = pT: closest approach to the beam line
    # is the vertex itself, at distance 1 mm, on the side giving d0 = x*py - y*px > 0.
    one = particles(211, 1, [10.0], np.arcsinh(1.0), phi=np.pi / 2, vertex=(1.0, 0.0, 5.0))
    track = simulate(one, exact, np.random.default_rng(0))["EFlowTrack"]
    assert flat(track, "D0")[0] == pytest.approx(1.0, abs=1e-6)
    assert flat(track, "DZ")[0] == pytest.approx(5.0, abs=1e-5)
    # Radial track from (1, 1, 2): points back to the beam line at z = 2 - sqrt2 * pz/pT.
    radial = particles(211, -1, [5.0], np.arcsinh(0.5), phi=np.pi / 4, vertex=(1.0, 1.0, 2.0))
    track = simulate(radial, exact, np.random.default_rng(0))["EFlowTrack"]
    assert flat(track, "D0")[0] == pytest.approx(0.0, abs=1e-6)
    assert flat(track, "DZ")[0] == pytest.approx(2.0 - np.sqrt(2.0) * 0.5, abs=1e-5)


def test_tracking_efficiency_and_acceptance():
    params = DetectorParams()
    rng = np.random.default_rng(5)
    n = 40_000
    eta = rng.uniform(-4, 4, n)
    pt = rng.uniform(0.05, 20, n)
    pid = rng.choice([211, -211, 11, 13, 22, 2112, 130, 12, -14, 16], n)
    charge = np.where(np.isin(pid, [211, 13]), 1.0, np.where(np.isin(pid, [-211, 11]), -1.0, 0.0))
    sample = particles(pid, charge, pt, eta, per_event=100)
    out = simulate(sample, params, np.random.default_rng(6))
    tracks, photons, neutrals = out["EFlowTrack"], out["EFlowPhoton"], out["EFlowNeutralHadron"]
    assert len(tracks) == len(photons) == len(neutrals) == n // 100

    # ParticleIndex is the input ``index`` (here the flat position in the synthetic sample)
    t_src, p_src, n_src = (flat(c, "ParticleIndex") for c in (tracks, photons, neutrals))
    # neutrinos never appear anywhere
    for src in (t_src, p_src, n_src):
        assert not np.isin(np.abs(pid[src]), [12, 14, 16]).any()
    # acceptance cuts (on the true kinematics) hold
    assert np.all(np.abs(eta[t_src]) < 2.5) and np.all(pt[t_src] >= 0.1)
    assert np.all(charge[t_src] != 0)
    assert np.all(np.abs(flat(tracks, "Eta")) < 2.5)
    for collection, src in ((photons, p_src), (neutrals, n_src)):
        assert np.all(np.abs(flat(collection, "Eta")) < 3.0)
        assert np.all(np.abs(eta[src]) < 3.0)
    assert np.all(flat(photons, "E") >= 0.5) and np.all(flat(neutrals, "E") >= 1.0)
    # photons and untracked electrons go to the ECAL; muons never become calorimeter objects
    assert set(np.abs(pid[p_src]).tolist()) <= {22, 11}
    assert not np.isin(np.abs(pid[n_src]), [11, 13, 22]).any()
    # a track keeps its true PID and charge
    np.testing.assert_array_equal(flat(tracks, "PID"), pid[t_src])
    np.testing.assert_array_equal(flat(tracks, "Charge"), charge[t_src].astype(int))

    # efficiency for high-pT barrel pions: binomial test against the configured 0.95
    pions = (np.abs(pid) == 211) & (np.abs(eta) < 1.5) & (pt >= 1.0)
    found = np.isin(np.flatnonzero(pions), t_src).mean()
    sigma = np.sqrt(0.95 * 0.05 / pions.sum())
    assert abs(found - 0.95) < 5 * sigma
    # untracked pions inside the calorimeter reappear as neutral-hadron deposits
    lost = pions & ~np.isin(np.arange(n), t_src)
    assert np.isin(np.flatnonzero(lost & (pt > 2)), n_src).mean() > 0.9


def test_same_seed_same_output_other_seed_differs():
    sample = particles(211, 1, np.linspace(0.5, 50, 500), 0.7)
    params = DetectorParams()
    a = simulate(sample, params, np.random.default_rng(7))
    b = simulate(sample, params, np.random.default_rng(7))
    c = simulate(sample, params, np.random.default_rng(8))
    for name in a:
        assert ak.to_list(a[name]) == ak.to_list(b[name])
    assert ak.to_list(a["EFlowTrack"].PT) != ak.to_list(c["EFlowTrack"].PT)


def test_precomputed_kinematics_give_the_same_candidates():
    """The generator passes pT/eta/phi it already has; the result must not depend on it."""
    import dataclasses

    sample = particles([211, 22, 2112, -11, 13, 211], [1, 0, 0, 1, -1, 1],
                       [0.8, 5.0, 12.0, 30.0, 7.0, 0.0], [0.3, -1.2, 2.0, 0.1, -2.2, 0.0])
    sample.pz[-1], sample.e[-1] = 40.0, 40.01  # pT = 0: no candidates either way
    px, py, pz = sample.px, sample.py, sample.pz
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / pt), 999.9)
    given = dataclasses.replace(sample, pt=pt, eta=eta, phi=np.arctan2(py, px))
    derived = simulate(sample, DetectorParams(), np.random.default_rng(3))
    passed = simulate(given, DetectorParams(), np.random.default_rng(3))
    assert sum(len(ak.flatten(derived[name], axis=1)) for name in derived) >= 4
    for name in derived:
        assert ak.to_list(passed[name]) == ak.to_list(derived[name]), name


def test_zero_pt_particles_do_not_break_anything():
    # a beam-collinear particle (pT = 0) must not produce NaN/inf candidates
    sample = particles([211, 22], [1, 0], [0.0, 0.0], 0.0)
    sample.pz[:] = [100.0, -50.0]
    sample.e[:] = [100.0, 50.0]
    out = simulate(sample, DetectorParams(), np.random.default_rng(0))
    assert all(ak.sum(ak.num(out[name])) == 0 for name in out)


def test_parameter_validation_and_table():
    with pytest.raises(ConfigError, match="track_eta_max"):
        DetectorParams(track_eta_max=-1.0)
    with pytest.raises(ConfigError, match="track_eff_barrel"):
        DetectorParams(track_eff_barrel=1.5)
    with pytest.raises(ConfigError, match="no_such"):
        DetectorParams.from_dict({"no_such": 1.0})
    params = DetectorParams(ecal_constant=0.01)
    assert DetectorParams.from_dict(params.as_dict()) == params
    table = DetectorParams.markdown_table()
    for item in dataclasses.fields(DetectorParams):
        assert f"`{item.name}`" in table
