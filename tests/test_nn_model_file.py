"""Model files (NAME.safetensors + NAME.json), build_model round trips, and their error paths."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from rs3l_coffea.errors import ConfigError, ModelFormatError
from rs3l_coffea.features.names import FEATURE_NAMES
from rs3l_coffea.nn import (
    DGCNNConfig,
    HeadConfig,
    LoRAConfig,
    ModelCard,
    ModelConfig,
    TransformerConfig,
    build_model,
    load_model,
    model_paths,
    save_model,
)

torch.set_num_threads(1)

CONFIGS = [
    ModelConfig(
        backbone=DGCNNConfig(width=16, k=4, output_hidden=(8,), output_dim=4),
        heads=(HeadConfig("higgs"), HeadConfig("flavour", kind="mlp", hidden=(6,), classes=("b", "c", "light"))),
    ),
    ModelConfig(backbone=TransformerConfig(d_model=16, n_heads=2, n_layers=1, dim_feedforward=32, output_dim=4, ir_safe=True)),
    ModelConfig(backbone=DGCNNConfig(width=8, k=3, output_hidden=(), output_dim=3), lora=LoRAConfig(rank=2, alpha=4.0)),
]


def inputs(n_jets=3, n_particles=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_jets, n_particles, 15, generator=generator)
    mask = torch.rand(n_jets, n_particles, generator=generator) < 0.7
    return x, mask


@pytest.mark.parametrize("config", CONFIGS, ids=["dgcnn-heads", "transformer", "lora"])
def test_save_load_round_trip(tmp_path, config):
    torch.manual_seed(0)
    model = build_model(config.to_dict()).eval()
    for parameter in model.parameters():  # make LoRA B non-zero so it is really stored
        parameter.data.add_(0.01 * torch.randn_like(parameter))
    card = {"description": "test", "training": {"epochs": 3}, "metrics": {"auc": 0.9}, "preprocessing": {"scale": [1.0]}}
    weights, card_path = save_model(tmp_path / "m", model, card)
    assert (weights.name, card_path.name) == ("m.safetensors", "m.json")
    for address in (tmp_path / "m", weights, card_path):
        loaded, loaded_card = load_model(address)
        x, mask = inputs()
        with torch.no_grad():
            for a, b in zip(model(x, mask), loaded(x, mask), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.config == config
    assert loaded_card.feature_names == FEATURE_NAMES
    assert loaded_card.metrics == {"auc": 0.9} and loaded_card.training == {"epochs": 3}
    assert list(loaded_card.head_names) == model.head_names
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_jet_model_derives_its_config(tmp_path):
    from rs3l_coffea.nn import DGCNN, ClassificationHead, JetModel, apply_lora

    torch.manual_seed(1)
    backbone = apply_lora(DGCNN(DGCNNConfig(width=8, k=3, output_dim=4)), rank=3, alpha=6.0)
    model = JetModel(backbone, [ClassificationHead(4, HeadConfig("top"))])
    assert model.config == ModelConfig(
        backbone=DGCNNConfig(width=8, k=3, output_dim=4), heads=(HeadConfig("top"),), lora=LoRAConfig(rank=3, alpha=6.0)
    )
    save_model(tmp_path / "derived", model)
    loaded, _ = load_model(tmp_path / "derived")
    x, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, mask)[1], model(x, mask)[1], rtol=0, atol=0)


def test_head_scores_shapes_and_names():
    model = build_model(CONFIGS[0]).eval()
    x, mask = inputs()
    embedding, scores = model(x, mask)
    assert embedding.shape == (3, 4) and scores.shape == (3, 4)
    assert model.head_names == ["higgs", "flavour:b", "flavour:c", "flavour:light"]
    assert ((scores >= 0) & (scores <= 1)).all()
    torch.testing.assert_close(scores[:, 1:].sum(1), torch.ones(3))  # softmax block


def test_config_rejects_unknown_and_invalid_values():
    with pytest.raises(ConfigError, match="widht"):
        ModelConfig.from_dict({"backbone": {"type": "dgcnn", "widht": 3}})
    with pytest.raises(ConfigError, match="aggregation"):
        DGCNNConfig(aggregation="mean")  # the algebraic path needs max
    with pytest.raises(ConfigError, match="gnn"):
        ModelConfig.from_dict({"backbone": {"type": "gnn"}})


def write_pair(tmp_path, name="m"):
    model = build_model(CONFIGS[0])
    return model, *save_model(tmp_path / name, model)


def test_feature_order_mismatch_is_named(tmp_path):
    _, _, card_path = write_pair(tmp_path)
    card = json.loads(card_path.read_text())
    card["feature_names"][2], card["feature_names"][3] = card["feature_names"][3], card["feature_names"][2]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="feature 2 is 'dphi'"):
        load_model(card_path)
    card["feature_names"] = card["feature_names"][:14]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="14 features"):
        load_model(card_path)


def test_architecture_mismatch_names_the_key(tmp_path):
    _, weights, card_path = write_pair(tmp_path)
    card = json.loads(card_path.read_text())
    card["config"]["backbone"]["width"] = 32
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match=r"backbone\.embed\.0\.weight.*shape"):
        load_model(weights)
    card["config"]["backbone"]["width"] = 16
    card["config"]["backbone"]["conv_layers"] = 4
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match=r"missing tensor 'backbone\.convs\.3"):
        load_model(weights)


def test_malicious_pickle_is_never_unpickled(tmp_path):
    _, weights, _ = write_pair(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    weights.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(ModelFormatError, match="refusing to unpickle"):
        load_model(weights)
    torch.save({"w": torch.zeros(2)}, weights)
    with pytest.raises(ModelFormatError, match=r"m\.safetensors"):
        load_model(weights)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage garbage!")
    with pytest.raises(ModelFormatError, match="not a safetensors"):
        load_model(weights)
    assert not marker.exists()


def test_missing_and_invalid_card(tmp_path):
    _, weights, card_path = write_pair(tmp_path)
    card_path.write_text("not json")
    with pytest.raises(ModelFormatError, match=r"m\.json"):
        load_model(weights)
    card_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.json"):
        load_model(weights)
    assert model_paths(tmp_path / "a.b") == (tmp_path / "a.b.safetensors", tmp_path / "a.b.json")
    with pytest.raises(ConfigError, match="epochs"):
        save_model(tmp_path / "x", build_model(CONFIGS[0]), {"epochs": 3})
    assert isinstance(ModelCard().to_dict()["format"], str)


# --- reliability round 2: absurd cards, header before building, dtypes, non-finite weights -------


def _edit_card(card_path, edit):
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))


def _set_backbone(**values):
    return lambda card: card["config"]["backbone"].update(values)


ABSURD_CARDS = [
    ("k-1e9", _set_backbone(k=10**9), r"DGCNNConfig\.k must be at most 1024"),
    ("k-true", _set_backbone(k=True), r"DGCNNConfig\.k input should be a valid integer, got True"),
    ("width-1e9", _set_backbone(width=10**9), r"DGCNNConfig\.width must be at most 8192"),
    ("input-dim-1e9", _set_backbone(input_dim=10**9), r"DGCNNConfig\.input_dim must be at most 8192"),
    ("output-dim-1e9", _set_backbone(output_dim=10**9), r"DGCNNConfig\.output_dim must be at most 8192"),
    ("embed-layers-1e6", _set_backbone(embed_layers=10**6), r"DGCNNConfig\.embed_layers must be at most 64"),
    ("negative-hidden", _set_backbone(output_hidden=[8, -4]), r"DGCNNConfig\.output_hidden\[1\] must be a positive"),
    ("float-width", _set_backbone(width=16.5), r"DGCNNConfig\.width input should be a valid integer"),
    ("lora-alpha-nan", lambda c: c["config"].update(lora={"rank": 2, "alpha": float("nan")}),
     r"LoRAConfig\.alpha must be a finite number, got nan"),
]


@pytest.mark.parametrize(("edit", "match"), [pytest.param(*row[1:], id=row[0]) for row in ABSURD_CARDS])
def test_absurd_card_values_are_refused_before_any_layer_is_built(tmp_path, monkeypatch, edit, match):
    _, weights, card_path = write_pair(tmp_path)
    _edit_card(card_path, edit)
    import rs3l_coffea.nn.model_file as model_file

    def no_build(*args, **kwargs):
        raise AssertionError("build_model was called before the card was validated")

    monkeypatch.setattr(model_file, "build_model", no_build)
    with pytest.raises(ModelFormatError, match=r"m\.json: invalid architecture config: .*" + match):
        load_model(weights)


@pytest.mark.parametrize(
    ("values", "match"),
    [({"dropout": 5.0}, r"TransformerConfig\.dropout must be in \[0, 1\)"),
     ({"beta": float("nan")}, r"TransformerConfig\.beta must be a finite number"),
     ({"n_layers": 10**6}, r"TransformerConfig\.n_layers must be at most 64")],
)
def test_absurd_transformer_card_values_are_refused(tmp_path, values, match):
    model = build_model(CONFIGS[1])
    weights, card_path = save_model(tmp_path / "m", model)
    _edit_card(card_path, _set_backbone(**values))
    with pytest.raises(ModelFormatError, match=match):
        load_model(weights)


def test_card_shapes_are_compared_with_the_header_on_the_meta_device_only(tmp_path, monkeypatch):
    """A card asking for big layers that the weights do not hold is refused from the header,
    with every build on the parameter-free meta device (no allocation, no initialisation)."""
    _, weights, card_path = write_pair(tmp_path)
    _edit_card(card_path, _set_backbone(width=8192, embed_layers=64, conv_layers=64))
    import rs3l_coffea.nn.model_file as model_file

    devices = []
    real_build = model_file.build_model

    def recording_build(config):
        devices.append(torch.get_default_device().type)
        return real_build(config)

    monkeypatch.setattr(model_file, "build_model", recording_build)
    with pytest.raises(ModelFormatError, match=r"m\.safetensors: .*tensor 'backbone\."):
        load_model(weights)
    assert devices == ["meta"]


@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.bool, torch.complex64])
def test_non_floating_weights_are_refused(tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    _, weights, _ = write_pair(tmp_path)
    state = load_file(str(weights))
    first = next(iter(state))
    state[first] = state[first].to(dtype)
    save_file(state, str(weights))
    with pytest.raises(ModelFormatError, match=rf"tensor '{first}' has dtype \w+; model weights must be a floating"):
        load_model(weights)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_at_load_and_at_save(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    model, weights, _ = write_pair(tmp_path)
    state = load_file(str(weights))
    state["backbone.embed.0.weight"][0, 0] = bad
    save_file(state, str(weights))
    with pytest.raises(ModelFormatError, match=r"tensor 'backbone\.embed\.0\.weight' holds 1 non-finite"):
        load_model(weights)
    with torch.no_grad():
        model.backbone.embed[0].weight[1, 1] = bad
    with pytest.raises(ModelFormatError, match=r"refusing to save"):
        save_model(tmp_path / "again", model)
    assert not (tmp_path / "again.safetensors").exists() and not (tmp_path / "again.json").exists()


def test_validity_range_round_trips_and_is_validated(tmp_path):
    model = build_model(CONFIGS[0])
    validity = {"pt_min": 450.0, "pt_max": None, "abs_eta_max": 1.5, "detector": "test detector"}
    _, card_path = save_model(tmp_path / "m", model, {"validity_range": validity})
    _, card = load_model(card_path)
    assert card.validity_range == validity
    _edit_card(card_path, lambda c: c["validity_range"].update(abs_eta_max=float("nan")))
    with pytest.raises(ModelFormatError, match=r"validity_range.*abs_eta_max must be a finite number"):
        load_model(card_path)
    with pytest.raises(ConfigError, match=r"pt_max = 100\.0 must exceed pt_min = 450\.0"):
        save_model(tmp_path / "x", model, {"validity_range": {"pt_min": 450.0, "pt_max": 100.0}})


def test_lora_layer_refuses_a_non_finite_alpha():
    from rs3l_coffea.nn.lora import LoRALinear

    with pytest.raises(ValueError, match="LoRA alpha must be a finite number, got nan"):
        LoRALinear(torch.nn.Linear(3, 2), rank=2, alpha=float("nan"))
