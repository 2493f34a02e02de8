"""Property tests (hypothesis) of the feature builder and the tagger on random jagged inputs.

Inputs: events x jets x particles with random counts (including events without jets, jets
without particles and jets with more than 100 particles), kinematics drawn in physical ranges
(pT 0.5 GeV - 1 TeV log-uniform, |eta| < 4, any phi, masses up to a few GeV, impact
parameters up to several cm), plus optionally "bad" particles (pT = 0, NaN or inf kinematics,
as in real Delphes files) that must be dropped. Properties checked against hand counts:

* ``build_features``: no crash; ``mask.sum(1) == min(n_good, max_particles)``; real slots
  packed first; every masked-in feature finite; padded slots exactly 0; exactly one particle
  type flag per real particle; ``log_pt`` non-increasing along each jet.
* ``RS3LTagger``: output has the event x jet structure of the input; a record is ``None``
  exactly for jets without good particles; embeddings and scores are finite.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs3l_coffea.features import FEATURE_INDEX, build_features
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

TYPE_FLAGS = ["is_photon", "is_muon", "is_electron", "is_charged_hadron", "is_neutral_hadron"]
PDG_CHARGE = [(22, 0), (130, 0), (211, 1), (-211, -1), (11, -1), (-11, 1), (13, -1), (-13, 1), (2112, 0)]
MULTIPLICITIES = st.one_of(st.integers(0, 12), st.sampled_from([0, 1, 99, 100, 101, 140]))


@st.composite
def jagged_jets(draw):
    """``(jets, constituents, n_good)`` with ``n_good`` the good particles per flattened jet."""
    jets_per_event = draw(st.lists(st.integers(0, 3), min_size=0, max_size=5))
    n_jets = sum(jets_per_event)
    particles_per_jet = draw(st.lists(MULTIPLICITIES, min_size=n_jets, max_size=n_jets))
    bad_fraction = draw(st.sampled_from([0.0, 0.0, 0.2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = int(sum(particles_per_jet))
    pt = np.exp(rng.uniform(np.log(0.5), np.log(1000.0), n))
    eta = rng.uniform(-4.0, 4.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    mass = rng.choice([0.0, 0.000511, 0.1057, 0.1396, 0.4977, 0.9396], n)
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    kind = rng.integers(0, len(PDG_CHARGE), n)
    pdg = np.array([PDG_CHARGE[k][0] for k in kind], dtype=np.int32)
    charge = np.array([PDG_CHARGE[k][1] for k in kind], dtype=np.int32)
    d0 = rng.normal(0.0, 1.0, n) * rng.choice([0.01, 1.0, 50.0], n)
    dz = rng.normal(0.0, 1.0, n) * rng.choice([0.01, 1.0, 50.0], n)
    bad = rng.random(n) < bad_fraction
    how = rng.integers(0, 4, n)
    pt = np.where(bad & (how == 0), 0.0, pt)
    pt = np.where(bad & (how == 1), np.nan, pt)
    eta = np.where(bad & (how == 2), np.inf, eta)
    energy = np.where(bad & (how == 3), -np.inf, energy)
    particles = ak.zip(
        {"pt": pt, "eta": eta, "phi": phi, "energy": energy, "charge": charge, "pdg_id": pdg,
         "d0": d0, "dz": dz}
    )
    per_jet = ak.unflatten(particles, np.asarray(particles_per_jet, dtype=np.int64))
    constituents = ak.unflatten(per_jet, np.asarray(jets_per_event, dtype=np.int64))
    jets = ak.unflatten(
        ak.zip(
            {
                "pt": rng.uniform(20.0, 2000.0, n_jets),
                "eta": rng.uniform(-2.5, 2.5, n_jets),
                "phi": rng.uniform(-np.pi, np.pi, n_jets),
                "mass": rng.uniform(0.0, 300.0, n_jets),
            }
        ),
        np.asarray(jets_per_event, dtype=np.int64),
    )
    good_per_jet = ak.sum(ak.unflatten(~bad, np.asarray(particles_per_jet, dtype=np.int64)), axis=1)
    n_good = np.asarray(ak.to_numpy(good_per_jet), dtype=np.int64) if n_jets else np.zeros(0, np.int64)
    return jets, constituents, n_good


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=jagged_jets(), max_particles=st.sampled_from([1, 7, 100]))
def test_build_features_properties(data, max_particles):
    jets, constituents, n_good = data
    x, mask = build_features(jets, constituents, max_particles=max_particles)
    n_jets = len(n_good)
    assert x.shape == (n_jets, max_particles, 15) and x.dtype == np.float32
    assert mask.shape == (n_jets, max_particles) and mask.dtype == np.bool_
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(n_good, max_particles))
    # real slots first, then padding
    np.testing.assert_array_equal(mask, np.arange(max_particles) < mask.sum(axis=1)[:, None])
    assert np.isfinite(x[mask]).all()
    assert not x[~mask].any()
    flags = x[mask][:, [FEATURE_INDEX[name] for name in TYPE_FLAGS]]
    np.testing.assert_array_equal(flags.sum(axis=1), 1.0)
    step = np.diff(x[..., FEATURE_INDEX["log_pt"]], axis=1)
    assert ((step <= 0) | ~mask[:, 1:]).all()  # leading-pT order among real slots


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    torch.manual_seed(5)
    model = build_model(
        ModelConfig(
            backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,)),
            heads=(HeadConfig("score"),),
        )
    )
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(path, model)
    return RS3LTagger.load(path, threads=1, particle_budget=512)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=jagged_jets())
def test_tagger_properties(tagger, data):
    jets, constituents, n_good = data
    tags = tagger(jets, constituents)
    assert ak.to_list(ak.num(tags, axis=1)) == ak.to_list(ak.num(jets, axis=1))
    flat = ak.flatten(tags, axis=1)
    missing = np.asarray(ak.to_numpy(ak.is_none(flat, axis=0)), dtype=bool)
    np.testing.assert_array_equal(missing, n_good == 0)
    present = flat[~missing]
    embedding = np.asarray(ak.to_numpy(present.embedding)).reshape(-1, tagger.embedding_dim)
    assert embedding.shape == (int((~missing).sum()), tagger.embedding_dim)
    assert np.isfinite(embedding).all()
    assert np.isfinite(np.asarray(ak.to_numpy(present.score))).all()



@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=jagged_jets(), block=st.sampled_from([1, 3, 8]))
def test_tagger_blocks_give_the_unblocked_result(tagger, data, block):
    """The tagger builds features one block of jets at a time (bounded memory): any block size
    gives the same records as one block holding every jet."""
    from rs3l_coffea.inference import tagger as tagger_module

    jets, constituents, _ = data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tagger_module, "FEATURE_BLOCK_JETS", 10**9)
        whole = tagger(jets, constituents)
        patch.setattr(tagger_module, "FEATURE_BLOCK_JETS", block)
        blocked = tagger(jets, constituents)
    assert ak.to_list(ak.is_none(blocked, axis=1)) == ak.to_list(ak.is_none(whole, axis=1))
    flat_whole, flat_blocked = ak.flatten(whole, axis=1), ak.flatten(blocked, axis=1)
    present = ~ak.is_none(flat_whole, axis=0)
    np.testing.assert_allclose(
        np.asarray(ak.to_numpy(flat_blocked[present].embedding)),
        np.asarray(ak.to_numpy(flat_whole[present].embedding)), rtol=1e-5, atol=1e-6,
    )
