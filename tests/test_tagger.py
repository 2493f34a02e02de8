"""RS3LTagger: columns equal the backbone run directly on build_features; structure, empty and
None jets, typetracer and dask inputs, lazy per-process model loading, torch_wrapper adapter."""

from __future__ import annotations

import pickle

import awkward as ak
import cloudpickle
import dask
import numpy as np
import pytest
import torch

from rs3l_coffea.errors import MissingConstituentsError, ModelFormatError
from rs3l_coffea.features import build_features
from rs3l_coffea.inference import tagger as tagger_module
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.io import jets_from_events, load_jets, open_events
from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def small_model(save_small_model):
    """A small randomly initialised DGCNN with two heads, saved as safetensors + card."""
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, conv_layers=2, k=8, output_hidden=(16,)),
        heads=(HeadConfig("score"), HeadConfig("flavour", classes=("b", "light"))),
    )
    return save_small_model(config, seed=1)


@pytest.fixture(scope="module")
def pfnano_dask(coffea_sample):
    """PFNano FatJets and constituents as dask-awkward arrays (3 partitions)."""
    from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema

    sample = str(coffea_sample("pfnano.root"))
    events = NanoEventsFactory.from_root(
        {sample: "Events"}, schemaclass=PFNanoAODSchema, mode="dask", steps_per_file=3
    ).events()
    return (events, *jets_from_events(events, source="pfnano"))


def direct_forward(model, jets, constituents):
    """The independent path: build_features on all jets, the torch module in one call."""
    x, mask = build_features(jets, constituents)
    with torch.no_grad():
        embedding, scores = model(torch.from_numpy(x), torch.from_numpy(mask))
    return embedding.numpy(), scores.numpy(), mask.any(axis=1)


def flat_columns(tags, head_names):
    flat = ak.flatten(tags, axis=1) if tags.ndim == 2 else tags
    valid = ~np.asarray(ak.to_numpy(ak.is_none(flat.embedding, axis=0)))
    present = flat[valid]
    embedding = np.asarray(ak.to_numpy(present.embedding))
    scores = np.stack([np.asarray(ak.to_numpy(present[name])) for name in head_names], axis=1)
    return valid, embedding, scores


@pytest.mark.parametrize("sample", ["delphes.root", "pfnano.root"])
def test_columns_equal_backbone_on_build_features(sample, coffea_sample, small_model):
    path, model = small_model
    jets, constituents = load_jets(coffea_sample(sample))
    tagger = RS3LTagger.load(path, particle_budget=300)  # several sorted batches per file
    tags = tagger(jets, constituents)
    assert ak.num(tags, axis=1).tolist() == ak.num(jets, axis=1).tolist()
    assert tags.fields == ["embedding", "score", "flavour:b", "flavour:light"]
    assert str(tags.type.content.content) == (
        '?{embedding: 8 * float32, score: float32, "flavour:b": float32, "flavour:light": float32}'
    )
    embedding, scores, has_particles = direct_forward(model, jets, constituents)
    valid, got_embedding, got_scores = flat_columns(tags, tagger.head_names)
    np.testing.assert_array_equal(valid, has_particles)
    np.testing.assert_allclose(got_embedding, embedding[has_particles], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_scores, scores[has_particles], rtol=1e-5, atol=1e-6)
    # softmax head columns are probabilities
    np.testing.assert_allclose(got_scores[:, 1] + got_scores[:, 2], 1.0, rtol=1e-6)


def test_attach_to_events_virtual_and_eager(coffea_sample, small_model):
    path, _ = small_model
    tagger = RS3LTagger.load(path)
    for mode in ("virtual", "eager"):
        events, source, origin = open_events(coffea_sample("pfnano.root"), mode=mode)
        jets, constituents = jets_from_events(events, source=source, jets="FatJet", origin=origin)
        tags = tagger(jets, constituents)
        events["FatJet", "rs3l"] = tags
        assert ak.num(events.FatJet.rs3l, axis=1).tolist() == ak.num(events.FatJet, axis=1).tolist()
        assert ak.to_list(events.FatJet.rs3l.score) == ak.to_list(tags.score)
        # the stored collection keeps its own fields and behaviour
        np.testing.assert_allclose(ak.flatten(events.FatJet.pt), ak.flatten(jets.pt))
        tagged = tagger.from_events(events, source=source, jets="FatJet", origin=origin)
        assert ak.to_list(tagged.rs3l.score) == ak.to_list(tags.score)


def test_no_jets_no_constituents_none_jets_and_empty_input(coffea_sample, small_model):
    path, model = small_model
    jets, constituents = load_jets(coffea_sample("pfnano.root"))
    real_jet, real_particles = jets[0, 0], constituents[0, 0]
    handmade_jets = ak.Array([[], [real_jet, real_jet], [real_jet]])
    handmade_constituents = ak.Array([[], [real_particles, real_particles[:0]], [real_particles]])
    tagger = RS3LTagger.load(path)
    tags = tagger(handmade_jets, handmade_constituents)
    assert ak.num(tags, axis=1).tolist() == [0, 2, 1]
    assert ak.to_list(ak.is_none(tags, axis=1)) == [[], [False, True], [False]]
    embedding, scores, _ = direct_forward(model, jets[0, :1], constituents[0, :1])
    np.testing.assert_allclose(np.asarray(tags[1, 0].embedding), embedding[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tags[2, 0].score, scores[0, 0], rtol=1e-5)

    # a None jet (e.g. from ak.mask) gives a None record
    masked = ak.mask(handmade_jets, ak.Array([[], [False, True], [True]]))
    masked_tags = tagger(masked, handmade_constituents)
    assert ak.to_list(ak.is_none(masked_tags, axis=1)) == [[], [True, True], [False]]

    # no events at all, and flat (not per-event) jets
    empty = tagger(handmade_jets[:0], handmade_constituents[:0])
    assert len(empty) == 0 and empty.type.content == tags.type.content
    flat = tagger(ak.flatten(handmade_jets), ak.flatten(handmade_constituents, axis=1))
    assert ak.to_list(ak.is_none(flat)) == [False, True, False]


def test_typetracer_input_gives_typed_output_without_loading_the_model(coffea_sample, small_model):
    path, _ = small_model
    jets, constituents = load_jets(coffea_sample("pfnano.root"))
    eager = RS3LTagger.load(path)(jets, constituents)
    tagger_module._ENGINE_CACHE.clear()
    tagger = RS3LTagger.load(path)
    tracer = tagger(
        ak.Array(jets.layout.to_typetracer(forget_length=True)),
        ak.Array(constituents.layout.to_typetracer(forget_length=True)),
    )
    assert ak.backend(tracer) == "typetracer"
    assert tracer.layout.form == eager.layout.form
    assert tagger._engine is None and not tagger_module._ENGINE_CACHE


def test_dask_equals_eager_and_graph_carries_no_weights(coffea_sample, pfnano_dask, tmp_path):
    # default-size DGCNN: ~0.5 MB of weights, which must not end up in the graph
    torch.manual_seed(2)
    model = build_model(ModelConfig(heads=(HeadConfig("score"),)))
    weights, _ = save_model(tmp_path / "big", model)
    tagger = RS3LTagger.load(tmp_path / "big", batch_invariant=True)
    sample = str(coffea_sample("pfnano.root"))
    events, jets, constituents = pfnano_dask
    tags = tagger(jets, constituents)
    assert tags.npartitions == 3
    assert str(tags._meta.type.content) == "var * ?{embedding: 8 * float32, score: float32}"
    with_tagger = len(cloudpickle.dumps(tags.__dask_graph__()))
    without = len(cloudpickle.dumps(jets.__dask_graph__()))
    assert with_tagger - without < 20_000 < weights.stat().st_size
    assert tagger._engine is None  # building the graph loaded nothing

    # from_events + attaching to the dask events' stored collection
    events = events[["FatJet", "FatJetPFCands", "PFCands"]]
    events["FatJet", "rs3l"] = tagger.from_events(events, source="pfnano", jets="FatJet").rs3l
    batched = RS3LTagger.load(tmp_path / "big")(jets, constituents)
    computed, attached, computed_batched = dask.compute(
        tags, events.FatJet.rs3l.score, batched, scheduler="sync"
    )
    eager_jets, eager_constituents = load_jets(sample)
    eager = RS3LTagger.load(tmp_path / "big", batch_invariant=True)(eager_jets, eager_constituents)
    # exact: bit-identity across partitionings is the documented batch_invariant guarantee
    assert ak.to_list(computed) == ak.to_list(eager)
    assert ak.to_list(attached) == ak.to_list(eager.score)
    # default sorted batches (3 partitions vs one call): float32 rounding only
    valid, want_embedding, want_scores = flat_columns(eager, ("score",))
    got_valid, got_embedding, got_scores = flat_columns(computed_batched, ("score",))
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_allclose(got_embedding, want_embedding, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)

    # after use the tagger still pickles to its path and settings only
    blob = pickle.dumps(tagger)
    assert len(blob) < 2_000
    clone = pickle.loads(blob)
    assert clone._engine is None and clone.model_path == tagger.model_path


def test_records_are_bit_identical_under_any_chunking(coffea_sample, small_model):
    """batch_invariant=True guarantees a jet's record does not depend on the other jets of the
    call: event chunks of any size, and another file's jets mixed in, give the same bits
    (docs/clusters.md, "Reproducibility")."""
    path, _ = small_model
    jets, constituents = load_jets(coffea_sample("pfnano.root"))
    tagger = RS3LTagger.load(path, particle_budget=300, batch_invariant=True)
    whole = tagger(jets, constituents)
    for chunk in (1, 2, 5):
        parts = [tagger(jets[i : i + chunk], constituents[i : i + chunk]) for i in range(0, len(jets), chunk)]
        assert ak.to_list(ak.concatenate(parts)) == ak.to_list(whole)
    other_jets, other_constituents = load_jets(coffea_sample("delphes.root"))
    mixed = tagger(
        ak.concatenate([other_jets[:20], jets]), ak.concatenate([other_constituents[:20], constituents])
    )
    assert ak.to_list(mixed[20:]) == ak.to_list(whole)


def test_card_max_particles_is_honoured(coffea_sample, small_model, tmp_path):
    """The card's preprocessing.max_particles (the cap the model was trained with) sets the
    features' particle cap; an explicit argument overrides it; a bad value is refused."""
    _, model = small_model
    save_model(tmp_path / "capped", model, card={"preprocessing": {"max_particles": 5}})
    jets, constituents = load_jets(coffea_sample("pfnano.root"))
    tagger = RS3LTagger.load(tmp_path / "capped")
    assert tagger.max_particles == 5
    x, mask = build_features(ak.flatten(jets), ak.flatten(constituents, axis=1), max_particles=5)
    assert mask.shape[1] == 5 and mask.sum(axis=1).max() == 5  # the jets here have more than 5
    with torch.no_grad():
        embedding, _ = model(torch.from_numpy(x), torch.from_numpy(mask))
    _, got, _ = flat_columns(tagger(jets, constituents), tagger.head_names)
    np.testing.assert_allclose(got, embedding.numpy()[mask.any(axis=1)], rtol=1e-5, atol=1e-6)
    assert RS3LTagger.load(tmp_path / "capped", max_particles=100).max_particles == 100
    save_model(tmp_path / "plain", model)
    assert RS3LTagger.load(tmp_path / "plain").max_particles == 100
    save_model(tmp_path / "bad", model, card={"preprocessing": {"max_particles": "all"}})
    with pytest.raises(ModelFormatError, match=r"bad\.json.*preprocessing\.max_particles.*'all'"):
        RS3LTagger.load(tmp_path / "bad")


def test_default_model_location_and_clear_error(small_model, tmp_path, monkeypatch):
    path, _ = small_model
    monkeypatch.delenv("RS3L_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(tagger_module, "_PACKAGE_ROOT", tmp_path / "pkg")
    with pytest.raises(ModelFormatError, match="no default RS3L model found"):
        RS3LTagger.default()
    monkeypatch.setenv("RS3L_DEFAULT_MODEL", str(path))
    assert RS3LTagger.default().model_path == str(path.resolve())
    monkeypatch.delenv("RS3L_DEFAULT_MODEL")
    packaged = tmp_path / "pkg" / "data" / "models"
    packaged.mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        (packaged / f"default{suffix}").write_bytes(path.with_suffix(suffix).read_bytes())
    assert RS3LTagger.default().model_path == str(packaged / "default")


def test_bad_settings_and_missing_model(small_model, tmp_path):
    path, _ = small_model
    with pytest.raises(FileNotFoundError, match="nothere"):
        RS3LTagger.load(tmp_path / "nothere")
    with pytest.raises(ValueError, match="threads"):
        RS3LTagger.load(path, threads=0)
    assert RS3LTagger.load(path).effective_threads() is None  # main process: torch's default
    assert RS3LTagger.load(path, threads=3).effective_threads() == 3


def test_file_without_candidates_names_file_and_constituents(coffea_sample, small_model):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path, _ = small_model
    sample = str(coffea_sample("nano_dy.root"))
    events = NanoEventsFactory.from_root(
        {sample: "Events"}, schemaclass=NanoAODSchema, mode="virtual"
    ).events()
    with pytest.raises(MissingConstituentsError, match="constituents") as error:
        RS3LTagger.load(path).from_events(events, origin=sample)
    assert "nano_dy.root" in str(error.value)


def test_torch_wrapper_adapter_matches_tagger(coffea_sample, pfnano_dask, small_model, tmp_path):
    from rs3l_coffea.coffea_processing.torch_wrapper import RS3LTorchWrapper

    path, _ = small_model
    wrapper = RS3LTorchWrapper.from_model(path, tmp_path / "small.pt")
    sample = str(coffea_sample("pfnano.root"))
    jets, constituents = load_jets(sample)
    # the first jet loses its particles: both must give None there
    first_event = ak.concatenate([constituents[0][:1, :0], constituents[0][1:]], axis=0)
    constituents = ak.concatenate([first_event[np.newaxis], constituents[1:]], axis=0)
    assert ak.num(constituents, axis=2)[0, 0] == 0
    expected = RS3LTagger.load(path)(jets, constituents)
    got = wrapper(jets, constituents)
    assert got.type == expected.type
    assert ak.to_list(ak.is_none(got, axis=1)) == ak.to_list(ak.is_none(expected, axis=1))
    _, want_embedding, want_scores = flat_columns(expected, ("score", "flavour:b"))
    _, got_embedding, got_scores = flat_columns(got, ("score", "flavour:b"))
    np.testing.assert_allclose(got_embedding, want_embedding, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)

    _, dask_jets, dask_constituents = pfnano_dask
    (computed,) = dask.compute(wrapper(dask_jets, dask_constituents), scheduler="sync")
    plain = RS3LTagger.load(path)(*load_jets(sample))
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(computed.score)), ak.to_numpy(ak.flatten(plain.score)), rtol=1e-5
    )
