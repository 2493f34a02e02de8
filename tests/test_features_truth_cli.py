"""Selection, truth labels on hand-built generator records, the CLI, the demo and the benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from typer.testing import CliRunner

from rs3l_coffea.cli import app
from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features import FEATURE_INDEX, JetLabel, JetSelection, build_features, truth_labels
from rs3l_coffea.features.pipeline import read_features_parquet
from rs3l_coffea.io import load_jets

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
REPO = Path(__file__).resolve().parents[1]


def _gen(*particles):
    """Generator record from (pdg_id, status, mother, pt, eta, phi) tuples."""
    keys = ("pdg_id", "status", "mother", "pt", "eta", "phi")
    return [dict(zip(keys, p, strict=True)) for p in particles]


def _jets(*axes):
    return [{"pt": 500.0, "eta": eta, "phi": phi, "mass": 50.0} for eta, phi in axes]


PROTONS = ((2212, 4, -1, 0.0, 1e5, 0.0), (2212, 4, -1, 0.0, -1e5, 0.0))


def test_truth_labels_on_hand_built_decays():
    events_gen, events_jets, expected = [], [], []
    # ZH, H -> b b-bar, Z -> nu nu: the jet holding both b is H_BB, one holding one b is B
    events_gen.append(_gen(*PROTONS,
                           (25, 22, 0, 500.0, 0.0, 0.0), (5, 23, 2, 250.0, 0.1, 0.1), (-5, 23, 2, 250.0, -0.1, -0.2),
                           (23, 22, 0, 500.0, 0.0, np.pi), (12, 23, 5, 250.0, 0.0, 3.0), (-12, 23, 5, 250.0, 0.1, -3.0)))
    events_jets.append(_jets((0.0, 0.0), (0.1, 0.8), (2.0, 2.0)))
    expected += [JetLabel.H_BB, JetLabel.B, JetLabel.UNKNOWN]
    # W -> u d-bar and Z -> c c-bar, both fully inside their jets (phi wraps for the Z)
    events_gen.append(_gen(*PROTONS,
                           (24, 22, 0, 400.0, 0.0, 1.1), (2, 23, 2, 200.0, 0.3, 1.0), (-1, 23, 2, 200.0, -0.2, 1.3),
                           (23, 22, 0, 400.0, 0.0, 3.1), (4, 23, 5, 200.0, 0.2, 3.0), (-4, 23, 5, 200.0, -0.2, -3.0)))
    events_jets.append(_jets((0.0, 1.1), (0.0, -3.1)))
    expected += [JetLabel.W_QQ, JetLabel.Z_QQ]
    # hard gluon with a later b b-bar pair inside; hard light quark; hard c quark
    events_gen.append(_gen(*PROTONS,
                           (21, 23, 0, 400.0, 0.0, 0.0), (1, 23, 0, 300.0, 0.0, 3.0), (4, 23, 0, 200.0, 1.5, -2.0),
                           (5, 51, 2, 50.0, 0.2, 0.1), (-5, 52, 2, 40.0, -0.1, 0.2)))
    events_jets.append(_jets((0.0, 0.0), (0.1, 3.0), (1.5, -2.1)))
    expected += [JetLabel.G_BB, JetLabel.LIGHT, JetLabel.C]
    # gluons: c c-bar -> G_CC (a lone b does not make G_BB); u u-bar -> G_QQ;
    # u d-bar (no same-flavour pair) -> G_GG; nothing -> G_GG
    events_gen.append(_gen(*PROTONS,
                           (21, 23, 0, 400.0, 0.0, 0.0), (21, 23, 0, 390.0, 0.0, 2.0),
                           (21, 23, 0, 380.0, 2.0, -1.5), (21, 23, 0, 370.0, -2.0, -1.5),
                           (4, 71, 2, 30.0, 0.1, 0.0), (-4, 72, 2, 30.0, 0.0, 0.1), (5, 51, 2, 20.0, 0.0, -0.1),
                           (2, 51, 3, 30.0, 0.1, 2.0), (-2, 52, 3, 30.0, 0.0, 2.1),
                           (2, 51, 4, 30.0, 2.1, -1.5), (-1, 52, 4, 30.0, 2.0, -1.4)))
    events_jets.append(_jets((0.0, 0.0), (0.0, 2.0), (2.0, -1.5), (-2.0, -1.5)))
    expected += [JetLabel.G_CC, JetLabel.G_QQ, JetLabel.G_GG, JetLabel.G_GG]
    # an event without jets
    events_gen.append(_gen(*PROTONS))
    events_jets.append([])

    labels = truth_labels(ak.Array(events_jets), ak.Array(events_gen))
    assert [JetLabel(v) for v in labels] == expected
    assert truth_labels(ak.Array(events_jets), None).tolist() == [0] * len(expected)


def test_truth_labels_on_real_nanoaod_ttbar(coffea_sample):
    from rs3l_coffea.io import gen_particles_from_events, jets_from_events, open_events

    events, source, _ = open_events(coffea_sample("nano_tt_v15.root"))
    jets, _ = jets_from_events(events, source=source)
    labels = truth_labels(jets, gen_particles_from_events(events, source))
    # ttbar: top decays give b quarks and W -> qq inside AK8 jets
    assert np.sum(labels == JetLabel.B) > 0 and np.sum(labels == JetLabel.W_QQ) > 0
    assert set(labels.tolist()) <= {int(v) for v in JetLabel}


def test_selection_presets_and_mask():
    jets = ak.Array([[
        {"pt": 500.0, "eta": 0.05, "phi": 0.0, "mass": 20.0},
        {"pt": 500.0, "eta": 1.0, "phi": 0.0, "mass": 20.0},
        {"pt": 400.0, "eta": 0.0, "phi": 0.0, "mass": 20.0},
        {"pt": 500.0, "eta": 0.0, "phi": 0.0, "mass": 5.0},
        {"pt": 500.0, "eta": 2.0, "phi": 0.0, "mass": 20.0},
    ]])
    constituents = ak.Array([[[{"pt": 1.0}], [{"pt": 1.0}], [{"pt": 1.0}], [{"pt": 1.0}], []]])
    assert JetSelection.generated().mask(jets).tolist() == [[True, True, False, False, False]]
    assert JetSelection.paper().mask(jets).tolist() == [[True, False, False, False, False]]
    assert JetSelection.permissive().mask(jets, constituents).tolist() == [[True, True, True, True, False]]
    assert JetSelection.named("paper") == JetSelection(pt_min=450.0, mass_min=10.0, abs_eta_max=0.1)
    with pytest.raises(ConfigError, match="permissive"):
        JetSelection.named("nope")


def test_cli_features_writes_parquet(tmp_path, coffea_sample):
    path = coffea_sample("pfnano.root")
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(app, ["features", str(path), "--out", str(out), "--max-particles", "60"])
    assert result.exit_code == 0, result.output
    table = read_features_parquet(out)
    x, mask = build_features(*load_jets(path), max_particles=60)
    np.testing.assert_array_equal(table["features"], x)
    np.testing.assert_array_equal(table["mask"], mask)
    assert table["features"].shape == (len(x), 60, 15)
    assert np.all(np.minimum(table["n_constituents"], 60) == mask.sum(axis=1))
    assert set(table["label"].tolist()) <= {int(v) for v in JetLabel}
    assert np.all(table["hard_event_id"] == -1)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # atomic: no temporaries
    # --puppi: the PUPPI-weighted candidates of load_jets(puppi=True)
    weighted = tmp_path / "puppi.parquet"
    result = CliRunner().invoke(app, ["features", str(path), "--out", str(weighted), "--puppi"])
    assert result.exit_code == 0, result.output
    x_puppi, _ = build_features(*load_jets(path, puppi=True))
    np.testing.assert_array_equal(read_features_parquet(weighted)["features"], x_puppi)
    assert not np.array_equal(x_puppi, build_features(*load_jets(path))[0])


def test_cli_features_keeps_generator_event_ids(tmp_path):
    import uproot

    counts = np.array([3, 4], dtype=np.int64)
    rng = np.random.default_rng(5)

    def jagged(low, high):
        return ak.unflatten(rng.uniform(low, high, counts.sum()), counts)

    tracks = ak.zip({"PT": jagged(200, 300), "Eta": jagged(-0.2, 0.2), "Phi": jagged(0.0, 0.3),
                     "Mass": jagged(0.1, 0.2), "Charge": ak.values_astype(jagged(1, 1.5), np.int32),
                     "PID": ak.values_astype(jagged(211, 211.5), np.int32)})
    towers = ak.zip({"ET": jagged(10, 20), "Eta": jagged(-0.2, 0.2), "Phi": jagged(0.0, 0.3)})
    event = ak.zip({"HardEventID": ak.Array([[7], [9]]), "VariantCode": ak.Array([[1], [1]])})
    data = {"Event": event, "EFlowTrack": tracks, "EFlowPhoton": towers, "EFlowNeutralHadron": towers}
    path = tmp_path / "zh_fsr_up_00000.root"
    with uproot.recreate(path) as handle:
        handle.mktree("Delphes", {k: v.type.content for k, v in data.items()},
                      counter_name=lambda c: f"{c}_size", field_name=lambda o, i: f"{o}.{i}")
        handle["Delphes"].extend(data)
    out = tmp_path / "gen.parquet"
    result = CliRunner().invoke(app, ["features", str(path), "--out", str(out), "--selection", "generated"])
    assert result.exit_code == 0, result.output
    table = read_features_parquet(out)
    # one jet > 450 GeV per event (all particles within 0.2 x 0.3), no D0/DZ branches -> 0
    assert table["hard_event_id"].tolist() == [7, 9] and table["variant_code"].tolist() == [1, 1]
    assert table["n_constituents"].tolist() == [9, 12]
    assert np.all(table["features"][..., FEATURE_INDEX["tanh_d0"]] == 0)


def test_cli_features_clean_error_on_file_without_candidates(tmp_path, coffea_sample):
    out = tmp_path / "f.parquet"
    result = CliRunner().invoke(app, ["features", str(coffea_sample("nano_dy.root")), "--out", str(out)])
    assert result.exit_code == 2
    assert "nano_dy.root" in result.output and "RS3L needs jet constituents" in result.output
    assert not out.exists()


def test_demo_runs_on_real_samples(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--max-rows", "3", "--processes", "zh_bb", "--variants", "seed"])
    assert result.exit_code == 0, result.output
    assert "delphes.root" in result.output and "pfnano.root" in result.output
    for name in ("features_delphes.parquet", "features_pfnano.parquet"):
        table = read_features_parquet(tmp_path / name)
        assert len(table["label"]) > 0 and np.all(np.isfinite(table["features"]))


def test_benchmark_script_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_features", REPO / "benchmarks" / "features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--jets", "200", "--loop-jets", "20", "--chunk", "100", "--samples", "pfnano"])
    assert len(rows) == 1 and rows[0]["vectorised jets/cpu-s"] > 0
    assert "| input |" in capsys.readouterr().out


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_features_shows_progress_for_one_file_unless_quiet(quiet, tmp_path, coffea_sample, monkeypatch):
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    import rs3l_coffea.cli.features as features_cli
    from rs3l_coffea.cli import app

    screen = io.StringIO()
    monkeypatch.setattr(features_cli, "err_console", Console(file=screen, force_terminal=True, width=120))
    args = ["features", str(coffea_sample("pfnano.root")), "--out", str(tmp_path / "f.parquet")]
    result = CliRunner().invoke(app, args + (["--quiet"] if quiet else []))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote ")  # stdout: the result only
    shown = "building features: pfnano.root" in screen.getvalue()
    assert shown is not quiet
