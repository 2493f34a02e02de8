"""TaggingProcessor / VariantProcessor through coffea: iterative, futures and dask executors agree
on histograms and columns; columns equal the backbone on build_features; apply_to_fileset route;
variants; empty files; files without candidates; bad files (library and ``rs3l process``)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import awkward as ak
import dask
import numpy as np
import pytest
import torch

from rs3l_coffea.coffea_processing.runner import run_fileset
from rs3l_coffea.errors import ConfigError, InputFileError, MissingConstituentsError
from rs3l_coffea.features import JetSelection, build_features
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.io import load_jets
from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig
from rs3l_coffea.processors import TaggingProcessor, VariantProcessor

SAMPLES = {"delphes": "delphes.root", "pfnano": "pfnano.root"}
CHUNKSIZE = 13  # Delphes (25 events): two chunks, the last one shorter; PFNano (10): one


@pytest.fixture(scope="module")
def small_model(save_small_model):
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, conv_layers=2, k=8, output_hidden=(16,)),
        heads=(HeadConfig("score"),),
    )
    return save_small_model(config, seed=3)


@pytest.fixture(scope="module")
def fileset(coffea_sample):
    return {name: [str(coffea_sample(sample))] for name, sample in SAMPLES.items()}


@pytest.fixture(scope="module")
def client():
    """One LocalCluster for the module: 2 worker processes, 1 thread each."""
    from distributed import Client

    from rs3l_coffea.coffea_processing.runner import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as dask_client:
        yield dask_client


def tagging(model_path, skim_dir=None):
    # batch_invariant: a jet's record is bit-identical whatever the executor, chunking and
    # partitioning (the documented guarantee that the exact comparisons below rely on)
    return TaggingProcessor(RS3LTagger.load(model_path, batch_invariant=True), skim_dir=skim_dir)


@pytest.fixture(scope="module")
def iterative_run(small_model, fileset, tmp_path_factory):
    skims = tmp_path_factory.mktemp("skims-iterative")
    output = run_fileset(fileset, tagging(small_model[0], skims), chunksize=CHUNKSIZE)
    return output, skims


def read_skims(directory: Path) -> dict[str, list]:
    return {
        str(path.relative_to(directory)): ak.to_list(ak.from_parquet(path))
        for path in sorted(directory.rglob("*.parquet"))
    }


def assert_same_histograms(left, right):
    assert set(left) == set(right)
    for name in left:
        datasets = sorted(left[name].axes["dataset"])
        assert datasets == sorted(right[name].axes["dataset"]), name
        for dataset in datasets:
            a, b = left[name][{"dataset": dataset}], right[name][{"dataset": dataset}]
            np.testing.assert_array_equal(a.values(flow=True), b.values(flow=True), err_msg=name)


@pytest.mark.slow  # a futures process pool and a dask run of both files: ~30-60 s on 2 cores
def test_executors_give_identical_histograms_and_columns(
    iterative_run, small_model, fileset, client, tmp_path
):
    from coffea.processor import DaskExecutor

    reference, reference_skims = iterative_run
    assert reference["cutflow"]["delphes"]["events"] == 25
    assert reference["cutflow"]["pfnano"]["events"] == 10
    assert reference["hists"]["embedding"][{"dataset": "pfnano"}].sum() == 8 * 24
    runs = {
        "futures": dict(executor="futures", workers=2),
        "dask": dict(executor=DaskExecutor(client=client, status=False)),
    }
    for name, options in runs.items():
        skims = tmp_path / name
        output = run_fileset(fileset, tagging(small_model[0], skims), chunksize=CHUNKSIZE, **options)
        assert output["cutflow"] == reference["cutflow"], name
        assert_same_histograms(output["hists"], reference["hists"])
        assert read_skims(skims) == read_skims(reference_skims), name
        assert sorted(Path(p).name for p in output["skims"]) == sorted(
            Path(p).name for p in reference["skims"]
        )


def test_tagger_threads_default_to_one_in_workers(small_model, client):
    tagger = RS3LTagger.load(small_model[0])
    assert client.submit(tagger.effective_threads, pure=False).result() == 1


def test_model_uploaded_with_client_upload_file_is_found_on_workers(
    small_model, client, coffea_sample, tmp_path
):
    path, _ = small_model
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for suffix in (".safetensors", ".json"):
        (shipped / f"uploaded{suffix}").write_bytes(path.with_suffix(suffix).read_bytes())
    tagger = RS3LTagger.load(shipped / "uploaded", batch_invariant=True)
    for suffix in (".safetensors", ".json"):
        client.upload_file(str(shipped / f"uploaded{suffix}"), load=False)
        (shipped / f"uploaded{suffix}").unlink()  # now only the workers' copies exist
    jets, constituents = load_jets(coffea_sample("pfnano.root"))
    remote = client.submit(tagger, jets, constituents, pure=False).result()
    local = RS3LTagger.load(path, batch_invariant=True)(jets, constituents)
    assert ak.to_list(remote) == ak.to_list(local)  # exact: batch_invariant guarantee
    with pytest.raises(FileNotFoundError, match="upload_file"):
        tagger(jets, constituents)  # the client itself has no copy any more


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_skim_columns_equal_backbone_on_build_features(iterative_run, small_model, fileset, dataset):
    output, skims = iterative_run
    _, model = small_model
    files = sorted((skims / dataset).glob("*.parquet"), key=lambda p: int(p.stem.split("_")[-1].split("-")[0]))
    # named by file and entry range; chunks tile the file
    ranges = [tuple(int(v) for v in p.stem.split("_")[-1].split("-")) for p in files]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    table = ak.concatenate([ak.from_parquet(p) for p in files])
    assert table.entry.tolist() == list(range(len(table)))

    jets, constituents = load_jets(fileset[dataset][0])
    assert ak.num(table.jets, axis=1).tolist() == ak.num(jets, axis=1).tolist()
    x, mask = build_features(jets, constituents)
    with torch.no_grad():
        embedding, scores = model(torch.from_numpy(x), torch.from_numpy(mask))
    flat = ak.flatten(table.jets)
    np.testing.assert_allclose(ak.to_numpy(flat.pt), ak.to_numpy(ak.flatten(jets.pt)))
    has_particles = mask.any(axis=1)
    tagged = ~ak.to_numpy(ak.is_none(flat.rs3l))
    np.testing.assert_array_equal(tagged, has_particles)
    np.testing.assert_allclose(
        ak.to_numpy(flat.rs3l.embedding[tagged]), embedding.numpy()[has_particles], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        ak.to_numpy(flat.rs3l.score[tagged]), scores.numpy()[has_particles, 0], rtol=1e-5, atol=1e-6
    )
    # the histograms hold exactly the selected, tagged jets
    selected = ak.to_numpy(flat.selected) & tagged
    assert output["hists"]["mass"][{"dataset": dataset}].sum(flow=True) == selected.sum()
    expected = JetSelection.permissive().mask(jets, constituents)
    np.testing.assert_array_equal(ak.to_numpy(flat.selected), ak.to_numpy(ak.flatten(expected)))
    # the groomed N2 column (CMS n2b1 convention) travels with the skims
    from rs3l_coffea.features import jet_observables

    observables = jet_observables(jets, constituents)
    np.testing.assert_allclose(ak.to_numpy(flat.n2_groomed), observables["n2_groomed"], rtol=1e-12)
    np.testing.assert_array_equal(ak.to_numpy(flat.n2_groomed_valid), observables["n2_groomed_valid"])


def test_rerun_replaces_the_skim_folder(small_model, fileset, tmp_path):
    """A rerun with another chunk size leaves exactly its own skims (the old run's files used
    to stay beside them: 13 files on disk, 9 in the output); a foreign folder is refused."""
    skims = tmp_path / "skims"
    first = run_fileset(fileset, tagging(small_model[0], skims), chunksize=CHUNKSIZE)
    assert len(first["skims"]) == 3  # Delphes: 2 chunks, PFNano: 1
    second = run_fileset(fileset, tagging(small_model[0], skims), chunksize=5)
    on_disk = sorted(str(p) for p in skims.rglob("*.parquet"))
    assert on_disk == sorted(second["skims"]) and len(on_disk) == 5 + 2  # 25/5 + ceil(10/5)
    assert not [p for p in tmp_path.iterdir() if p.name != "skims"]  # no staging or old folder
    again = read_skims(skims)
    rows = sum(len(table) for table in again.values())
    assert rows == 25 + 10  # every event once

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"mine already holds files not written by rs3l process"):
        run_fileset(fileset, tagging(small_model[0], foreign), chunksize=CHUNKSIZE)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_directory_inputs(small_model, coffea_sample, tmp_path):
    """A folder in a fileset means its ROOT files; an empty one or a folder given directly to
    check_file says "is a directory" (it said "does not exist")."""
    import shutil

    from rs3l_coffea.coffea_processing.runner import check_file, read_fileset

    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("pfnano.root", "delphes.root"):
        shutil.copy(coffea_sample(name), folder / name)
    (folder / "README.txt").write_text("not data")
    spec = read_fileset({"d": [str(folder)]})
    assert list(spec["d"]["files"]) == [str(folder / "delphes.root"), str(folder / "pfnano.root")]
    with pytest.raises(InputFileError, match=r"is a directory, not a ROOT file"):
        check_file(str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match=r"empty is a directory without \.root files"):
        read_fileset({"d": [str(empty)]})

    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    out = tmp_path / "f.parquet"
    result = CliRunner().invoke(app, ["features", str(folder), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "from 2 file(s)" in result.output
    failed = CliRunner().invoke(app, ["features", str(empty), "--out", str(out), "-q"])
    assert failed.exit_code == 2 and "is a directory without .root files" in " ".join(failed.output.split())


def test_apply_to_fileset_route_matches_runner(iterative_run, small_model, fileset, client):
    from coffea.dataset_tools import apply_to_fileset, preprocess

    from rs3l_coffea.io import FlatDelphesSchema

    reference, _ = iterative_run
    processor_instance = tagging(small_model[0])
    # Delphes: the case where preprocess(save_form=True) would break the schema, and where
    # stored TRefArray jets are wrong under dask (the processor reclusters instead).
    for dataset, schema, tree in (("delphes", FlatDelphesSchema, "Delphes"),):
        spec = {dataset: {"files": {fileset[dataset][0]: tree}}}
        available, _ = preprocess(spec, step_size=CHUNKSIZE, save_form=False, scheduler=client)
        graphs = apply_to_fileset(processor_instance, available, schemaclass=schema)
        (computed,) = dask.compute(graphs, scheduler=client)
        result = computed[dataset]
        assert {k: int(v) for k, v in result["cutflow"][dataset].items()} == reference["cutflow"][dataset]
        for name, histogram in result["hists"].items():
            np.testing.assert_array_equal(
                histogram[{"dataset": dataset}].values(flow=True),
                reference["hists"][name][{"dataset": dataset}].values(flow=True),
                err_msg=f"{dataset} {name}",
            )


def write_empty_delphes(path: Path) -> None:
    """A Delphes-layout file whose tree has the candidate branches and zero entries."""
    import uproot

    def collection(fields):
        columns = {name: np.zeros(0, dtype=dtype) for name, dtype in fields.items()}
        return ak.unflatten(ak.zip(columns), np.zeros(0, dtype=np.int64))

    f32, i32 = np.float32, np.int32
    data = {
        "EFlowTrack": collection(
            {"PT": f32, "Eta": f32, "Phi": f32, "Mass": f32, "Charge": i32, "PID": i32}
        ),
        "EFlowPhoton": collection({"ET": f32, "Eta": f32, "Phi": f32}),
        "EFlowNeutralHadron": collection({"ET": f32, "Eta": f32, "Phi": f32}),
    }
    with uproot.recreate(path) as handle:
        tree = handle.mktree(
            "Delphes",
            {name: array.type.content for name, array in data.items()},
            counter_name=lambda counted: f"{counted}_size",
            field_name=lambda outer, inner: f"{outer}/{outer}.{inner}",
        )
        tree.extend(data)


def test_empty_file_gives_empty_outputs(small_model, tmp_path):
    empty = tmp_path / "empty.root"
    write_empty_delphes(empty)
    output = run_fileset({"empty": [str(empty)]}, tagging(small_model[0], tmp_path / "skims"))
    assert output["cutflow"]["empty"] == {
        "events": 0, "jets": 0, "tagged_jets": 0, "selected_tagged_jets": 0,
    }
    assert all(h.sum(flow=True) == 0 for h in output["hists"].values())
    assert output["bad_files"] == []
    for path in output["skims"]:
        assert len(ak.from_parquet(path)) == 0


def test_file_without_candidates_fails_naming_file(small_model, coffea_sample):
    sample = str(coffea_sample("nano_dy.root"))
    with pytest.raises(MissingConstituentsError, match="needs jet constituents") as error:
        run_fileset({"dy": [sample]}, tagging(small_model[0]))
    assert sample in str(error.value)


def test_variant_processor_variant_axis_from_file_and_metadata(small_model, tmp_path):
    from rs3l_coffea.generation import generate
    from rs3l_coffea.generation.config import GenerationConfig

    config = GenerationConfig(
        process="zh_bb", n_events=12, out_dir=tmp_path, variants=("nominal", "fsr_up"),
        seed=3, chunk_size=12,
    )
    nominal, fsr_up = (str(p) for p in generate(config))
    # batch_invariant: the dask route below chunks differently, and is compared exactly
    processor_instance = VariantProcessor(RS3LTagger.load(small_model[0], batch_invariant=True))
    output = run_fileset(
        {
            "zh": [nominal, fsr_up],
            "relabelled": {"files": [fsr_up], "metadata": {"variant": "custom"}},
        },
        processor_instance,
        chunksize=5,
    )
    mass = output["hists"]["mass"]
    assert set(mass.axes["variant"]) == {"nominal", "fsr_up", "custom"}
    selection = JetSelection.generated()
    for path, dataset, variant in (
        (nominal, "zh", "nominal"), (fsr_up, "zh", "fsr_up"), (fsr_up, "relabelled", "custom"),
    ):
        jets, constituents = load_jets(path)
        expected = int(ak.sum(selection.mask(jets, constituents)))
        assert mass[{"dataset": dataset, "variant": variant}].sum(flow=True) == expected
        assert output["hists"]["embedding"][{"dataset": dataset, "variant": variant}].sum(
            flow=True
        ) == expected * 8
    assert mass[{"dataset": "relabelled", "variant": "nominal"}].sum(flow=True) == 0

    # the dask-awkward route (apply_to_fileset): per-event VariantCode masks on dask arrays
    from coffea.dataset_tools import apply_to_fileset, preprocess

    from rs3l_coffea.io import FlatDelphesSchema

    spec = {"zh": {"files": {nominal: "Delphes", fsr_up: "Delphes"}}}
    available, _ = preprocess(spec, step_size=5, save_form=False, scheduler="sync")
    graphs = apply_to_fileset(processor_instance, available, schemaclass=FlatDelphesSchema)
    (lazy,) = dask.compute(graphs, scheduler="sync")
    for name, histogram in lazy["zh"]["hists"].items():
        for variant in ("nominal", "fsr_up"):
            np.testing.assert_array_equal(
                histogram[{"dataset": "zh", "variant": variant}].values(flow=True),
                output["hists"][name][{"dataset": "zh", "variant": variant}].values(flow=True),
                err_msg=f"{name} {variant}",
            )

    # ready for the evaluation stage's Wasserstein tables (variant axis, one continuous axis)
    from rs3l_coffea.evaluation.wasserstein import wasserstein_table

    zh = {"dataset": "zh", "variant": ["nominal", "fsr_up"]}
    table = wasserstein_table({"mass": mass[zh], "embedding": output["hists"]["embedding"][zh]})
    assert set(table) == {"fsr_up"}
    assert {"mass", *(f"embedding[dim={d}]" for d in range(8))} <= set(table["fsr_up"])


def test_cli_process_bad_file_with_and_without_skip(small_model, coffea_sample, client, tmp_path):
    from coffea.util import load
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    bad = str(coffea_sample("bad_delphes.root"))
    spec = tmp_path / "fileset.json"
    spec.write_text(json.dumps({"pfnano": [str(coffea_sample("pfnano.root"))], "broken": [bad]}))
    out = tmp_path / "out.coffea"
    command = [
        "process", str(spec), "--processor", "tagging", "--executor", "iterative",
        "--chunk-size", "5", "--model", str(small_model[0]), "--out", str(out), "--quiet",
    ]
    runner = CliRunner()
    failed = runner.invoke(app, command)
    assert failed.exit_code == 2
    assert "bad_delphes.root" in " ".join(failed.output.split())
    assert not out.exists()

    # the same through the dask executor on a running scheduler
    scheduler = ["--executor", "dask", "--scheduler", client.scheduler.address]
    passed = runner.invoke(app, [*command, *scheduler, "--skip-bad-files"])
    assert passed.exit_code == 0, passed.output
    result = load(str(out))
    assert [(b["dataset"], b["file"]) for b in result["bad_files"]] == [("broken", bad)]
    assert "ROOT" in result["bad_files"][0]["reason"] or "TTree" in result["bad_files"][0]["reason"]
    assert result["cutflow"]["pfnano"]["events"] == 10
    assert result["hists"]["score"][{"dataset": "pfnano"}].sum(flow=True) == 24


def test_unreadable_file_error_from_library(coffea_sample, small_model):
    bad = str(coffea_sample("bad_delphes.root"))
    with pytest.raises(InputFileError, match=r"bad_delphes\.root"):
        run_fileset({"broken": [bad]}, tagging(small_model[0]))
    output = run_fileset({"broken": [bad]}, tagging(small_model[0]), skip_bad_files=True)
    assert output["bad_files"][0]["file"] == bad
    assert "hists" not in output


def _cli(args):
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--source", "pfnan"], "unknown source 'pfnan'"),
        (["--jets", "NoSuchJets"], "NoSuchJets"),
        (["--processor", "variants"], "no variant label"),
    ],
    ids=["source-typo", "unknown-jets", "variants-without-variants"],
)
def test_cli_process_checks_options_on_the_first_file(
    option, expected, small_model, coffea_sample, tmp_path
):
    spec = tmp_path / "fileset.json"
    spec.write_text(json.dumps({"pfnano": [str(coffea_sample("pfnano.root"))]}))
    out = tmp_path / "out.coffea"
    result = _cli([
        "process", str(spec), "--model", str(small_model[0]), "--out", str(out), "--quiet",
        "--executor", "futures", *option,
    ])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    text = " ".join(result.output.split())
    assert expected in text
    # one message (rich may wrap it), no coffea wrapper, no traceback, no retries
    assert len(lines) <= 4, result.output
    assert "Failed processing" not in text and "Traceback" not in text and "attempt" not in text
    assert not out.exists()


class _CountingProcessor(TaggingProcessor):
    """Records every call in a file (works across pickling) and fails on the second chunk."""

    def __init__(self, *args, log: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def process(self, events):
        start = int(events.metadata["entrystart"])
        with open(self.log, "a") as handle:
            handle.write(f"{start}\n")
        if start > 0:
            raise InputFileError(f"deterministic failure at entry {start}")
        return super().process(events)


def test_deterministic_chunk_errors_are_not_retried(small_model, coffea_sample, tmp_path):
    log = tmp_path / "calls.txt"
    sample = str(coffea_sample("delphes.root"))  # 25 events: chunks 0-13 and 13-25
    counting = _CountingProcessor(RS3LTagger.load(small_model[0], threads=1), log=str(log))
    with pytest.raises(InputFileError, match=r"delphes\.root \(dataset 'd', entries 13-25\): InputFileError: deterministic"):
        run_fileset({"d": [sample]}, counting, chunksize=CHUNKSIZE, preflight_entries=0)
    assert sorted(log.read_text().split()) == ["0", "13"]  # coffea would have called 13 four times


def test_skip_bad_files_records_failed_chunks_and_keeps_the_good(small_model, coffea_sample, tmp_path):
    """A corrupt basket and a NaN jet pass the up-front file check and fail while processing:
    with --skip-bad-files they are listed under bad_chunks and the good file is written."""
    import bad_inputs as corpus
    from coffea.util import load

    corrupt = corpus.corrupt_basket(tmp_path, "ZLIB")
    nan_jet = corpus.pfnano_nan_jet(tmp_path)
    spec = tmp_path / "fileset.json"
    spec.write_text(json.dumps({
        "good": [str(coffea_sample("pfnano.root"))], "corrupt": [str(corrupt)], "nan": [str(nan_jet)],
    }))
    out = tmp_path / "out.coffea"
    command = ["process", str(spec), "--model", str(small_model[0]), "--out", str(out), "--quiet"]
    failed = _cli(command)
    assert failed.exit_code == 2 and not out.exists()
    assert "corrupt_ZLIB.root" in " ".join(failed.output.split())

    passed = _cli([*command, "--skip-bad-files"])
    assert passed.exit_code == 0, passed.output
    result = load(str(out))
    assert result["bad_files"] == []
    chunks = {Path(c["file"]).name: c for c in result["bad_chunks"]}
    assert set(chunks) == {"corrupt_ZLIB.root", "nan_jet.root"}
    assert "cannot read the events" in chunks["corrupt_ZLIB.root"]["reason"]
    assert "invalid kinematics" in chunks["nan_jet.root"]["reason"]
    assert chunks["nan_jet.root"]["entrystart"] == 0 and chunks["nan_jet.root"]["entrystop"] > 0
    assert result["cutflow"]["good"]["events"] == 10
    assert result["hists"]["score"][{"dataset": "good"}].sum(flow=True) == 24
    assert "nan_jet.root entries 0-" in " ".join(passed.output.split())


def test_cli_process_stdout_holds_only_results(small_model, coffea_sample, tmp_path):
    """-q prints no progress at all; without it the bars go to stderr; the FastJet banner
    (Delphes reclustering) is printed nowhere: stdout is the cutflow and the output path."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "fileset.json"
    spec.write_text(json.dumps({"delphes": [str(coffea_sample("delphes.root"))]}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {}
    for quiet in (True, False):
        out = tmp_path / f"quiet-{quiet}.coffea"
        command = [sys.executable, "-c", "from rs3l_coffea.cli import main; main()", "process",
                   str(spec), "--model", str(small_model[0]), "--out", str(out)]
        runs[quiet] = subprocess.run(
            command + (["-q"] if quiet else []), capture_output=True, text=True, env=env,
            timeout=300, check=False,
        )
        assert runs[quiet].returncode == 0, runs[quiet].stderr[-2000:]
        lines = runs[quiet].stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("delphes: events=25") and lines[1] == f"wrote {out}"
        assert "FastJet" not in runs[quiet].stdout + runs[quiet].stderr
    assert "Processing" not in runs[True].stderr and "Preprocessing" not in runs[True].stderr
    assert "Processing" in runs[False].stderr


def test_histogram_categories_in_a_fixed_order(small_model, coffea_sample):
    """Dataset categories sorted by name whatever the fileset or completion order."""
    output = run_fileset(
        {"zz_pfnano": [str(coffea_sample("pfnano.root"))], "aa_delphes": [str(coffea_sample("delphes.root"))]},
        tagging(small_model[0]), chunksize=CHUNKSIZE,
    )
    for name, histogram in output["hists"].items():
        assert list(histogram.axes["dataset"]) == ["aa_delphes", "zz_pfnano"], name
    assert output["hists"]["pt"][{"dataset": "zz_pfnano"}].sum(flow=True) == 24


def test_sorted_categories_keeps_every_count():
    import hist

    from rs3l_coffea.coffea_processing.analysis import sorted_categories

    h = hist.Hist(
        hist.axis.StrCategory([], growth=True, name="dataset"),
        hist.axis.StrCategory([], growth=True, name="variant"),
        hist.axis.Regular(4, 0, 1, name="value"),
    )
    h.fill(dataset="b", variant="vincia", value=[0.1, 0.2])
    h.fill(dataset="a", variant="custom", value=[0.5])
    h.fill(dataset="c", variant="nominal", value=[0.9, 2.0])
    ordered = sorted_categories(h)
    assert list(ordered.axes["dataset"]) == ["a", "b", "c"]
    assert list(ordered.axes["variant"]) == ["nominal", "vincia", "custom"]
    for dataset in "abc":
        for variant in ("nominal", "vincia", "custom"):
            np.testing.assert_array_equal(
                ordered[{"dataset": dataset, "variant": variant}].values(flow=True),
                h[{"dataset": dataset, "variant": variant}].values(flow=True),
            )


def test_groomed_n2_histogram_and_puppi_option_on_pfnano(coffea_sample, tmp_path):
    """n2_groomed is filled for the jets where CMS's FatJet_n2b1 is defined (it stores -1 where
    the groomed jet is too small), and --puppi changes the constituent-based observables only."""
    import uproot

    from rs3l_coffea.coffea_processing.runner import run_fileset
    from rs3l_coffea.processors import TaggingProcessor

    path = str(coffea_sample("pfnano.root"))
    fileset = {"pf": {"files": {path: "Events"}}}
    out, tables = {}, {}
    for puppi in (False, True):
        skims = tmp_path / f"skims-{puppi}"
        result = run_fileset(fileset, TaggingProcessor(source="pfnano", puppi=puppi, skim_dir=skims), executor="iterative")
        out[puppi] = result["hists"]
        tables[puppi] = ak.concatenate([ak.from_parquet(f) for f in result["skims"]])
    n2b1 = np.concatenate(uproot.open(path)["Events"]["FatJet_n2b1"].array(library="np"))
    assert out[False]["pt"].sum(flow=True) == len(n2b1)  # every FatJet histogrammed
    assert out[False]["n2_groomed"].sum(flow=True) == (n2b1 >= 0).sum()
    assert "groomed" in out[False]["n2_groomed"].axes[-1].label
    # PUPPI reweights constituents: stored jet pT unchanged, constituent-based msd moves (slightly:
    # pfnano's FatJet constituents mostly carry weight 1)
    np.testing.assert_allclose(ak.flatten(tables[True].jets.pt), ak.flatten(tables[False].jets.pt))
    msd_shift = np.abs(ak.to_numpy(ak.flatten(tables[True].jets.msd)) - ak.to_numpy(ak.flatten(tables[False].jets.msd)))
    assert msd_shift.max() > 1e-3


def test_cli_process_has_a_puppi_option():
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    result = CliRunner().invoke(app, ["process", "--help"], terminal_width=200)
    assert "--puppi" in result.output
