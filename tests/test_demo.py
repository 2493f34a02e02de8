"""The bundled re-simulated sample (package data), the compact demo inputs and ``rs3l demo``.

The demo runs once per module with a small random model (the shipped default model is tested
by its own engineer; ``rs3l demo`` without ``--model`` uses it) over two variants of the bundle
and 60 compact-input jets per process and variant (the full demo uses 1,000).
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
    total = sum(p.stat().st_size for p in directory.glob("*_00000.*"))
    assert total < 5 * 1024 * 1024, f"bundled ROOT sample is {total / 2**20:.2f} MiB"
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
# the compact demo inputs
# ------------------------------------------------------------------------------------------
def test_compact_inputs_hold_1000_selected_jets_per_variant_in_under_5_mb() -> None:
    from rs3l_coffea.demo_inputs import (
        COMPACT_EVENTS,
        COMPACT_JETS_PER_VARIANT,
        COMPACT_SEEDS,
        compact_inputs_path,
        load_compact_inputs,
    )
    from rs3l_coffea.features import JetSelection

    path = compact_inputs_path()
    assert path.stat().st_size < 5_000_000, f"{path} is {path.stat().st_size / 1e6:.2f} MB"
    assert COMPACT_JETS_PER_VARIANT >= 1000
    compact = load_compact_inputs()
    assert set(compact) == {(p, v) for p in BUNDLED_PROCESSES for v in BUNDLED_VARIANTS}
    for part in compact.values():
        assert len(part.jets) == COMPACT_JETS_PER_VARIANT
        assert ak.all(JetSelection.generated().mask(part.jets, part.constituents))
    with np.load(path, allow_pickle=False) as stored:
        provenance = json.loads(str(stored["provenance"]))
    readme = README.read_text()
    assert provenance["command"].split(" DIR")[0] in readme  # the README's one command
    for entry in provenance["generation"]:
        assert entry["events"] == COMPACT_EVENTS and entry["seed"] == COMPACT_SEEDS[entry["process"]]


def test_compact_inputs_reproduce_the_readers_jets_and_scores(tmp_path: Path, demo_run) -> None:
    """Compact the bundled ROOT files, read them back: constituents match the reader within
    float16 precision, and the tagger's scores on both agree."""
    from rs3l_coffea.demo_inputs import load_compact_inputs, write_compact_inputs
    from rs3l_coffea.features import JetSelection
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.io import load_jets

    _, _, model_path = demo_run
    files = {("zh_bb", "fsr_up"): bundled_file("zh_bb", "fsr_up")}
    path = write_compact_inputs(files, tmp_path / "c.npz", jets_per_variant=10)
    part = load_compact_inputs(path, ("zh_bb",), ("fsr_up",))[("zh_bb", "fsr_up")]
    jets, constituents = load_jets(files[("zh_bb", "fsr_up")])
    selected = ak.flatten(JetSelection.generated().mask(jets, constituents))
    reference_jets = ak.flatten(jets)[selected][:10]
    reference = ak.flatten(constituents, axis=1)[selected][:10]
    mine = ak.flatten(part.constituents, axis=1)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(part.jets.pt)), reference_jets.pt, rtol=1e-6)
    for field in ("pt", "energy"):
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(mine[field])), ak.to_numpy(ak.flatten(reference[field])),
            rtol=1e-3,
        )
    for field in ("eta", "phi"):  # stored relative to the jet axis: absolute precision
        difference = ak.to_numpy(ak.flatten(mine[field] - reference[field]))
        if field == "phi":
            difference = (difference + np.pi) % (2 * np.pi) - np.pi
        assert np.max(np.abs(difference)) < 2e-3
    for field in ("charge", "pdg_id"):
        assert ak.all(ak.flatten(mine[field]) == ak.flatten(reference[field]))
    tagger = RS3LTagger.load(model_path, threads=1)
    ours = tagger(part.jets, part.constituents)
    theirs = tagger(ak.unflatten(reference_jets, 1), ak.unflatten(reference, 1))
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(ours.score)), ak.to_numpy(ak.flatten(theirs.score)), atol=0.02
    )


def test_compact_inputs_bad_names_and_bad_file(tmp_path: Path) -> None:
    from rs3l_coffea.demo_inputs import load_compact_inputs
    from rs3l_coffea.errors import ConfigError, InputFileError

    with pytest.raises(ConfigError, match="herwig"):
        load_compact_inputs(variants=("herwig",))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(InputFileError, match=r"broken\.npz"):
        load_compact_inputs(broken)


# ------------------------------------------------------------------------------------------
# W1 with its statistical floor
# ------------------------------------------------------------------------------------------
def test_demo_w1_cell_leaves_out_undefined_jets() -> None:
    """The statistics are tested with wasserstein_permutation_test (test_evaluation_metrics);
    the demo's cell drops jets whose quantity is undefined (NaN N2) and is NaN below 2 jets."""
    from rs3l_coffea.demo import w1_cell
    from rs3l_coffea.evaluation import wasserstein_permutation_test

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=50), rng.normal(size=40) + 0.3
    with_nan = w1_cell(np.append(a, np.nan), np.insert(b, 3, np.inf), 50, np.random.default_rng(1))
    assert with_nan == pytest.approx(
        wasserstein_permutation_test(a, b, 50, np.random.default_rng(1)).as_dict(), rel=1e-12
    )
    empty = w1_cell(np.array([1.0, np.nan]), rng.normal(size=10), 50, rng)
    assert set(empty) == {"w1", "floor_median", "floor_q95", "p_value"}
    assert all(np.isnan(v) for v in empty.values())


def test_processor_hook_adds_outputs_and_refuses_to_replace_its_own(demo_run) -> None:
    from rs3l_coffea.coffea_processing.runner import run_fileset
    from rs3l_coffea.processors import TaggingProcessor

    _, _, model_path = demo_run
    fileset = {"zj": [str(bundled_file("zj", "nominal"))]}

    class Counting(TaggingProcessor):
        def extra_output(self, events, jets, table, *, dataset, variant):
            return {"n_events_seen": len(events)}

    output = run_fileset(fileset, Counting(str(model_path)), status=False)
    assert output["n_events_seen"] == BUNDLED_EVENTS_PER_FILE
    assert output["cutflow"]["zj"]["events"] == BUNDLED_EVENTS_PER_FILE

    class Clashing(TaggingProcessor):
        def extra_output(self, events, jets, table, *, dataset, variant):
            return {"hists": {}}

    with pytest.raises(Exception, match=r"extra_output must not replace.*hists"):  # coffea wraps it
        run_fileset(fileset, Clashing(str(model_path)), status=False)


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
         "--max-rows", "4", "--threads", "1", "--jets-per-variant", str(DEMO_TEST_JETS)],
    )
    torch.set_num_threads(previous)
    return result, out, model_path


DEMO_TEST_JETS = 60


def test_demo_exits_cleanly_and_prints_numeric_tables(demo_run) -> None:
    result, _, _ = demo_run
    assert result.exit_code == 0, result.output
    text = result.output
    assert "RS3L-tagged jets from coffea's processor.Runner: bundled ROOT sample" in text
    assert "W1(nominal, variant) / σ(nominal)" in text and "statistical floor" in text
    # Per-jet rows: dataset, event, jet, then pt/eta/mass/msd numbers, a truth label, a score.
    jet_rows = re.findall(
        r"│ (zh_bb|zj|delphes|pfnano)\s+│\s+\d+ │\s+\d+ │\s+[\d.]+ │\s+[+-][\d.]+ │\s+[\d.]+ │"
        r"\s+[\d.]+ │\s+([\d.]+|-) │\s+\d+ │ (\w+)\s+│\s+[\d.]+ │",
        text,
    )
    assert {row[0] for row in jet_rows} >= {"zh_bb", "zj"}
    # W1 rows: one per quantity, "W1/σ [floor]" for the one variant, flagged or not.
    w1_rows = re.findall(r"│ (ê\d|RS3L score|N2|m_SD)\s+│\s+[\d.]+ \[[\d.]+\]( ▲)?\s+│", text)
    assert [row[0] for row in w1_rows] == [f"ê{d}" for d in range(8)] + ["RS3L score", "N2", "m_SD"]
    assert f"fsr_up ({2 * DEMO_TEST_JETS} jets)" in text
    assert "score (score)" not in text and "┃ RS3L score ┃" in text  # one name for the score


def test_demo_axis_names_are_consistent_and_carry_units() -> None:
    from rs3l_coffea.demo import quantity_label

    assert quantity_label("score", "score") == "RS3L score"
    assert quantity_label("score", "hbb") == "RS3L score (hbb)"
    assert quantity_label("embedding", dim=7).startswith("RS3L embedding direction")
    assert quantity_label("msd").endswith("[GeV]") and quantity_label("pt").endswith("[GeV]")


def test_demo_writes_readable_outputs(demo_run) -> None:
    result, out, _ = demo_run
    assert result.exit_code == 0, result.output
    names = ["jets.parquet", "histograms.coffea", "histograms.json", "wasserstein.json",
             "summary.json", "score_distributions.png", "msd_pass_fail.png"]
    for suffix in ("", "_zh_bb", "_zj"):
        names += [f"variant_ratios{suffix}.png", f"embedding_directions{suffix}.png"]
    for name in names:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # atomic writes left nothing


def test_demo_histograms_json_matches_the_jet_table(demo_run) -> None:
    """Histogram entries (UHI JSON, no pickle) == selected tagged jets in jets.parquet, for the
    compact inputs and for the coffea path over the bundled ROOT files."""
    from rs3l_coffea.demo import read_histograms_json

    _, out, _ = demo_run
    hist_sets = read_histograms_json(out / "histograms.json")
    jets = ak.from_parquet(out / "jets.parquet")
    for set_name, kind in (("variants", "compact"), ("bundled_root", "bundled-root")):
        hists = hist_sets[set_name]
        mine_all = jets[jets.input == kind]
        for process in ("zh_bb", "zj"):
            for variant in ("nominal", "fsr_up"):
                mine = mine_all[(mine_all.dataset == process) & (mine_all.variant == variant)]
                n_selected = int(ak.sum(mine.selected & ~np.isnan(mine["head:score"])))
                pt = hists["pt"][{"dataset": process, "variant": variant}]
                assert pt.sum(flow=True) == n_selected > 0
                embedding = hists["embedding"][{"dataset": process, "variant": variant}]
                assert embedding.sum(flow=True) == 8 * n_selected
                if kind == "compact":
                    assert n_selected == DEMO_TEST_JETS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cutflow"]["zh_bb"]["events"] == 2 * 40


def test_demo_wasserstein_equals_hand_computation(demo_run) -> None:
    """Unbinned W1 of N2 by integrating |F_nominal - F_variant| over the jets in jets.parquet."""
    _, out, _ = demo_run
    jets = ak.from_parquet(out / "jets.parquet")
    table = json.loads((out / "wasserstein.json").read_text())
    for key in ("zh_bb", "zj"):
        mine = jets[(jets.input == "compact") & (jets.dataset == key) & jets.selected]
        a = np.sort(ak.to_numpy(mine[mine.variant == "nominal"].n2))
        b = np.sort(ak.to_numpy(mine[mine.variant == "fsr_up"].n2))
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        grid = np.concatenate([a, b])
        grid.sort()
        cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
        cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
        by_hand = float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))
        cell = table[key]["fsr_up"]["N2"]
        assert cell["w1"] == pytest.approx(by_hand, rel=1e-9, abs=1e-12)
        assert cell["n_nominal"] == a.size and cell["n_variant"] == b.size
        assert 0 < cell["p_value"] <= 1 and cell["floor_q95"] >= cell["floor_median"] > 0
        assert cell["w1_relative"] == pytest.approx(cell["w1"] / np.std(a), rel=1e-9)


def test_demo_truth_labels_follow_the_generated_process(demo_run) -> None:
    """Selected jets: mostly H->bb in ZH, never H->bb in Z+jet (generator truth), both in
    the coffea path and in the compact inputs."""
    _, out, _ = demo_run
    jets = ak.from_parquet(out / "jets.parquet")
    for kind in ("compact", "bundled-root"):
        zh = jets[(jets.input == kind) & (jets.dataset == "zh_bb") & jets.selected]
        zj = jets[(jets.input == kind) & (jets.dataset == "zj") & jets.selected]
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
