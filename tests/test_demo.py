"""The bundled re-simulated sample (package data) and ``rs3l demo``.

The demo runs once per module with a small random model (the shipped default model is tested
by its own engineer; ``rs3l demo`` without ``--model`` uses it) over two variants of the bundle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from typer.testing import CliRunner

from rs3l_coffea.samples import (
    BUNDLED_EVENTS_PER_FILE,
    BUNDLED_PROCESSES,
    BUNDLED_VARIANTS,
    bundled_file,
    bundled_fileset,
    bundled_sample_dir,
)

README = bundled_sample_dir() / "README.md"
NOMINAL_CODE, FSR_UP_CODE = -1, 1  # published RS3L vartype (docs/simulation.md)


# ------------------------------------------------------------------------------------------
# the bundled sample
# ------------------------------------------------------------------------------------------
def test_bundle_is_small_complete_and_has_provenance() -> None:
    directory = bundled_sample_dir()
    total = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    assert total < 5 * 1024 * 1024, f"bundled sample is {total / 2**20:.2f} MiB"
    readme = README.read_text()
    for process in BUNDLED_PROCESSES:
        for variant in BUNDLED_VARIANTS:
            path = bundled_file(process, variant)
            sidecar = json.loads(path.with_suffix(".json").read_text())
            config = sidecar["provenance"]["config"]
            # The README's regeneration command states exactly these settings.
            assert config["process"] == process and config["eta_max"] == 1.5
            assert config["chunk_size"] == BUNDLED_EVENTS_PER_FILE
            assert tuple(config["variants"]) == BUNDLED_VARIANTS
            assert f"--process {process} --events {BUNDLED_EVENTS_PER_FILE}" in readme
            assert f"--seed {config['seed']} " in readme
            assert sidecar["n_events_written"] == BUNDLED_EVENTS_PER_FILE
            tree = uproot.open(path)["Delphes"]
            assert tree.num_entries == BUNDLED_EVENTS_PER_FILE


def test_variants_of_a_process_share_hard_events() -> None:
    for process in BUNDLED_PROCESSES:
        ids = {}
        for variant in BUNDLED_VARIANTS:
            events = uproot.open(bundled_file(process, variant))["Delphes"].arrays(
                ["Event/Event.HardEventID", "Event/Event.VariantCode"], library="np"
            )
            ids[variant] = np.concatenate(events["Event/Event.HardEventID"])
            codes = np.unique(np.concatenate(events["Event/Event.VariantCode"]))
            assert codes.size == 1
        for variant in BUNDLED_VARIANTS:
            np.testing.assert_array_equal(ids[variant], ids["nominal"])


def test_readme_command_regenerates_the_bundle(tmp_path: Path) -> None:
    """Re-run the README's zj command (nominal only: variants have independent seeds)."""
    pytest.importorskip("pythia8mc")
    from rs3l_coffea.generation import GenerationConfig, generate

    readme = README.read_text()
    seed = int(re.search(r"--process zj .*?--seed (\d+)", readme, re.S).group(1))
    (path,) = generate(
        GenerationConfig(
            process="zj", n_events=BUNDLED_EVENTS_PER_FILE, out_dir=tmp_path,
            variants=("nominal",), seed=seed, chunk_size=BUNDLED_EVENTS_PER_FILE, eta_max=1.5,
        )
    )
    fresh = uproot.open(path)["Delphes"].arrays(library="ak")
    shipped = uproot.open(bundled_file("zj", "nominal"))["Delphes"].arrays(library="ak")
    assert fresh.fields == shipped.fields
    for field in shipped.fields:
        assert ak.all(ak.ravel(fresh[field]) == ak.ravel(shipped[field])), field


def test_fileset_layouts_and_bad_names() -> None:
    from rs3l_coffea.errors import ConfigError

    per_process = bundled_fileset(variants=("nominal", "fsr_up"))
    assert sorted(per_process) == sorted(BUNDLED_PROCESSES)
    assert len(per_process["zh_bb"]["files"]) == 2
    assert set(per_process["zh_bb"]["files"].values()) == {"Delphes"}
    per_variant = bundled_fileset(processes=("zj",), dataset_per_variant=True)
    assert sorted(per_variant) == sorted(f"zj_{v}" for v in BUNDLED_VARIANTS)
    assert per_variant["zj_fsr_up"]["metadata"] == {"process": "zj", "variant": "fsr_up"}
    with pytest.raises(ConfigError, match="herwig"):
        bundled_fileset(variants=("herwig",))
    with pytest.raises(ConfigError, match="ttbar"):
        bundled_file("ttbar", "nominal")


def test_wheel_would_contain_the_bundle() -> None:
    """pyproject's package-data globs match every bundled file (the wheel build itself is slow)."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    repo = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["rs3l_coffea"]
    for path in bundled_sample_dir().iterdir():
        relative = path.relative_to(repo / "rs3l_coffea").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


# ------------------------------------------------------------------------------------------
# rs3l demo
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``rs3l demo`` with a small random model over nominal + fsr_up of both processes."""
    import torch

    from rs3l_coffea.cli import app
    from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

    torch.manual_seed(3)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, conv_layers=2, k=8, output_hidden=(16,)),
        heads=(HeadConfig("score"),),
    )
    model_path = tmp_path_factory.mktemp("model") / "small"
    save_model(model_path, build_model(config).eval())
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--model", str(model_path), "--variants", "fsr_up",
         "--max-rows", "4", "--threads", "1"],
    )
    torch.set_num_threads(previous)
    return result, out, model_path


def test_demo_exits_cleanly_and_prints_numeric_tables(demo_run) -> None:
    result, _, _ = demo_run
    assert result.exit_code == 0, result.output
    text = result.output
    assert "RS3L-tagged jets" in text and "W1(nominal, variant)" in text
    # Per-jet rows: dataset, event, jet, then pt/eta/mass/msd numbers, a truth label, a score.
    jet_rows = re.findall(
        r"│ (zh_bb|zj|delphes|pfnano)\s+│\s+\d+ │\s+\d+ │\s+[\d.]+ │\s+[+-][\d.]+ │\s+[\d.]+ │"
        r"\s+[\d.]+ │\s+([\d.]+|-) │\s+\d+ │ (\w+)\s+│\s+[\d.]+ │",
        text,
    )
    assert {row[0] for row in jet_rows} >= {"zh_bb", "zj"}
    w1_row = re.search(r"│ fsr_up\s+((│\s+[\d.]+\s+)+)│", text)
    assert w1_row is not None, text
    assert len(re.findall(r"[\d.]+", w1_row.group(1))) == 8 + 2  # 8 directions, score, N2


def test_demo_writes_readable_outputs(demo_run) -> None:
    result, out, _ = demo_run
    assert result.exit_code == 0, result.output
    for name in ("jets.parquet", "histograms.coffea", "histograms.json", "wasserstein.json",
                 "summary.json", "variant_ratios.png", "variant_ratios_zh_bb.png",
                 "variant_ratios_zj.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "variant_ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # atomic writes left nothing


def test_demo_histograms_json_matches_the_jet_table(demo_run) -> None:
    """Histogram entries (UHI JSON, no pickle) == selected tagged jets in jets.parquet."""
    from rs3l_coffea.demo import read_histograms_json

    _, out, _ = demo_run
    hists = read_histograms_json(out / "histograms.json")["variants"]
    jets = ak.from_parquet(out / "jets.parquet")
    bundled = jets[(jets.dataset == "zh_bb") | (jets.dataset == "zj")]
    for process in ("zh_bb", "zj"):
        for variant in ("nominal", "fsr_up"):
            mine = bundled[(bundled.dataset == process) & (bundled.variant == variant)]
            n_selected = int(ak.sum(mine.selected & ~np.isnan(mine["head:score"])))
            pt = hists["pt"][{"dataset": process, "variant": variant}]
            assert pt.sum(flow=True) == n_selected > 0
            embedding = hists["embedding"][{"dataset": process, "variant": variant}]
            assert embedding.sum(flow=True) == 8 * n_selected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cutflow"]["zh_bb"]["events"] == 2 * 40


def test_demo_wasserstein_equals_hand_computation(demo_run) -> None:
    """W1 of N2 from the JSON histograms via cumulative sums, against wasserstein.json."""
    from rs3l_coffea.demo import read_histograms_json

    _, out, _ = demo_run
    n2 = read_histograms_json(out / "histograms.json")["variants"]["n2"]
    table = json.loads((out / "wasserstein.json").read_text())["absolute"]
    for key in ("zh_bb", "zj"):
        nominal = n2[{"dataset": key, "variant": "nominal"}].values()
        varied = n2[{"dataset": key, "variant": "fsr_up"}].values()
        width = n2.axes["value"].widths[0]
        by_hand = np.sum(np.abs(np.cumsum(nominal / nominal.sum() - varied / varied.sum()))) * width
        assert table[key]["fsr_up"]["N2"] == pytest.approx(by_hand, rel=1e-9, abs=1e-12)


def test_demo_truth_labels_follow_the_generated_process(demo_run) -> None:
    """Selected leading jets: mostly H->bb in ZH, never H->bb in Z+jet (generator truth)."""
    _, out, _ = demo_run
    jets = ak.from_parquet(out / "jets.parquet")
    zh = jets[(jets.dataset == "zh_bb") & jets.selected]
    zj = jets[(jets.dataset == "zj") & jets.selected]
    assert ak.mean(zh.truth == "H_BB") > 0.6
    assert ak.sum(zj.truth == "H_BB") == 0
    assert ak.mean(zj.truth != "UNKNOWN") > 0.9


def test_demo_bad_model_is_a_clean_error(tmp_path: Path) -> None:
    from rs3l_coffea.cli import app

    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "o"), "--model", str(tmp_path / "missing")]
    )
    assert result.exit_code == 2, result.output  # user_errors(): one line, no traceback
    assert "missing" in result.output and "Traceback" not in result.output


def test_demo_unknown_variant_is_a_clean_error_before_any_output(tmp_path: Path, demo_run) -> None:
    from rs3l_coffea.cli import app

    _, _, model = demo_run
    target = tmp_path / "never-created"
    result = CliRunner().invoke(
        app, ["demo", "--out", str(target), "--model", str(model), "--variants", "herwig"]
    )
    assert result.exit_code == 2, result.output
    assert "herwig" in result.output and "fsr_up" in result.output  # names the valid choices
    assert not target.exists()
