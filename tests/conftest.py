"""Shared fixtures: real coffea sample files (downloaded and cached once) and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from rs3l_coffea.testing import sample_path

# CI runs on 2 shared cores: no per-example deadlines or speed health checks, and a fixed
# example sequence so that a red run can be reproduced exactly.
settings.register_profile(
    "rs3l", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("rs3l")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "rs3l-published"


@pytest.fixture(scope="session")
def coffea_sample():
    """Return a function mapping a sample name (e.g. ``"delphes.root"``) to its cached path."""
    return sample_path


@pytest.fixture(scope="session")
def published_checkpoint() -> Path:
    """The published RS3L backbone checkpoint from ``../shared`` (skip when absent)."""
    path = SHARED_REFERENCE / "mar20_run0.pt"
    if not path.is_file():
        pytest.skip(f"published RS3L weights not available at {path}")
    return path


@pytest.fixture(scope="session")
def pfnano_jets(coffea_sample):
    """``(jets, constituents)`` of coffea's pfnano.root: its 24 FatJets with their PF candidates."""
    import warnings

    from rs3l_coffea.io import load_jets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # coffea's NanoAOD cross-reference notes
        return load_jets(coffea_sample("pfnano.root"), mode="eager")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's torch code on one thread (2 shared CI cores); use with
    ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def save_small_model(tmp_path_factory):
    """A function ``(config, seed, name="small") -> (stem, model)`` saving a randomly initialised
    model (``torch.manual_seed(seed)``, eval mode) as ``<tmp>/<name>.safetensors`` + card."""
    import torch

    from rs3l_coffea.nn import build_model, save_model

    def save(config, seed: int, name: str = "small"):
        torch.manual_seed(seed)
        model = build_model(config).eval()
        path = tmp_path_factory.mktemp("model") / name
        save_model(path, model)
        return path, model

    return save
