"""The package skeleton: imports, CLI, sample cache and atomic writes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.cli import app
from rs3l_coffea.testing import KNOWN_SAMPLES, sample_path


def test_import_is_light():
    # `import rs3l_coffea` must not pull in torch or coffea (processors on many workers).
    code = "import sys, rs3l_coffea; print('torch' in sys.modules, 'coffea' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cli_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "rs3l" in result.output.lower() or "Usage" in result.output


def test_cli_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert "rs3l-coffea" in result.output


@pytest.mark.parametrize("name", KNOWN_SAMPLES)
def test_samples_are_fetched_and_cached(name):
    path = sample_path(name)
    assert path.is_file()
    assert path.stat().st_size > 0 or name == "bad_delphes.root"


def test_unknown_sample_names_what_exists():
    with pytest.raises(FileNotFoundError, match=r"delphes\.root"):
        sample_path("no_such_sample.root")


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_open_replaces(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_open(target) as handle:
        handle.write("{}")
    assert target.read_text() == "{}"
    assert not any(p.name.startswith(".") for p in target.parent.iterdir())


def test_subpackages_import_alone():
    # Each stage imports on its own, in a fresh interpreter (catches import cycles).
    import rs3l_coffea

    package_dir = os.path.dirname(rs3l_coffea.__file__)
    names = sorted(
        entry for entry in os.listdir(package_dir)
        if os.path.isfile(os.path.join(package_dir, entry, "__init__.py"))
    )
    assert names, "no subpackages found"
    for name in names:
        code = f"import importlib; importlib.import_module('rs3l_coffea.{name}')"
        subprocess.run([sys.executable, "-c", code], check=True)
    importlib.import_module("rs3l_coffea.cli")


def test_atomic_output_has_ordinary_permissions(tmp_path):
    # mkstemp's 0600 must not leak into outputs that colleagues read on shared disks.
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    with atomic_open(tmp_path / "atomic.txt") as handle:
        handle.write("x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == reference.stat().st_mode & 0o777
