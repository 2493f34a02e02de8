"""Feature builder and jet observables against independent per-jet references."""

from __future__ import annotations

import awkward as ak
import fastjet
import numpy as np
import pytest
import vector

from rs3l_coffea.errors import InputFileError
from rs3l_coffea.features import FEATURE_INDEX, FEATURE_NAMES, build_features, jet_observables
from rs3l_coffea.features.builder import flatten_jets
from rs3l_coffea.features.names import FEATURE_NAMES as NAMES_MODULE
from rs3l_coffea.io import load_jets

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
vector.register_awkward()


@pytest.fixture(scope="module")
def delphes_jets(coffea_sample):
    return load_jets(coffea_sample("delphes.root"), jets="ParticleFlowJet08")


def _particle(pt, eta, phi, pdg_id=211, charge=1, energy=None, d0=0.0, dz=0.0, mass=0.14):
    if energy is None:
        energy = float(np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2))
    return {"pt": pt, "eta": eta, "phi": phi, "energy": energy, "charge": charge,
            "pdg_id": pdg_id, "d0": d0, "dz": dz}


def _jet_from(particles):
    """A jet record whose kinematics are the four-momentum sum of its particles (vector)."""
    total = vector.obj(px=0.0, py=0.0, pz=0.0, E=0.0)
    for p in particles:
        total = total + vector.obj(pt=p["pt"], eta=p["eta"], phi=p["phi"], E=p["energy"])
    return {"pt": total.pt, "eta": total.eta, "phi": total.phi, "mass": max(total.mass, 0.0)}


def test_feature_names_reexported_unchanged():
    assert FEATURE_NAMES is NAMES_MODULE and len(FEATURE_NAMES) == 15


def test_features_match_per_jet_vector_reference(delphes_jets):
    jets, constituents = delphes_jets
    x, mask = build_features(jets, constituents, max_particles=100)
    flat_jets, flat_constituents = flatten_jets(jets, constituents)
    assert x.shape == (len(flat_jets), 100, 15) and x.dtype == np.float32
    assert mask.shape == (len(flat_jets), 100) and mask.dtype == bool
    checked = 0
    for i in range(0, len(flat_jets), 7):  # an independent per-jet, per-particle reference
        jet = flat_jets[i]
        jet_vec = vector.obj(pt=jet.pt, eta=jet.eta, phi=jet.phi, mass=jet.mass)
        particles = sorted(ak.to_list(flat_constituents[i]), key=lambda p: -p["pt"])[:100]
        assert mask[i].sum() == len(particles)
        for j, p in enumerate(particles):
            p_vec = vector.obj(pt=p["pt"], eta=p["eta"], phi=p["phi"], E=p["energy"])
            pdg = abs(p["pdg_id"])
            expected = {
                "log_pt": np.log(p["pt"]),
                "log_pt_rel": np.log(p["pt"] / jet.pt),
                "deta": p["eta"] - jet.eta,
                "dphi": p_vec.deltaphi(jet_vec),
                "log_e": np.log(p["energy"]),
                "log_e_rel": np.log(p["energy"] / jet_vec.E),
                "charge": p["charge"],
                "tanh_d0": np.tanh(p["d0"]),
                "tanh_dz": np.tanh(p["dz"]),
                "delta_r": p_vec.deltaR(jet_vec),
                "is_photon": p["pdg_id"] == 22,
                "is_muon": pdg == 13,
                "is_electron": pdg == 11,
                "is_charged_hadron": p["charge"] != 0 and pdg not in (11, 13),
                "is_neutral_hadron": p["charge"] == 0 and pdg not in (11, 13, 22),
            }
            got = x[i, j]
            for name, value in expected.items():
                assert got[FEATURE_INDEX[name]] == pytest.approx(float(value), rel=2e-5, abs=2e-5), name
            checked += 1
    assert checked > 300
    flags = x[..., FEATURE_INDEX["is_photon"]:]
    np.testing.assert_array_equal(flags.sum(axis=-1), mask.astype(np.float32))


def test_mask_semantics_finite_and_zero_padding(delphes_jets):
    x, mask = build_features(*delphes_jets, max_particles=40)
    assert np.all(np.isfinite(x[mask]))
    assert np.all(x[~mask] == 0.0)
    assert mask.any(axis=1).all()
    # rows are filled from the left, in decreasing pT
    assert np.all(mask[:, :-1] | ~mask[:, 1:])
    log_pt = np.where(mask, x[..., FEATURE_INDEX["log_pt"]], -np.inf)
    assert np.all(log_pt[:, :-1] >= log_pt[:, 1:])


def test_dphi_wraps_across_pi():
    near_pi = np.pi - 0.02
    particles = [
        _particle(50.0, 0.1, near_pi),
        _particle(40.0, 0.0, -np.pi + 0.03),  # 0.05 away across the boundary
        _particle(30.0, -0.1, near_pi - 0.1),
    ]
    jet = {"pt": 120.0, "eta": 0.0, "phi": near_pi, "mass": 10.0}
    x, mask = build_features(ak.Array([jet]), ak.Array([particles]))
    assert mask.sum() == 3
    dphi = x[0, :3, FEATURE_INDEX["dphi"]]
    np.testing.assert_allclose(dphi, [0.0, 0.05, -0.1], atol=1e-6)
    assert np.all(np.abs(dphi) < np.pi)
    # exactly pi apart maps to -pi ([-pi, pi) convention)
    x, _ = build_features(ak.Array([{"pt": 10.0, "eta": 0.0, "phi": 0.0, "mass": 1.0}]),
                          ak.Array([[_particle(5.0, 0.0, np.pi)]]))
    assert x[0, 0, FEATURE_INDEX["dphi"]] == pytest.approx(-np.pi)


def test_zero_one_and_many_constituents():
    rng = np.random.default_rng(3)
    many = [_particle(float(pt), float(eta), float(phi)) for pt, eta, phi in
            zip(rng.uniform(1, 100, 150), rng.normal(0, 0.3, 150), rng.normal(0, 0.3, 150), strict=True)]
    one = [_particle(80.0, 0.2, 0.3, pdg_id=22, charge=0)]
    constituents = ak.Array([[[], one, many]])
    jets = ak.Array([[{"pt": 100.0, "eta": 0.0, "phi": 0.0, "mass": 5.0},
                      _jet_from(one), _jet_from(many)]])
    x, mask = build_features(jets, constituents, max_particles=100)
    assert mask.sum(axis=1).tolist() == [0, 1, 100]
    assert np.all(x[0] == 0)
    assert x[1, 0, FEATURE_INDEX["is_photon"]] == 1 and x[1, 0, FEATURE_INDEX["log_pt_rel"]] == pytest.approx(0, abs=1e-6)
    kept = np.exp(x[2, :, FEATURE_INDEX["log_pt"]])
    np.testing.assert_allclose(kept, np.sort([p["pt"] for p in many])[::-1][:100], rtol=1e-5)

    observables = jet_observables(jets, constituents)
    assert observables["n_constituents"].tolist() == [0, 1, 150]
    assert observables["valid"].tolist() == [False, False, True]
    assert observables["msd"][:2].tolist() == [0.0, 0.0] and observables["n2"][:2].tolist() == [0.0, 0.0]
    assert all(np.all(np.isfinite(v)) for v in observables.values())


def test_bad_particles_dropped_and_bad_jets_rejected():
    particles = [_particle(20.0, 0.1, 0.1), _particle(0.0, 999.9, 0.0, energy=0.0),
                 _particle(float("nan"), 0.0, 0.0, energy=1.0)]
    jet = {"pt": 20.0, "eta": 0.1, "phi": 0.1, "mass": 0.14}
    x, mask = build_features(ak.Array([jet]), ak.Array([particles]))
    assert mask.sum() == 1 and np.all(np.isfinite(x))
    # fastjet never sees the bad particles (it segfaults on them): one good particle left
    observables = jet_observables(ak.Array([jet]), ak.Array([particles]))
    assert observables["n_constituents"].tolist() == [1] and observables["valid"].tolist() == [False]
    from rs3l_coffea.io import recluster

    _, reclustered = recluster(ak.Array([particles]), 0.8, 0.0)
    assert ak.to_list(ak.num(reclustered, axis=2)) == [[1]]
    with pytest.raises(InputFileError, match="jet 0"):
        build_features(ak.Array([dict(jet, pt=float("nan"))]), ak.Array([particles[:1]]))


def _direct_observables(particles):
    """msd and N2 of one jet with its own fastjet ClusterSequence (independent of the batch)."""
    momenta = ak.Array(
        [[{"px": p["pt"] * np.cos(p["phi"]), "py": p["pt"] * np.sin(p["phi"]),
           "pz": p["pt"] * np.sinh(p["eta"]), "E": p["energy"]} for p in particles]],
        with_name="Momentum4D",
    )
    sequence = fastjet.ClusterSequence(momenta, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    n2 = sequence.exclusive_jets_energy_correlator(njets=1, func="nseries", npoint=2, beta=1.0)
    groomed = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1, R0=0.8)
    return float(ak.flatten(n2, axis=None)[0]), float(groomed.msoftdrop[0])


def test_n2_and_msd_match_direct_fastjet(delphes_jets):
    jets, constituents = delphes_jets
    observables = jet_observables(jets, constituents)
    flat_jets, flat_constituents = flatten_jets(jets, constituents)
    checked = 0
    for i in np.flatnonzero(observables["n_constituents"] >= 5)[:12]:
        n2, msd = _direct_observables(ak.to_list(flat_constituents[i]))
        assert observables["n2"][i] == pytest.approx(n2, rel=1e-9)
        assert observables["msd"][i] == pytest.approx(msd, rel=1e-9, abs=1e-9)
        checked += 1
    assert checked == 12
    # grooming only removes particles: msd <= mass of the constituent sum
    c = flat_constituents
    sums = [ak.sum(c.pt * np.cos(c.phi), axis=1), ak.sum(c.pt * np.sin(c.phi), axis=1),
            ak.sum(c.pt * np.sinh(c.eta), axis=1), ak.sum(c.energy, axis=1)]
    px, py, pz, energy = (ak.to_numpy(v) for v in sums)
    full_mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    assert np.all(observables["msd"] <= full_mass * (1 + 1e-9) + 1e-6)
    np.testing.assert_array_equal(observables["pt"], ak.to_numpy(flat_jets.pt))


def test_n2_of_hand_built_three_prong_jet():
    # Three equal-pT massless particles: N2 = e3(2) / e2(1)^2 by hand with pT fractions z = 1/3.
    angles = [(0.0, 0.0), (0.2, 0.0), (0.0, 0.3)]
    particles = [_particle(100.0, eta, phi, mass=0.0) for eta, phi in angles]
    observables = jet_observables(ak.Array([_jet_from(particles)]), ak.Array([particles]))

    def delta_r(a, b):
        return np.hypot(a[0] - b[0], a[1] - b[1])

    d01, d02, d12 = delta_r(angles[0], angles[1]), delta_r(angles[0], angles[2]), delta_r(angles[1], angles[2])
    z = 1.0 / 3.0
    e2 = z * z * (d01 + d02 + d12)
    smallest, second = sorted([d01, d02, d12])[:2]
    e3 = z**3 * smallest * second  # generalised e3^(2): product of the two smallest angles
    assert observables["n2"][0] == pytest.approx(e3 / e2**2, rel=1e-6)


def test_groomed_n2_matches_cms_n2b1_on_pfnano(coffea_sample):
    """CMS's FatJet_n2b1 is N2 (beta 1) of the soft-drop (z 0.1, beta 0) groomed jet."""
    import uproot

    path = coffea_sample("pfnano.root")
    observables = jet_observables(*load_jets(path))
    n2b1 = ak.to_numpy(ak.flatten(uproot.open(path)["Events"]["FatJet_n2b1"].array())).astype(np.float64)
    valid = observables["n2_groomed_valid"]
    # CMS stores -1 where the groomed jet has fewer than three particles: the same jets as ours
    np.testing.assert_array_equal(valid, n2b1 >= 0)
    assert valid.sum() >= 20
    relative = observables["n2_groomed"][valid] / n2b1[valid] - 1
    # same candidates, no PUPPI weights, no jet corrections: close, not identical
    assert np.median(np.abs(relative)) < 0.01 and np.max(np.abs(relative)) < 0.06
    assert np.all(observables["n2_groomed"][~valid] == 0)
    # the ungroomed N2 is a different observable (r ~ 0.73 with n2b1)
    assert np.median(np.abs(observables["n2"][valid] / n2b1[valid] - 1)) > 0.2


def test_groomed_n2_equals_fastjet_on_groomed_constituents(delphes_jets):
    jets, constituents = delphes_jets
    observables = jet_observables(jets, constituents)
    _, flat_constituents = flatten_jets(jets, constituents)
    checked = 0
    for i in np.flatnonzero(observables["n2_groomed_valid"])[:8]:
        c = flat_constituents[i : i + 1]
        momenta = ak.zip({"px": c.pt * np.cos(c.phi), "py": c.pt * np.sin(c.phi),
                          "pz": c.pt * np.sinh(c.eta), "E": c.energy}, with_name="Momentum4D")
        sequence = fastjet.ClusterSequence(momenta, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
        groomed = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1, R0=0.8)
        inner = fastjet.ClusterSequence(ak.with_name(groomed.constituents, "Momentum4D"),
                                        fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
        n2 = inner.exclusive_jets_energy_correlator(njets=1, func="nseries", npoint=2, beta=1.0)
        assert observables["n2_groomed"][i] == pytest.approx(float(ak.flatten(n2, axis=None)[0]), rel=1e-9)
        checked += 1
    assert checked == 8


def test_n2_of_a_huge_jet_uses_the_leading_constituents_and_is_fast():
    import time

    rng = np.random.default_rng(3)
    n = 10_000
    pt = rng.exponential(2.0, n) + 0.1
    eta, phi = rng.normal(0.0, 0.25, n), rng.normal(0.0, 0.25, n)
    particles = [_particle(float(a), float(b), float(c)) for a, b, c in zip(pt, eta, phi, strict=True)]
    jets = ak.Array([_jet_from(particles)])
    start = time.perf_counter()
    observables = jet_observables(jets, ak.Array([particles]))
    elapsed = time.perf_counter() - start
    assert elapsed < 20.0  # was 947 s with N2 on all 10,000 constituents
    assert observables["n_constituents"][0] == n and observables["valid"][0]
    leading = [particles[i] for i in np.argsort(-pt, kind="stable")[:100]]
    n2, _ = _direct_observables(leading)  # fastjet on the leading 100, selected by hand
    assert observables["n2"][0] == pytest.approx(n2, rel=1e-9)
    _, msd_leading = _direct_observables(leading)
    assert observables["msd"][0] == pytest.approx(msd_leading, rel=1e-9)


def test_pipeline_carries_groomed_n2_and_impact_parameter_flag(coffea_sample, tmp_path):
    import pyarrow.parquet as pq

    from rs3l_coffea.features.pipeline import (
        features_from_file,
        read_features_parquet,
        write_features_parquet,
    )

    pfnano = features_from_file(coffea_sample("pfnano.root"))
    direct = jet_observables(*load_jets(coffea_sample("pfnano.root")))
    np.testing.assert_allclose(pfnano["n2_groomed"], direct["n2_groomed"], rtol=1e-12)
    assert pfnano["impact_parameters"].all()
    with pytest.warns(UserWarning, match="d0"):
        import rs3l_coffea.io.sources as sources

        sources._warned_missing_impact.discard("nanoaod")
        nano = features_from_file(coffea_sample("nano_tt_v15.root"))
    assert len(nano["impact_parameters"]) > 0 and not nano["impact_parameters"].any()
    out = tmp_path / "pfnano.parquet"
    write_features_parquet(out, pfnano)
    back = read_features_parquet(out)
    np.testing.assert_array_equal(back["n2_groomed"], pfnano["n2_groomed"])
    np.testing.assert_array_equal(back["n2_groomed_valid"], pfnano["n2_groomed_valid"])
    # a file written before these columns existed still reads (without them)
    old = tmp_path / "old.parquet"
    table = pq.read_table(out)
    pq.write_table(table.drop(["n2_groomed", "n2_groomed_valid", "impact_parameters"]), old)
    assert "n2_groomed" not in read_features_parquet(old) and len(read_features_parquet(old)["n2"]) == len(back["n2"])
