"""RS3L tagging of a fileset with dask.distributed.

What an analyst does with this
------------------------------
The same RS3L histograms as ``rs3l process`` (embedding directions, head scores, N2, masses,
pT per dataset and simulation variant), computed on a dask cluster, in either of coffea's two
styles:

* ``--mode apply`` (default): ``coffea.dataset_tools.preprocess`` + ``apply_to_fileset`` build a
  dask-awkward task graph of :class:`rs3l_coffea.processors.VariantProcessor`; ``dask.compute``
  runs it on the cluster. The RS3L tagger enters the graph as one ``map_partitions`` call that
  carries only the model path: each worker loads the model once.
* ``--mode runner``: the classic ``processor.Runner`` with a ``DaskExecutor`` on the same client
  (chunks of eager events; :func:`rs3l_coffea.coffea_processing.runner.run_fileset` does it for you).

Without ``--scheduler`` a ``distributed.LocalCluster`` with ``--workers`` single-threaded worker
processes is started (2 in ``--quick`` mode, which also uses a tiny random model and two
variants of one process of the bundled sample).

Run::

    python analysis_examples/02_dask_distributed.py --quick --out out02
    python analysis_examples/02_dask_distributed.py --workers 8 --out out02
    python analysis_examples/02_dask_distributed.py --scheduler tcp://scheduler:8786 \\
        --fileset my_fileset.json --out out02

Outputs: ``hists.json`` (UHI JSON), ``hists.coffea`` and ``cutflow.json``.

Scaling up
----------
* Your own files: ``--fileset FILE.json`` in coffea's layout ``{dataset: {"files": {path: tree},
  "metadata": {...}}}``; for non-generated samples use ``--processor tagging`` (no variant axis).
* A real cluster: start it with dask-jobqueue / dask-gateway and pass ``--scheduler``; the
  workers need rs3l-coffea installed and the model file readable (a shared file system, or
  ``client.upload_file``); see ``docs/clusters.md``.
* Delphes files must be reclustered under dask (coffea resolves Delphes ``TRefArray`` branches
  wrongly after the first dask partition); ``jets_from_events`` does so by default.
* ``preprocess(..., save_form=False)``: saving the form breaks coffea's DelphesSchema.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any


def tiny_random_model(path: Path) -> Path:
    """A tiny untrained DGCNN with a ``score`` head (for --quick: fast, physically meaningless)."""
    import torch

    from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

    torch.manual_seed(0)
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, conv_layers=1, k=8, output_hidden=(16,)),
        heads=(HeadConfig("score"),),
    )
    save_model(path, build_model(config).eval())
    return path


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int):
    """A client on ``scheduler``, or on a LocalCluster of single-threaded worker processes."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        yield client


def run_apply_to_fileset(fileset: dict[str, Any], processor_instance: Any, schema: Any) -> Any:
    """``preprocess`` + ``apply_to_fileset`` + ``dask.compute`` on the current client."""
    import warnings

    import dask
    from coffea.dataset_tools import apply_to_fileset, preprocess

    with warnings.catch_warnings():
        # coffea 2026.9 recommends its pydantic DataGroupSpec; plain dicts remain supported.
        warnings.simplefilter("ignore", DeprecationWarning)
        available, _updated = preprocess(
            fileset, step_size=100_000, align_clusters=False, save_form=False
        )
    graphs = apply_to_fileset(processor_instance, available, schemaclass=schema)
    (computed,) = dask.compute(graphs)
    return computed  # {dataset: processor output}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("example02-output"))
    parser.add_argument("--model", type=Path, help="RS3L model (default: the shipped model)")
    parser.add_argument("--fileset", type=Path, help="coffea fileset JSON (default: bundled sample)")
    parser.add_argument("--processor", choices=("variants", "tagging"), default="variants")
    parser.add_argument("--mode", choices=("apply", "runner"), default="apply")
    parser.add_argument("--scheduler", help="address of a running dask scheduler")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--quick", action="store_true", help="tiny random model, small input")
    args = parser.parse_args(argv)

    from coffea import processor
    from coffea.util import save
    from uhi.io.json import default as uhi_default

    from rs3l_coffea.atomic import atomic_open, atomic_path
    from rs3l_coffea.coffea_processing.runner import read_fileset, run_fileset
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.io import FlatDelphesSchema
    from rs3l_coffea.processors import TaggingProcessor, VariantProcessor
    from rs3l_coffea.samples import bundled_fileset

    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        tagger = RS3LTagger.load(args.model, threads=1)
    elif args.quick:
        tagger = RS3LTagger.load(tiny_random_model(args.out / "tiny-random-model"), threads=1)
    else:
        tagger = RS3LTagger.default(threads=1)
    if args.fileset is not None:
        fileset = read_fileset(args.fileset)
    elif args.quick:
        fileset = bundled_fileset(processes=("zh_bb",), variants=("nominal", "fsr_up"))
    else:
        fileset = bundled_fileset()
    processor_class = VariantProcessor if args.processor == "variants" else TaggingProcessor
    analysis = processor_class(tagger)

    with dask_client(args.scheduler, args.workers) as client:
        print(f"dask scheduler: {client.scheduler.address}, workers: {len(client.nthreads())}")
        if args.mode == "apply":
            # The schema must match the files; the bundled sample is Delphes-layout.
            schema = FlatDelphesSchema if args.fileset is None else _schema_of(fileset)
            per_dataset = run_apply_to_fileset(fileset, analysis, schema)
            output = processor.accumulate(per_dataset.values())
        else:
            output = run_fileset(fileset, analysis, executor=processor.DaskExecutor(client=client))

    hists = output["hists"]
    with atomic_path(args.out / "hists.coffea") as tmp:
        save(hists, str(tmp))
    with atomic_open(args.out / "hists.json", "w") as handle:
        json.dump(hists, handle, default=uhi_default)
    cutflow = {d: {k: int(v) for k, v in c.items()} for d, c in output["cutflow"].items()}
    with atomic_open(args.out / "cutflow.json", "w") as handle:
        json.dump(cutflow, handle, indent=1)
    for dataset, counts in sorted(cutflow.items()):
        print(f"{dataset}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"wrote {args.out / 'hists.json'}, {args.out / 'hists.coffea'}, {args.out / 'cutflow.json'}")
    return 0


def _schema_of(fileset: dict[str, Any]) -> Any:
    """NanoEvents schema of the fileset (all files must share it: one schema per call).

    Also fills in tree names the fileset left out (``preprocess`` needs them).
    """
    from coffea.nanoevents import NanoAODSchema, PFNanoAODSchema

    from rs3l_coffea.coffea_processing.runner import check_file
    from rs3l_coffea.io import FlatDelphesSchema

    schemas = {"delphes": FlatDelphesSchema, "pfnano": PFNanoAODSchema, "nanoaod": NanoAODSchema}
    sources = set()
    for entry in fileset.values():
        for path, tree in list(entry["files"].items()):
            source, tree_name, _entries = check_file(path, tree)  # InputFileError names bad files
            entry["files"][path] = tree_name
            sources.add(source)
    if len(sources) != 1:
        raise SystemExit(f"mixed file types {sorted(sources)}: run one fileset per type")
    return schemas[sources.pop()]


if __name__ == "__main__":
    sys.exit(main())
