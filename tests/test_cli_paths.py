"""Every command checks its output paths before any work (issue 15 item 7), prints user text
verbatim (item 10: no rich-markup parsing of file names), and treats directories as inputs
clearly (issue 19 item 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rs3l_coffea.cli import app
from rs3l_coffea.cli._common import check_output_path
from rs3l_coffea.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _command(name: str, out: str, tmp_path: Path, coffea_sample) -> list[str]:
    """A command line that is valid apart from (possibly) its output path."""
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"pfnano": [str(coffea_sample("pfnano.root"))]}))
    return {
        "process": ["process", str(fileset), "--out", out, "--quiet"],
        "process --skim-dir": ["process", str(fileset), "--out", str(tmp_path / "ok.coffea"),
                               "--skim-dir", out, "--quiet"],
        "features": ["features", str(coffea_sample("pfnano.root")), "--out", out],
        "export": ["export", str(tmp_path / "model"), "--out", out],
        "ntuple": ["ntuple", "--in", str(coffea_sample("delphes.root")), "--out", out],
        "train": ["train", "pretrain", "--data", str(tmp_path), "--out", out, "--quiet"],
        "report": ["report", "--config", str(REPO_ROOT / "studies" / "tiny.yaml"), "--out", out],
        "report --export-model": ["report", "--config", str(REPO_ROOT / "studies" / "tiny.yaml"),
                                  "--out", str(tmp_path / "study"), "--export-model", out],
    }[name]


FILE_OUTPUTS = ["process", "features", "export", "report --export-model"]
DIR_OUTPUTS = ["process --skim-dir", "ntuple", "train", "report"]


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory in which no file can be created, also for root (who ignores mode bits)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    if not os.path.isdir("/sys"):
        pytest.skip("running as root without /sys: no unwritable directory to test with")
    return Path("/sys")


def _bad_outputs(tmp_path: Path, directory: bool) -> dict[str, tuple[str, str]]:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cases = {
        "parent is a file": (str(afile / "sub" / "out"), "is a file, not a directory"),
        "not writable": (str(_unwritable_dir(tmp_path) / "rs3l-out"), "is not writable"),
    }
    if directory:
        cases["existing file"] = (str(afile), "is an existing file")
    else:
        existing = tmp_path / "existing-dir"
        existing.mkdir()
        cases["existing directory"] = (str(existing), "is an existing directory")
    return cases


@pytest.mark.parametrize("name", FILE_OUTPUTS + DIR_OUTPUTS)
def test_every_command_refuses_a_bad_output_path_before_working(name, tmp_path, coffea_sample):
    runner = CliRunner()
    for case, (out, expected) in _bad_outputs(tmp_path, name in DIR_OUTPUTS).items():
        result = runner.invoke(app, _command(name, out, tmp_path, coffea_sample))
        text = " ".join(result.output.split())
        assert result.exit_code == 2, (name, case, result.output)
        assert expected in text, (name, case, text)
        assert "Traceback" not in result.output, (name, case)
    # nothing was produced anywhere in tmp_path by the refused runs
    assert not list(tmp_path.rglob("*.coffea")) and not list(tmp_path.rglob("*.parquet"))


def test_check_output_path_accepts_new_and_replaceable_paths(tmp_path):
    existing = tmp_path / "old.coffea"
    existing.write_text("old")
    assert check_output_path(existing) == existing
    assert check_output_path(tmp_path / "new" / "deeper" / "x.coffea") == tmp_path / "new" / "deeper" / "x.coffea"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert check_output_path(tmp_path, directory=True) == tmp_path
    with pytest.raises(ConfigError, match="--skim-dir"):
        check_output_path(existing, option="--skim-dir", directory=True)


@pytest.mark.parametrize("name", ["a[/x]b.root", "[bold]x.root", "[red]y[/red].root"])
def test_user_text_in_errors_is_printed_verbatim(name, tmp_path):
    """File and dataset names are never parsed as rich markup (a closing tag used to raise a
    MarkupError traceback, an opening one silently vanished from the message)."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a ROOT file")
    runner = CliRunner()
    features = runner.invoke(app, ["features", str(path), "--out", str(tmp_path / "o.parquet")])
    assert features.exit_code == 2, features.output
    assert str(path) in features.output.replace("\n", "")
    assert "MarkupError" not in features.output and "Traceback" not in features.output

    fileset = tmp_path / "fileset.json"
    missing = tmp_path / "missing" / name
    fileset.write_text(json.dumps({f"{name}-dataset": [str(missing)]}))
    process = runner.invoke(app, ["process", str(fileset), "--out", str(tmp_path / "o.coffea")])
    assert process.exit_code == 2, process.output
    assert f"{missing} does not exist" in process.output.replace("\n", "")


def test_ntuple_takes_a_folder_and_names_an_empty_one(tmp_path):
    empty = tmp_path / "generated"
    empty.mkdir()
    (empty / "notes.txt").write_text("no data")
    result = CliRunner().invoke(app, ["ntuple", "--in", str(empty), "--out", str(tmp_path / "nt"), "-q"])
    assert result.exit_code == 2
    assert "generated is a directory without .root or .h5 or .hdf5 files" in " ".join(result.output.split())
