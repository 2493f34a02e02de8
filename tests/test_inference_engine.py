"""InferenceEngine: batched == unbatched, order restored, padding layout, edge cases, threads,
bit-identical outputs under any batching (the documented batch_invariant guarantee)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rs3l_coffea.errors import ConfigError
from rs3l_coffea.inference import InferenceEngine, plan_batches
from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, k=6, output_hidden=(8,), output_dim=4),
        heads=(HeadConfig("higgs"), HeadConfig("flavour", classes=("b", "light"))),
    )
    return build_model(config).eval()


def jets(n_jets=40, n_slots=30, seed=0, scattered=False):
    rng = np.random.default_rng(seed)
    multiplicity = rng.integers(0, n_slots + 1, n_jets)
    multiplicity[:3] = [0, 1, n_slots]
    x = rng.normal(size=(n_jets, n_slots, 15)).astype(np.float32)
    mask = np.arange(n_slots) < multiplicity[:, None]
    if scattered:  # real particles spread over the slots, not packed at the front
        for row in range(n_jets):
            perm = rng.permutation(n_slots)
            x[row], mask[row] = x[row, perm], mask[row, perm]
    x[~mask] = rng.normal(size=((~mask).sum(), 15)) * 1e6  # garbage in padding
    return x, mask


def unbatched(model, x, mask):
    with torch.no_grad():
        embedding, scores = model(torch.from_numpy(x), torch.from_numpy(mask))
    return embedding.numpy(), scores.numpy()


def assert_rel_close(a, b, rtol=1e-4):
    scale = np.maximum(np.abs(b).max(axis=1, keepdims=True), 1e-6)
    assert (np.abs(a - b) / scale).max() < rtol


@pytest.mark.parametrize("budget", [1, 45, 100_000])
@pytest.mark.parametrize("scattered", [False, True])
def test_batched_equals_unbatched(model, budget, scattered):
    x, mask = jets(scattered=scattered)
    expected_embedding, expected_scores = unbatched(model, x, mask)
    engine = InferenceEngine(model, particle_budget=budget, threads=1, batch_invariant=False)
    embedding, scores = engine.run(x, mask)
    assert embedding.dtype == np.float32 and embedding.shape == (40, 4) and scores.shape == (40, 3)
    assert_rel_close(embedding, expected_embedding)
    assert_rel_close(scores, expected_scores)


def test_batch_invariant_outputs_are_bit_identical_under_any_batching(model):
    """A jet's outputs depend on that jet alone: exact equality is the documented guarantee of
    batch_invariant=True, whatever the chunking, order, padding or budget."""
    x, mask = jets(n_jets=40, seed=5, scattered=True)
    engine = InferenceEngine(model, batch_invariant=True)
    assert engine.batch_invariant and engine.threads == 1
    embedding, scores = engine.run(x, mask)

    for chunk in (1, 3, 7, 16):
        parts = [engine.run(x[i : i + chunk], mask[i : i + chunk]) for i in range(0, len(x), chunk)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), embedding)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), scores)
    order = np.random.default_rng(1).permutation(len(x))
    shuffled = engine.run(x[order], mask[order])
    np.testing.assert_array_equal(shuffled[0], embedding[order])
    np.testing.assert_array_equal(shuffled[1], scores[order])
    # other batch-mates (another file's jets) and wider padding
    other_x, other_mask = jets(n_jets=25, n_slots=60, seed=6)
    wide_x = np.concatenate([x, np.zeros((40, 30, 15), np.float32)], axis=1)
    wide_mask = np.concatenate([mask, np.zeros((40, 30), bool)], axis=1)
    mixed = InferenceEngine(model, particle_budget=37, batch_invariant=True).run(
        np.concatenate([other_x, wide_x]), np.concatenate([other_mask, wide_mask])
    )
    np.testing.assert_array_equal(mixed[0][25:], embedding)
    np.testing.assert_array_equal(mixed[1][25:], scores)
    # default sorted batches: the same numbers to float32 rounding, no bit-identity promised
    batched = InferenceEngine(model, threads=1).run(x, mask)
    assert_rel_close(batched[0], embedding, rtol=1e-5)
    assert_rel_close(batched[1], scores, rtol=1e-5)


def test_plan_batches_respects_budget():
    multiplicity = np.array([5, 0, 30, 12, 30, 7, 1])
    batches = plan_batches(multiplicity, particle_budget=40)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(1, multiplicity[batch].max()) <= 40
    assert [multiplicity[b[0]] for b in batches] == sorted((multiplicity[b[0]] for b in batches), reverse=True)


def test_zero_jets_zero_slots_and_empty_jets(model):
    engine = InferenceEngine(model)
    embedding, scores = engine.run(np.zeros((0, 10, 15), np.float32), np.zeros((0, 10), bool))
    assert embedding.shape == (0, 4) and scores.shape == (0, 3)
    embedding, scores = engine.run(np.zeros((3, 0, 15), np.float32), np.zeros((3, 0), bool))
    expected = unbatched(model, np.zeros((1, 1, 15), np.float32), np.zeros((1, 1), bool))
    np.testing.assert_allclose(embedding, np.repeat(expected[0], 3, axis=0), rtol=1e-6)
    assert np.isfinite(scores).all()


def test_bad_inputs_raise_clear_errors(model):
    engine = InferenceEngine(model)
    with pytest.raises(ValueError, match=r"14 features.*expected 15.*log_pt"):
        engine.run(np.zeros((2, 3, 14), np.float32), np.ones((2, 3), bool))
    x, mask = jets(n_jets=4)
    x[2, 0, 4] = np.nan
    with pytest.raises(ValueError, match=r"'log_e'.*jet 2"):
        engine.run(x, mask)
    with pytest.raises(ValueError, match="boolean"):
        engine.run(x, mask.astype(int))
    with pytest.raises(ConfigError, match="only supported on CUDA"):
        InferenceEngine(model, device="cpu", precision="float16")
    with pytest.raises(ConfigError, match="backend"):
        InferenceEngine(model, backend="tensorrt")


def test_threads_are_restored(model):
    before = torch.get_num_threads()
    x, mask = jets(n_jets=5)
    InferenceEngine(model, threads=2).run(x, mask)
    assert torch.get_num_threads() == before


def test_from_path_native(model, tmp_path):
    # the ONNX backend is covered in tests/test_export.py (it shares one export there)
    x, mask = jets(n_jets=12, seed=3, scattered=True)
    expected = unbatched(model, x, mask)
    save_model(tmp_path / "tagger", model)
    engine = InferenceEngine.from_path(tmp_path / "tagger.json", particle_budget=50)
    embedding, scores = engine.run(x, mask)
    assert engine.head_names == ["higgs", "flavour:b", "flavour:light"]
    assert engine.card.feature_names[0] == "log_pt"
    assert_rel_close(embedding, expected[0])
    assert_rel_close(scores, expected[1])


def test_card_only_for_an_engine_made_from_a_model_file(model):
    assert InferenceEngine(model).card is None


def test_engine_does_not_modify_callers_model(model):
    model.train()
    try:
        InferenceEngine(model).run(*jets(n_jets=3))
        assert model.training
    finally:
        model.eval()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_cuda_precisions(model, precision):
    x, mask = jets(n_jets=20)
    expected = unbatched(model, x, mask)[0]
    embedding, _ = InferenceEngine(model, device="cuda", precision=precision).run(x, mask)
    tolerance = 1e-4 if precision == "float32" else 5e-2
    assert_rel_close(embedding, expected, rtol=tolerance)
