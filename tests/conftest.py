"""Shared fixtures: real coffea sample files (downloaded and cached once) and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from rs3l_coffea.testing import sample_path

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
