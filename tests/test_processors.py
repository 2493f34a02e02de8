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
from rs3l_coffea.processors import TaggingProcessor, VariantProcessor

from rs3l_coffea.errors import InputFileError, MissingConstituentsError
from rs3l_coffea.features import JetSelection, build_features
from rs3l_coffea.inference.runner import run_fileset
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.io import load_jets
from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

SAMPLES = {"delphes": "delphes.root", "pfnano": "pfnano.root"}
CHUNKSIZE = 13  # Delphes (25 events): two chunks, the last one shorter; PFNano (10): one


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    torch.manual_seed(3)
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, conv_layers=2, k=8, output_hidden=(16,)),
        heads=(HeadConfig("score"),),
    )
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("model") / "small"
    save_model(path, model)
    return path, model


@pytest.fixture(scope="module")
def fileset(coffea_sample):
    return {name: [str(coffea_sample(sample))] for name, sample in SAMPLES.items()}


@pytest.fixture(scope="module")
def client():
    """One LocalCluster for the module: 2 worker processes, 1 thread each."""
    from distributed import Client

    from rs3l_coffea.inference.runner import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as dask_client:
        yield dask_client


def tagging(model_path, skim_dir=None):
    # threads=1 everywhere: the main process then computes bit-identically to the workers
    return TaggingProcessor(RS3LTagger.load(model_path, threads=1), skim_dir=skim_dir)


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
    tagger = RS3LTagger.load(shipped / "uploaded", threads=1)
    for suffix in (".safetensors", ".json"):
        client.upload_file(str(shipped / f"uploaded{suffix}"), load=False)
        (shipped / f"uploaded{suffix}").unlink()  # now only the workers' copies exist
    jets, constituents = load_jets(coffea_sample("pfnano.root"))
    remote = client.submit(tagger, jets, constituents, pure=False).result()
    assert ak.to_list(remote) == ak.to_list(RS3LTagger.load(path, threads=1)(jets, constituents))
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


def test_rerun_overwrites_the_same_skim_files(iterative_run, small_model, fileset):
    _, skims = iterative_run
    before = sorted(p.name for p in skims.rglob("*.parquet"))
    again = run_fileset({"pfnano": fileset["pfnano"]}, tagging(small_model[0], skims), chunksize=CHUNKSIZE)
    assert sorted(p.name for p in skims.rglob("*.parquet")) == before
    assert set(again["skims"]) <= {str(p) for p in skims.rglob("*.parquet")}
    assert not list(skims.rglob(".*tmp*"))  # no temporaries left behind


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
    processor_instance = VariantProcessor(RS3LTagger.load(small_model[0], threads=1))
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
        "--chunksize", "5", "--model", str(small_model[0]), "--out", str(out), "--quiet",
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
