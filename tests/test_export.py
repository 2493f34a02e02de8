"""TorchScript and ONNX export: parity with eager incl. batches with fewer slots than k, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rs3l_coffea.cli import app
from rs3l_coffea.inference import InferenceEngine
from rs3l_coffea.nn import (
    DGCNNConfig,
    HeadConfig,
    LoRAConfig,
    ModelConfig,
    TransformerConfig,
    build_model,
    export_onnx,
    export_torchscript,
    save_model,
)

torch.set_num_threads(1)
ort = pytest.importorskip("onnxruntime")


def make_model(backbone, seed=0, lora=None):
    torch.manual_seed(seed)
    config = ModelConfig(backbone=backbone, heads=(HeadConfig("higgs"), HeadConfig("f", classes=("b", "q"))), lora=lora)
    model = build_model(config).eval()
    if lora is not None:  # non-trivial adapters, so merging is really exercised
        for name, parameter in model.named_parameters():
            if "lora_b" in name:
                parameter.data.normal_(0, 0.1)
    return model


DGCNN_SMALL = DGCNNConfig(width=16, k=6, output_hidden=(8,), output_dim=4)
SHAPES = [(5, 20), (3, 4), (1, 1)]  # (jets, slots): includes fewer slots than k = 6


def batch(n_jets, n_slots, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_jets, n_slots, 15, generator=generator)
    mask = torch.rand(n_jets, n_slots, generator=generator) < 0.8
    mask[0, 0] = True
    if n_jets > 2:
        mask[2] = False  # an empty jet
    return x, mask


def assert_rel_close(got, expected, rtol=1e-4):
    got, expected = np.asarray(got), np.asarray(expected)
    scale = np.maximum(np.abs(expected).max(axis=1, keepdims=True), 1e-6)
    assert (np.abs(got - expected) / scale).max() < rtol


@pytest.mark.parametrize(
    "backbone,lora",
    [(DGCNN_SMALL, None), (DGCNN_SMALL, LoRAConfig(rank=2)), (TransformerConfig(d_model=16, n_heads=2, n_layers=1, dim_feedforward=32, ir_safe=True), None)],
    ids=["dgcnn", "dgcnn-lora", "transformer"],
)
def test_torchscript_parity(tmp_path, backbone, lora):
    model = make_model(backbone, lora=lora)
    path = export_torchscript(model, tmp_path / "model.pt")
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        for n_jets, n_slots in SHAPES:
            x, mask = batch(n_jets, n_slots)
            for got, expected in zip(scripted(x, mask), model(x, mask), strict=True):
                assert_rel_close(got, expected)


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    model = make_model(DGCNN_SMALL, lora=LoRAConfig(rank=2))
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_onnx_parity_dynamic_shapes(onnx_export):
    model, path = onnx_export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert "log_pt" in meta["feature_names"] and "higgs" in meta["head_names"]
    with torch.no_grad():
        for n_jets, n_slots in [*SHAPES, (7, 33)]:
            x, mask = batch(n_jets, n_slots, seed=n_slots)
            got = session.run(None, {"x": x.numpy(), "mask": mask.numpy()})
            for g, e in zip(got, model(x, mask), strict=True):
                assert_rel_close(g, e.numpy())


def test_onnx_engine_matches_torch_engine(onnx_export):
    model, path = onnx_export
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 25, 15)).astype(np.float32)
    mask = np.arange(25) < rng.integers(0, 26, 30)[:, None]
    torch_out = InferenceEngine(model, particle_budget=10_000).run(x, mask)
    onnx_engine = InferenceEngine.from_path(path, particle_budget=60, threads=1)
    assert onnx_engine.head_names == ["higgs", "f:b", "f:q"]
    for got, expected in zip(onnx_engine.run(x, mask), torch_out, strict=True):
        assert_rel_close(got, expected)


def test_onnx_engine_batch_invariant_is_bit_identical_under_any_chunking(onnx_export):
    """batch_invariant=True on the ONNX backend: exact equality is the documented guarantee."""
    _, path = onnx_export
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 25, 15)).astype(np.float32)
    mask = np.arange(25) < rng.integers(0, 26, 20)[:, None]
    engine = InferenceEngine.from_path(path, batch_invariant=True)
    embedding, scores = engine.run(x, mask)
    for chunk in (1, 7):
        parts = [engine.run(x[i : i + chunk], mask[i : i + chunk]) for i in range(0, len(x), chunk)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), embedding)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), scores)


def test_cli_export_torchscript_and_errors(tmp_path):
    model = make_model(DGCNN_SMALL)
    save_model(tmp_path / "m", model)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "m.json"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    x, mask = batch(3, 9)
    with torch.no_grad():
        assert_rel_close(scripted(x, mask)[0], model(x, mask)[0])
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04garbage")
    (tmp_path / "bad.json").write_text((tmp_path / "m.json").read_text())
    result = runner.invoke(app, ["export", str(tmp_path / "bad"), "--format", "onnx", "--out", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 2
    assert "refusing to unpickle" in result.output
    assert not (tmp_path / "bad.onnx").exists()


def _published_checkpoint():
    from pathlib import Path

    for candidate in (
        Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "rs3l-published",
        Path("/work/shared/reference/rs3l-published"),
    ):
        if (candidate / "mar20_run0.pt").is_file():
            return candidate / "mar20_run0.pt"
    pytest.skip("published RS3L weights not available (../shared or /work/shared)")


def test_published_export_carries_the_input_adapter_and_records_it(tmp_path):
    import json

    import onnx

    from rs3l_coffea.nn.published import PUBLISHED_FEATURE_NAMES, load_published_rs3l

    path = _published_checkpoint()
    model = load_published_rs3l(path)
    bare = load_published_rs3l(path, adapt_inputs=False)
    x, mask = batch(6, 40, seed=3)
    x[..., 5] = -torch.rand(6, 40) * 6  # log E ratios as our builder makes them (<= 0)
    # Reference: the bare published network on inputs converted by hand (E ratio linear).
    by_hand = x.clone()
    by_hand[..., 5] = torch.where(mask, torch.exp(x[..., 5]), 0.0)
    with torch.no_grad():
        expected = bare(by_hand, mask)[0].numpy()
    onnx_path = export_onnx(model, tmp_path / "published.onnx")
    session = ort.InferenceSession(str(onnx_path))
    got = session.run(["embedding"], {"x": x.numpy(), "mask": mask.numpy()})[0]
    assert_rel_close(got, expected, rtol=2e-3)  # float32 kNN near-ties, see docs/published.md
    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    convention = json.loads(metadata["input_convention"])
    assert convention["seen_by_backbone"] == list(PUBLISHED_FEATURE_NAMES)
    assert "log_e_rel" in convention["transforms"]
    ts_path = export_torchscript(model, tmp_path / "published.pt")
    extra = {"input_convention.json": "", "feature_names.json": ""}
    scripted = torch.jit.load(str(ts_path), _extra_files=extra)
    with torch.no_grad():
        assert_rel_close(scripted(x, mask)[0].numpy(), expected, rtol=2e-3)
    assert json.loads(extra["input_convention.json"]) == convention
