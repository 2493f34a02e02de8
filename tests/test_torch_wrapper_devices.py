"""RS3LTorchWrapper: the device and thread pitfalls of coffea's torch_wrapper, checked on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rs3l_coffea.coffea_processing import torch_wrapper as wrapper_module
from rs3l_coffea.coffea_processing.torch_wrapper import RS3LTorchWrapper, model_device
from rs3l_coffea.errors import ConfigError
from rs3l_coffea.nn import build_model, export_torchscript
from rs3l_coffea.nn.config import DGCNNConfig, HeadConfig, ModelConfig

N_FEATURES = 15


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    torch.manual_seed(2)
    config = ModelConfig(backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,)),
                         heads=(HeadConfig("score"),))
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    export_torchscript(model, path)
    return path, model


def _inputs(n_jets: int = 5, n_particles: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_jets, n_particles, N_FEATURES)).astype(np.float32)
    mask = np.ones((n_jets, n_particles), dtype=bool)
    mask[:, 9:] = False
    return x, mask


def test_cpu_device_is_honoured_when_cuda_is_visible(scripted, monkeypatch):
    """coffea's base class calls ``.cuda()`` whenever CUDA is visible; device="cpu" must not."""
    path, model = scripted
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    wrapper = RS3LTorchWrapper(path, head_names=("score",), embedding_dim=8, device="cpu")
    x, mask = _inputs()
    result = wrapper.numpy_call(x, mask)
    assert model_device(wrapper.model).type == "cpu"
    with torch.no_grad():
        embedding, scores = model(torch.from_numpy(x), torch.from_numpy(mask))
    np.testing.assert_allclose(result, torch.cat([embedding, scores], dim=1).numpy(), rtol=1e-5, atol=1e-6)


def test_cuda_request_without_cuda_is_a_clear_error(scripted, monkeypatch):
    path, _ = scripted
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    wrapper = RS3LTorchWrapper(path, head_names=("score",), device="cuda:0")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        wrapper.numpy_call(*_inputs())


def test_bad_device_and_thread_options_are_refused_up_front(scripted):
    path, _ = scripted
    with pytest.raises(ConfigError, match="not a torch device"):
        RS3LTorchWrapper(path, device="gpu7")
    with pytest.raises(ConfigError, match="threads"):
        RS3LTorchWrapper(path, threads=0)


def test_model_device_follows_parameters_not_the_wrapper():
    module = torch.nn.Linear(2, 2, device="meta")
    assert model_device(module).type == "meta"
    assert model_device(torch.nn.Identity()).type == "cpu"


class _ThreadRecorder(torch.nn.Module):
    """Stands in for the TorchScript model: records torch's thread count during the call."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(torch.get_num_threads())
        n = x.shape[0]
        return torch.zeros(n, 8), torch.zeros(n, 1)


@pytest.mark.parametrize(("in_worker", "threads", "expected"), [(True, None, 1), (True, 2, 2), (False, 3, 3)])
def test_threads_inside_workers_do_not_oversubscribe(scripted, monkeypatch, in_worker, threads, expected):
    path, _ = scripted
    monkeypatch.setattr(wrapper_module, "_in_worker_process", lambda: in_worker)
    recorder = _ThreadRecorder()
    monkeypatch.setattr(RS3LTorchWrapper, "_create_model", lambda self: recorder)
    wrapper = RS3LTorchWrapper(path, head_names=("score",), embedding_dim=8, device="cpu", threads=threads)
    before = torch.get_num_threads()
    wrapper.numpy_call(*_inputs())
    assert recorder.seen == [expected]
    assert torch.get_num_threads() == before  # restored after the call


def test_threads_in_a_real_dask_worker(scripted):
    """Under distributed, the default policy gives one torch thread per call."""
    distributed = pytest.importorskip("distributed")
    path, _ = scripted

    def threads_seen(path: str) -> int:
        recorder = _ThreadRecorder()
        wrapper = RS3LTorchWrapper(path, head_names=("score",), embedding_dim=8, device="cpu")
        wrapper._model = recorder  # coffea's lazy slot: only the thread policy is under test
        wrapper.numpy_call(*_inputs())
        return recorder.seen[0]

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert client.submit(threads_seen, str(path)).result() == 1


def test_from_model_takes_the_cards_particle_cap(tmp_path):
    import json

    from rs3l_coffea.nn import save_model

    torch.manual_seed(3)
    model = build_model(ModelConfig(backbone=DGCNNConfig(width=8, conv_layers=1, k=4, output_hidden=(8,)),
                                    heads=(HeadConfig("score"),))).eval()
    save_model(tmp_path / "capped", model)
    card_path = tmp_path / "capped.json"
    card = json.loads(card_path.read_text())
    card.setdefault("preprocessing", {})["max_particles"] = 7
    card_path.write_text(json.dumps(card))
    wrapper = RS3LTorchWrapper.from_model(tmp_path / "capped", tmp_path / "capped.pt")
    assert wrapper.max_particles == 7
    assert RS3LTorchWrapper.from_model(tmp_path / "capped", tmp_path / "c2.pt", max_particles=12).max_particles == 12
