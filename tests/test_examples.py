"""Every script in ``analysis_examples/`` runs with ``--quick`` in a subprocess and writes
sensible outputs (tiny random models, slices of the bundled sample)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "analysis_examples"
TIMEOUT_S = 300


def run_example(name: str, out: Path, *extra: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--quick", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def read_uhi_json(path: Path) -> dict:
    import hist.serialization
    import uhi.io.json

    raw = json.loads(path.read_text(), object_hook=uhi.io.json.object_hook)
    return {name: hist.serialization.from_uhi(h) for name, h in raw.items()}


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 4
    for script in scripts:
        assert f"python analysis_examples/{script}" in readme
        source = (EXAMPLES / script).read_text()
        assert "Scaling up" in source and "--quick" in source  # documented, as promised


def test_01_scores_in_own_processor(tmp_path: Path) -> None:
    stdout = run_example("01_rs3l_scores_in_coffea.py", tmp_path)
    hists = read_uhi_json(tmp_path / "hists.json")
    assert (tmp_path / "msd.png").read_bytes()[:4] == b"\x89PNG"
    for dataset in ("zh_bb", "zj"):
        # cutflow line: "<dataset>: events=40, jets_pt300=N, pass_score=M"
        line = next(x for x in stdout.splitlines() if x.startswith(f"{dataset}:"))
        counts = dict(item.split("=") for item in line.split(": ")[1].split(", "))
        assert int(counts["events"]) == 40
        msd = hists["msd"][{"dataset": dataset}]
        assert msd[{"rs3l": "pass"}].sum(flow=True) == int(counts["pass_score"])
        assert msd.sum(flow=True) == int(counts["jets_pt300"]) > 0
        assert hists["score"][{"dataset": dataset}].sum(flow=True) == int(counts["jets_pt300"])


def test_02_dask_apply_to_fileset(tmp_path: Path) -> None:
    run_example("02_dask_distributed.py", tmp_path, "--workers", "2")
    cutflow = json.loads((tmp_path / "cutflow.json").read_text())
    assert cutflow["zh_bb"]["events"] == 2 * 40  # nominal + fsr_up files
    hists = read_uhi_json(tmp_path / "hists.json")
    selected = cutflow["zh_bb"]["selected_tagged_jets"]
    assert selected > 0
    assert hists["embedding"].sum(flow=True) == 8 * selected  # one entry per direction component
    assert sorted(hists["pt"].axes["variant"]) == ["fsr_up", "nominal"]


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("pythia8mc") is None, reason="needs pythia8mc"
)
def test_03_generate_ntuple_pretrain_finetune(tmp_path: Path) -> None:
    from rs3l_coffea.nn import load_model

    stdout = run_example("03_train_from_ntuples.py", tmp_path)
    for step in ("rs3l generate", "rs3l ntuple", "rs3l train pretrain", "rs3l train finetune"):
        assert f"$ {step}" in stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["bundled_auc_hbb_vs_zj"] <= 1.0
    assert summary["n_signal"] > 0 and summary["n_background"] > 0
    _model, card = load_model(tmp_path / "finetune" / "model.safetensors")
    assert card.head_names == ("score",)
    assert load_model(tmp_path / "pretrain" / "model.safetensors")[1].training["task"] == "pretrain"


def test_04_systematic_variations(tmp_path: Path) -> None:
    """Shape templates in templates.root in combine's naming (nominal without suffix, fsrUp/Down,
    one-sided shower with Down = nominal), titled; W1 of the score recomputed by hand from them."""
    import uproot
    from coffea.util import load

    run_example("04_systematic_variations.py", tmp_path)
    tables = json.loads((tmp_path / "wasserstein.json").read_text())["zh_bb"]["absolute"]
    assert sorted(tables) == ["fsr_down", "fsr_up", "vincia"]
    assert "| fsr_up |" in (tmp_path / "wasserstein.md").read_text()
    assert (tmp_path / "variant_ratios_zh_bb.png").is_file()
    # categories in a fixed order: generator code order for variants
    saved = load(str(tmp_path / "hists.coffea"))
    assert list(saved["score"].axes["variant"]) == ["nominal", "fsr_up", "fsr_down", "vincia"]
    with uproot.open(tmp_path / "templates.root") as templates:
        expected = {f"{obs}/zh_bb{suffix}" for obs in ("score", "msd")
                    for suffix in ("", "_fsrUp", "_fsrDown", "_showerUp", "_showerDown")}
        assert {key.split(";")[0] for key in templates.keys(recursive=True) if "/" in key} == expected
        nominal = templates["score/zh_bb"]
        assert nominal.member("fTitle") == "zh_bb, nominal: RS3L score"
        assert nominal.member("fXaxis").member("fTitle") == "RS3L score"
        assert templates["score/zh_bb_showerUp"].member("fTitle") == "zh_bb, Vincia shower: RS3L score"
        counts_nominal = nominal.values()
        np.testing.assert_array_equal(templates["score/zh_bb_showerDown"].values(), counts_nominal)
        width = np.diff(nominal.axis().edges())[0]
        for variant, name in (("fsr_up", "fsrUp"), ("fsr_down", "fsrDown"), ("vincia", "showerUp")):
            counts = templates[f"score/zh_bb_{name}"].values()
            np.testing.assert_array_equal(
                counts, saved["score"][{"dataset": "zh_bb", "variant": variant, "head": 0}].values()
            )
            gap = np.cumsum(counts_nominal / counts_nominal.sum() - counts / counts.sum())
            by_hand = np.sum(np.abs(gap)) * width
            assert tables[variant]["score[head=score]"] == pytest.approx(by_hand, abs=1e-12)
        assert templates["msd/zh_bb"].values().sum() == counts_nominal.sum() > 0


def readme_python_blocks() -> list[str]:
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)


def test_readme_python_blocks_run(tmp_path: Path) -> None:
    """Every Python block of the README runs as written, from a folder that is not the
    checkout (the quick start must not rely on files in the working directory)."""
    blocks = readme_python_blocks()
    assert blocks, "the README has no Python block"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    for index, block in enumerate(blocks):
        script = tmp_path / f"readme_block_{index}.py"
        script.write_text(block)
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=TIMEOUT_S, env=env, check=False,
        )
        assert result.returncode == 0, f"README block {index} failed:\n{block}\n{result.stderr[-3000:]}"
        assert result.stdout.strip(), f"README block {index} printed nothing"


def test_coffea_sample_helper_names_valid_choices() -> None:
    from rs3l_coffea.errors import ConfigError
    from rs3l_coffea.samples import coffea_sample

    assert coffea_sample("pfnano.root").is_file()
    with pytest.raises(ConfigError, match=r"unknown coffea sample 'pfnano\.roo'; valid: .*pfnano\.root"):
        coffea_sample("pfnano.roo")


def test_03_full_run_shows_training_progress(tmp_path: Path, monkeypatch) -> None:
    """The full (non --quick) chain trains for a long time: its training commands must not be
    run with --quiet (it once printed nothing for 28 minutes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("example03", EXAMPLES / "03_train_from_ntuples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(module, "rs3l", lambda *args: calls.append(args))
    monkeypatch.setattr(module, "score_bundled_sample", lambda model: (0.5, 1, 1))
    for quick in (False, True):
        calls.clear()
        assert module.main(["--out", str(tmp_path / f"quick-{quick}"), *(["--quick"] if quick else [])]) == 0
        training = [c for c in calls if c[0] == "train"]
        assert [c[1] for c in training] == ["pretrain", "finetune"]
        for command in training:
            assert ("--quiet" in command or "-q" in command) is quick, command


def test_default_output_folders_are_git_ignored() -> None:
    """Running an example (or the demo) from the checkout must not leave untracked output."""
    import re
    import shutil

    root = EXAMPLES.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    folders = ["demo-output"]
    for script in sorted(EXAMPLES.glob("[0-9][0-9]_*.py")):
        match = re.search(r'"--out", type=Path, default=Path\("([^"]+)"\)', script.read_text())
        assert match, f"{script.name}: no default --out folder found"
        folders.append(match.group(1))
    for folder in folders:
        result = subprocess.run(["git", "check-ignore", "-q", f"{folder}/hists.json"], cwd=root, check=False)
        assert result.returncode == 0, f"{folder}/ is not ignored by .gitignore"
