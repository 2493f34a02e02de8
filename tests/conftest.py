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
