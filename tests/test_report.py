"""``rs3l report``: the tiny study end to end, what the report records, stage caching, model export."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.study.layout import RowKey, RunKey

pytest.importorskip("pythia8mc")

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "studies" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory):
    """Run the tiny study once (generation → report) for every test of this module."""
    import torch

    from rs3l_coffea.study import load_study_config, run_study

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-study")
    config = load_study_config(TINY)
    messages: list[str] = []
    result = run_study(TINY, out, log=messages.append, command="rs3l report --config studies/tiny.yaml --out X")
    return out, config, result, messages


def _yaml_block(markdown: str, heading: str) -> dict:
    section = markdown.split(f"## {heading}", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, f"no YAML block under {heading}"
    return yaml.safe_load(block.group(1))


@pytest.mark.slow
def test_tiny_study_report_has_every_table_and_figure(tiny_study) -> None:
    out, config, result, _ = tiny_study
    report = result.report.read_text()
    # Rejection table: N2 baseline plus every (model, labelled size) per task, ε_S 0.3/0.5/0.7, AUC.
    assert "| model | labelled jets | 1/ε_B @ ε_S=0.3 | 1/ε_B @ ε_S=0.5 | 1/ε_B @ ε_S=0.7 | AUC |" in report
    for task_title in ("H→bb vs QCD (in-domain)", "W→qq vs QCD (out-of-domain)"):
        assert re.search(rf"\| {re.escape(task_title)}: N2 baseline \(groomed, CMS n2b1\) \(score -?N2\) \| 0 \|", report)
        for model, size in itertools.product(("RS3L fixed", "RS3L floating", "supervised"), config.split.labelled_sizes):
            assert f"| {task_title}: {model} | {size} |" in report
    # The N2 baseline is the groomed N2 (CMS n2b1); the ungroomed one is kept beside it.
    n2 = np.load(out / "eval" / "n2-hbb.npz")
    assert {"nominal", "partner", "nominal_ungroomed", "partner_ungroomed"} <= set(n2.files)
    assert not np.allclose(n2["nominal"], n2["nominal_ungroomed"])
    # Wasserstein tables: per embedding dim, score and N2 for the fixed backbone and the supervised model.
    w_section = report.split("## Wasserstein-1 distance to nominal", 1)[1].split("##", 1)[0]
    header = w_section.strip().splitlines()[0]
    dims = config.model["backbone"]["output_dim"]
    for quantity in [f"z{i}" for i in range(dims)] + ["score", "N2", "mean z"]:
        assert f"| {quantity} |" in header or f"| {quantity} " in header
    for variant in config.generation.variants[1:]:
        assert re.search(rf"\| RS3L fixed \(N=\d+, seed 0\) \| {variant} \|", w_section)
        assert re.search(rf"\| supervised \(N=\d+, seed 0\) \| {variant} \|", w_section)
    # Representation tests incl. the issue-10 comparison of pretraining partners.
    for section in ("Linear classifier test and kNN", "Anomaly detection", "Physics expectations",
                    "Wall time per stage", "## Data", "## Configuration", "## Software"):
        assert section in report
    for kind in ("re-simulation only", "symmetry augmentations only", "re-simulation + symmetry augmentations"):
        assert f"| RS3L ({kind}) |" in report
    assert "| random init |" in report
    # Every figure: linked, present, a real PNG.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    expected = {"variant-ratios", "corner-rs3l", "tsne-rs3l", "convergence-pretrain"}
    expected |= {f"roc-{t}-{s}" for t in config.classifier.tasks for s in config.split.labelled_sizes}
    assert {Path(link).stem for link in links} == expected
    for link in links:
        png = (out / link).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.slow
def test_tiny_study_records_what_reproduces_it(tiny_study) -> None:
    out, config, result, _ = tiny_study
    report = result.report.read_text()
    recorded = _yaml_block(report, "Configuration")
    assert recorded["command"] == "rs3l report --config studies/tiny.yaml --out X"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", recorded["git_commit"])
    assert recorded["study"] == json.loads(json.dumps(config.to_dict()))  # the whole study config
    assert recorded["seeds"]["classifiers"] == config.classifier.seeds
    assert recorded["seeds"]["generation"] == config.generation.seed
    assert recorded["trainer_configs"]["pretrain (resim)"]["loss"]["temperature"] == config.pretrain.temperature
    software = report.split("## Software", 1)[1]
    for package in ("torch", "coffea", "pythia8mc", "awkward", "fastjet", "python"):
        assert f"| {package} |" in software
    assert "Scale: study 'tiny'" in report
    # The report's numbers are the evaluation of the saved scores: recompute one AUC with sklearn.
    from sklearn.metrics import roc_auc_score

    from rs3l_coffea.study import read_ntuple

    results = json.loads(result.results.read_text())
    test = read_ntuple(out / "data" / "test-hbb", ["label", "pair_rank"])
    truth = test["label"][test["pair_rank"] == 0]
    row = next(r for r in results["rejection"]["hbb"] if r["model"].endswith("supervised"))
    for entry in row["per_seed"]:
        score = np.load(out / "eval" / f"score-hbb-supervised-{row['labelled_size']}-s{entry['seed']}.npz")["score"]
        assert entry["auc"] == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    aucs = [e["auc"] for e in row["per_seed"]]
    assert row["auc"]["mean"] == pytest.approx(np.mean(aucs)) and row["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    assert "| " + f"{row['auc']['mean']:.4f} ± {row['auc']['std']:.4f}" + " |" in report
    # Pools disjoint by hard-event id: no pretraining event in any fine-tuning or test ntuple.
    pretrain_ids = set(read_ntuple(out / "data" / "pretrain", ["hard_event_id"])["hard_event_id"].tolist())
    for name in ("test-hbb", "test-wqq", f"hbb-{max(config.split.labelled_sizes)}"):
        ids = set(read_ntuple(out / "data" / name, ["hard_event_id"])["hard_event_id"].tolist())
        assert ids and not ids & pretrain_ids
    # Data sizes as numbers, counted independently from the written ntuples.
    pretrain = read_ntuple(out / "data" / "pretrain", ["pair_rank"])
    assert results["data"]["pretraining"]["jets"] == int((pretrain["pair_rank"] == 0).sum()) > 0
    for task in config.classifier.tasks:
        rows = read_ntuple(out / "data" / f"test-{task}", ["label", "pair_rank"])
        label = rows["label"][rows["pair_rank"] == 0]
        assert results["data"]["test"][task] == {"signal_jets": int((label == 1).sum()),
                                                 "background_jets": int((label == 0).sum()),
                                                 "pairs": len(rows["label"])}
    # Every rejection carries its Clopper-Pearson interval, every W1 its uncertainty and floor,
    # every expectation a verdict from those uncertainties.
    for entry in results["rejection"]["hbb"]:
        for eff, (low, high) in entry["rejection_clopper_pearson_68"].items():
            assert low <= entry["rejection"][eff]["mean"] or entry["rejection"][eff]["n_infinite"]
            assert low < high
    w1 = results["wasserstein_relative"]
    some = next(iter(next(iter(w1.values())).values()))["z0"]
    assert set(some) == {"w1", "uncertainty", "floor", "floor_spread", "excess_significance"}
    assert some["uncertainty"] > 0 and some["floor"] > 0
    # W1 compares pairs whose partner passes the selection too: never more than the nominal jets
    compared = results["wasserstein_jets"]
    assert set(compared["selected_pairs"]) == set(config.pretrain.variants) == {"fsr_up", "vincia"}
    assert 0 < compared["jets_with_every_partner_selected"] <= min(compared["selected_pairs"].values())
    assert max(compared["selected_pairs"].values()) <= compared["nominal_test_jets"]
    assert results["expectations"] and {c["verdict"] for c in results["expectations"]} <= {
        "holds", "does not hold", "inconclusive"}
    assert "step rule" in report and "Clopper-Pearson" in report
    # Labelled sets hold exactly the configured number of labelled training jets, half per class.
    assert results["data_sizes"]  # and the split summary counted them:
    split = json.loads((out / "stages" / "split.json").read_text())["result"]
    for size in config.split.labelled_sizes:
        assert split[f"hbb-{size}"]["train_nominal_jets"] == size


@pytest.mark.slow
def test_tiny_study_explains_rows_that_repeat_a_smaller_labelled_size(tiny_study) -> None:
    """A row identical (per seed) to the next smaller labelled size is named with the reason.

    In the tiny study the fixed backbone's linear head gets 1 (10 jets) vs 2 (20 jets) Adam
    steps: the scores move by ~1e-3 and the test ROC does not change, so the rows coincide."""
    out, config, result, _ = tiny_study
    results = json.loads(result.results.read_text())
    report = result.report.read_text()
    explained = {(r["task"], r["model"], tuple(r["labelled_sizes"])) for r in results["unchanged_between_sizes"]}
    sizes = sorted(config.split.labelled_sizes)
    for task, entries in results["rejection"].items():
        by_key = {(e["key"]["model"], e["key"]["labelled_size"]): e for e in entries}
        for model in config.classifier.models:
            for smaller, larger in itertools.pairwise(sizes):
                a, b = by_key[(model, smaller)]["per_seed"], by_key[(model, larger)]["per_seed"]
                repeated = [x["seed"] for x in a] == [y["seed"] for y in b] and all(
                    x["auc"] == y["auc"] and x["rejection"] == y["rejection"] for x, y in zip(a, b, strict=True))
                # Identical per-seed numbers <=> listed as unchanged, with the steps from the markers.
                assert repeated == ((task, model, (smaller, larger)) in explained), (task, model, smaller, larger)
    for record in results["unchanged_between_sizes"]:
        for size in record["labelled_sizes"]:
            for seed, steps in zip(record["seeds"], record["optimizer_steps"][str(size)], strict=True):
                run = RunKey(record["task"], record["model"], size, seed)
                marker = json.loads((out / "stages" / (run.stage.replace(":", "__") + ".json")).read_text())
                assert steps == marker["result"]["steps"]
        title = RowKey(record["task"], record["model"], 0).title
        smaller, larger = record["labelled_sizes"]
        assert f"| {title} | {larger} repeats {smaller} |" in report


@pytest.mark.slow
def test_rerun_skips_completed_stages_and_redoes_a_lost_one(tiny_study) -> None:
    from rs3l_coffea.study import run_study

    out, _config, first, messages = tiny_study
    assert first.stages_run and not first.stages_skipped
    # Each generated chunk was ntupled at once and its ROOT files dropped (keep_root: false).
    assert not list((out / "gen").rglob("*.root"))
    generated = {p: p.stat().st_mtime_ns for p in (out / "ntuple").rglob("shard_*.root")}
    assert {p.parent.parent.name for p in generated} == set(_config.generation.events)
    # Simulate a job killed during one training: its marker and outputs are gone.
    lost = "train:hbb:supervised:10:s1"
    marker = out / "stages" / "train__hbb__supervised__10__s1.json"
    marker.unlink()
    import shutil

    shutil.rmtree(out / "train" / "hbb" / "supervised-10-s1")
    again = run_study(TINY, out, log=messages.append, command="rs3l report --config studies/tiny.yaml --out X")
    assert again.stages_run == [lost]  # the retrained model is bit-identical, so its scores stay valid
    assert set(again.stages_skipped) == set(first.stages_run) - {lost}
    assert {p: p.stat().st_mtime_ns for p in (out / "ntuple").rglob("shard_*.root")} == generated
    assert marker.is_file() and again.report.is_file()


@pytest.mark.slow
def test_exported_model_card_and_re_evaluation(tiny_study, tmp_path: Path) -> None:
    from rs3l_coffea.nn import load_model
    from rs3l_coffea.study import evaluate_model, export_default_model

    out, config, result, _ = tiny_study
    weights, _card_path = export_default_model(out, tmp_path / "default", model="floating")
    _model, card = load_model(weights)
    assert card.head_names == ("score",) and len(card.feature_names) == 15
    assert card.training["study_config"] == json.loads(json.dumps(config.to_dict()))
    assert card.training["trainer_config"]["finetune"]["mode"] == "floating"
    # the validity range is the study's selection, so the tagger can flag jets outside it
    from rs3l_coffea.features import JetSelection

    cuts = JetSelection.named(config.split.selection)
    assert card.validity_range["pt_min"] == pytest.approx(cuts.pt_min)
    assert card.validity_range["abs_eta_max"] == pytest.approx(cuts.abs_eta_max)
    results = json.loads(result.results.read_text())
    row = next(r for r in results["rejection"]["hbb"]
               if r["model"].endswith("RS3L floating") and r["labelled_size"] == max(config.split.labelled_sizes))
    assert card.metrics["this_model"] == {k: row["per_seed"][0][k] for k in ("auc", "rejection")}
    assert "rs3l evaluate" in card.metrics["evaluation_command"]
    # Re-scoring the held-out test ntuple reproduces the card's metrics (CLI and function).
    again = evaluate_model(weights, out / "data" / "test-hbb")
    assert again["auc"] == pytest.approx(card.metrics["this_model"]["auc"], abs=1e-4)
    for eff, value in card.metrics["this_model"]["rejection"].items():
        assert again["rejection"][eff] == pytest.approx(value, rel=1e-3)
    from rs3l_coffea.cli import app

    cli = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "default"), "--test", str(out / "data" / "test-hbb")])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["auc"] == pytest.approx(again["auc"], abs=1e-9)
    # The CLI: a finished study re-run with --export-model saves the model that the stability
    # rule (choose_default_model) picks, and the card says why.
    # (--threads: another thread count resumes the finished study without retraining anything)
    cli = CliRunner().invoke(app, ["report", "--config", str(TINY), "--out", str(out), "--threads", "1",
                                   "--export-model", str(tmp_path / "cli-default")])
    assert cli.exit_code == 0, cli.output
    assert not [line for line in cli.output.splitlines() if line.startswith("[run ]") and line != "[run ] report"]
    assert json.loads((out / "results.json").read_text())["reproduce"]["torch_threads"] == 1
    _model, cli_card = load_model(tmp_path / "cli-default")
    selection = cli_card.metrics["selection"]
    assert {c["model"] for c in selection["candidates"]} == {"fixed", "floating", "supervised"}
    trainer = cli_card.training["trainer_config"]
    exported = "supervised" if trainer["task"] == "supervised" else trainer["finetune"]["mode"]
    assert exported == selection["chosen"]
    assert cli_card.training["labelled_size"] == max(config.split.labelled_sizes)
    uncertainty = cli_card.metrics["this_model_uncertainty"]
    assert 0 < uncertainty["auc_hanley_mcneil"] < 0.5
    for low, high in uncertainty["background_efficiency_clopper_pearson_68"].values():
        assert 0 <= low <= high <= 1


@pytest.mark.slow
def test_study_n2_computes_each_nominal_jet_once_with_the_per_row_values(tiny_study) -> None:
    """The n2 stage computes a nominal jet once (it sits on one row per partner) and both N2
    definitions in one pass; the stored values equal a direct per-row computation."""
    from rs3l_coffea.study import n2_from_features, read_ntuple
    from rs3l_coffea.study.stages import load_npz

    out, _config, _result, _ = tiny_study
    t = read_ntuple(out / "data" / "test-hbb")
    stored = load_npz(out / "eval" / "n2-hbb.npz")
    assert (t["pair_rank"] > 0).any()  # nominal jets do repeat over rows
    for name, features, mask, groomed in [
        ("nominal", t["features"], t["mask"], True), ("nominal_ungroomed", t["features"], t["mask"], False),
        ("partner", t["partner_features"], t["partner_mask"], True),
        ("partner_ungroomed", t["partner_features"], t["partner_mask"], False),
    ]:
        np.testing.assert_allclose(stored[name], n2_from_features(features, mask, groomed=groomed), rtol=1e-12, atol=0)


def test_n2_from_features_matches_a_hand_computation() -> None:
    """N2 = 2e3 / (1e2)^2 (beta = 1, pT fractions, ΔR in rapidity-phi) summed over pairs/triples by hand."""
    from rs3l_coffea.features.names import FEATURE_INDEX, N_FEATURES
    from rs3l_coffea.study import n2_from_features

    rng = np.random.default_rng(5)
    n_jets, slots = 6, 8
    features = np.zeros((n_jets, slots, N_FEATURES), np.float32)
    mask = np.zeros((n_jets, slots), bool)
    expected = []
    for jet in range(n_jets):
        n = 3 + jet % 4
        pt = rng.uniform(5, 200, n)
        eta, phi = rng.normal(0, 0.3, n), rng.normal(0, 0.3, n)
        features[jet, :n, FEATURE_INDEX["log_pt"]] = np.log(pt)
        features[jet, :n, FEATURE_INDEX["deta"]] = eta
        features[jet, :n, FEATURE_INDEX["dphi"]] = phi
        mask[jet, :n] = True
        eta, phi = features[jet, :n, FEATURE_INDEX["deta"]].astype(float), features[jet, :n, FEATURE_INDEX["dphi"]].astype(float)
        pt = np.exp(features[jet, :n, FEATURE_INDEX["log_pt"]].astype(float))
        z = pt / pt.sum()
        dr = np.hypot(eta[:, None] - eta[None, :], phi[:, None] - phi[None, :])
        e2 = sum(z[i] * z[j] * dr[i, j] for i, j in itertools.combinations(range(n), 2))
        e3 = sum(z[i] * z[j] * z[k] * min(dr[i, j] * dr[i, k], dr[i, j] * dr[j, k], dr[i, k] * dr[j, k])
                 for i, j, k in itertools.combinations(range(n), 3))
        expected.append(e3 / e2**2)
    assert n2_from_features(features, mask) == pytest.approx(expected, rel=1e-6)


def test_study_config_errors_name_the_key(tmp_path: Path) -> None:
    from rs3l_coffea.cli import app
    from rs3l_coffea.study import load_study_config, study_config_from_dict

    with pytest.raises(ConfigError, match=r"generation\.evnts"):
        study_config_from_dict({"generation": {"evnts": {"zh_bb": 10}}})
    with pytest.raises(ConfigError, match="must start with 'nominal'"):
        study_config_from_dict({"generation": {"variants": ["seed", "nominal"]}})
    with pytest.raises(ConfigError, match="herwig"):
        study_config_from_dict({"generation": {"variants": ["nominal", "herwig"]}})
    with pytest.raises(ConfigError, match=r"pretrain\.variants"):
        study_config_from_dict({"pretrain": {"variants": ["vincia_althad"]}})
    with pytest.raises(ConfigError, match=r"classifier\.epochs: Input should be a valid integer"):
        study_config_from_dict({"classifier": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"classifier\.tasks"):
        study_config_from_dict({"classifier": {"tasks": ["top"]}})
    with pytest.raises(ConfigError, match=r"classifier\.epochs"):
        study_config_from_dict({"classifier": {"epochs": True}})  # a YAML boolean is not a count
    with pytest.raises(ConfigError, match=r"pretrain\.lr"):
        study_config_from_dict({"pretrain": {"lr": True}})
    assert study_config_from_dict({"pretrain": {"lr": "1e-3"}}).pretrain.lr == pytest.approx(1e-3)  # PyYAML's string
    # refused when the study starts, not hours later when the trainer receives them
    for section, key, value in [("pretrain", "temperature", -1), ("pretrain", "temperature", "nan"),
                                ("pretrain", "lr", 0), ("pretrain", "batch_size", 0), ("classifier", "fixed_lr", -0.1),
                                ("classifier", "min_steps", -5), ("pretrain", "max_steps_per_epoch", 0)]:
        with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
            study_config_from_dict({section: {key: value}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("generation:\n  keep_roots: true\n")
    with pytest.raises(ConfigError, match=r"unknown study config key generation\.keep_roots in .*bad\.yaml"):
        load_study_config(bad)
    assert load_study_config(REPO / "studies" / "default.yaml").name == "default"
    at_scale = load_study_config(REPO / "studies" / "at_scale.yaml")
    sizes = at_scale.split.labelled_sizes  # issue 14: two orders of magnitude, three seeds
    assert max(sizes) >= 100 * min(sizes) and len(at_scale.classifier.seeds) >= 3 and not at_scale.generation.keep_root
    result = CliRunner().invoke(app, ["report", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "nope.yaml" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_diagnosis_reuses_the_study_split_and_reports_each_variant(tiny_study, tmp_path: Path) -> None:
    """`rs3l diagnose`: one re-pretraining per variant on the study's own split, evaluated like the report."""
    from rs3l_coffea.cli import app
    from rs3l_coffea.study.diagnosis import run_diagnosis

    out, config, _result, _ = tiny_study
    extra_pairs = out / "ntuple" / "zh_bb" / "chunk_00000"  # any ntuple of pairs serves as extra pairs here
    diag = tmp_path / "diag.yaml"
    diag.write_text(yaml.safe_dump({
        "name": "tiny-diagnosis", "study_config": str(TINY), "tasks": ["hbb", "wqq"], "seed": 0,
        "variants": {"warm": {"pretrain": {"temperature": 0.5, "extra_pairs": [str(extra_pairs)]}},
                     "vincia_only": {"pretrain": {"variants": ["vincia"]}}},
    }))
    messages: list[str] = []
    report = run_diagnosis(diag, out, tmp_path / "diag-out", log=messages.append)
    results = json.loads((tmp_path / "diag-out" / "diagnosis.json").read_text())
    assert results["labelled_size"] == max(config.split.labelled_sizes)
    assert results["tasks"] == ["hbb", "wqq"] and results["embedding_task"] == "hbb"
    assert set(results["variants"]) == {"warm", "vincia_only"}
    for name, summary in results["variants"].items():
        for task in ("hbb", "wqq"):
            fixed = summary["tasks"][task]["fixed"]
            assert 0 <= fixed["auc"] <= 1 and fixed["auc_uncertainty"] > 0
            # the same held-out test jets as the study's own rows of that task
            study_fixed = results["study_rows"][task]["fixed"]
            assert (fixed["n_signal"], fixed["n_background"]) == (study_fixed["n_signal"], study_fixed["n_background"])
        # W1 on the embedding task's test set only (the study measures it there too)
        assert "w1_relative" not in summary["tasks"]["wqq"]["fixed"]
        assert not results["study_rows"]["wqq"]["fixed"]["w1_relative"]
        for variant in ("fsr_up", "vincia"):
            w1 = summary["tasks"]["hbb"]["fixed"]["w1_relative"][variant]["score"]
            assert w1["w1"] >= 0 and w1["floor"] > 0 and w1["uncertainty"] >= 0
        # both tasks' heads sit on the variant's one pretraining
        assert sum(m.startswith("[run ] pretrain:resim") for m in messages) == 2
        # the variant's pretraining used its own setting, on the study's split (linked, not copied)
        card = json.loads((tmp_path / "diag-out" / name / "train" / "pretrain-resim" / "model.json").read_text())
        trainer = card["training"]["config"]
        assert (tmp_path / "diag-out" / name / "data").resolve() == (out / "data").resolve()
        pool = str(tmp_path / "diag-out" / name / "data" / "pretrain")
        if name == "warm":
            assert trainer["loss"]["temperature"] == pytest.approx(0.5)
            assert trainer["data"]["files"] == [pool, str(extra_pairs)]
        else:
            assert trainer["data"]["augmentations"] == ["vincia"]
            assert trainer["data"]["files"] == [pool]
    # the study's own rows and N2 come along for comparison; the markdown names every variant and task
    assert {"fixed", "floating", "supervised"} <= set(results["study_rows"]["hbb"])
    assert set(results["n2"]) == {"hbb", "wqq"}
    text = report.read_text()
    assert "| warm |" in text and "| vincia_only |" in text and "N2 baseline" in text
    assert "## H→bb vs QCD (in-domain)" in text and "## W→qq vs QCD (out-of-domain)" in text
    # a rerun skips every finished stage
    again: list[str] = []
    run_diagnosis(diag, out, tmp_path / "diag-out", log=again.append)
    assert not any(m.startswith("[run ]") for m in again), again
    # up-front errors: an override of generation, a study config that does not match the split
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "study_config": str(TINY), "variants": {"a": {"generation": {"seed": 3}}}}))
    with pytest.raises(ConfigError, match=r"variants.*only \['pretrain', 'model', 'classifier'\]"):
        run_diagnosis(bad, out, tmp_path / "bad-out")
    other = tmp_path / "other.yaml"
    raw = yaml.safe_load(TINY.read_text())
    raw["split"]["val_fraction"] = 0.2
    other.write_text(yaml.safe_dump(raw))
    mismatched = tmp_path / "mismatch.yaml"
    mismatched.write_text(yaml.safe_dump({"name": "x", "study_config": str(other), "variants": {"a": {}}}))
    with pytest.raises(ConfigError, match="does not match the split"):
        run_diagnosis(mismatched, out, tmp_path / "mismatch-out")
    lost = tmp_path / "lost.yaml"
    lost.write_text(yaml.safe_dump({"name": "x", "study_config": str(TINY),
                                    "variants": {"a": {"pretrain": {"extra_pairs": [str(tmp_path / "gone")]}}}}))
    with pytest.raises(InputFileError, match=r"pretrain\.extra_pairs: .*gone not found"):
        run_diagnosis(lost, out, tmp_path / "lost-out")
    assert not (tmp_path / "lost-out" / "a").exists()  # refused before the variant's first stage
    cli = CliRunner().invoke(app, ["diagnose", "--config", str(diag), "--study", str(out), "--out",
                                   str(tmp_path / "diag-out"), "--only", "nope"])
    assert cli.exit_code != 0 and "unknown variants ['nope']" in cli.output
    # another thread count resumes a finished variant without rerunning anything
    cli = CliRunner().invoke(app, ["diagnose", "--config", str(diag), "--study", str(out), "--out",
                                   str(tmp_path / "diag-out"), "--only", "warm", "--threads", "2"])
    assert cli.exit_code == 0, cli.output
    assert "[run ]" not in cli.output and "[skip] pretrain:resim" in cli.output
