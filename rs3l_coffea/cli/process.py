"""``rs3l process``: run the RS3L tagging or variant processor over a fileset with coffea."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from rs3l_coffea.cli._common import check_output_path, user_errors


class ProcessorChoice(str, Enum):
    tagging = "tagging"
    variants = "variants"


class ExecutorChoice(str, Enum):
    iterative = "iterative"
    futures = "futures"
    dask = "dask"


def register(app: typer.Typer) -> None:
    """Add the ``process`` command."""

    @app.command("process")
    def process(
        fileset: Path = typer.Argument(..., help="coffea fileset JSON: {dataset: \\[files]} or {dataset: {files, metadata}}; a folder among the files means its .root files."),
        processor_name: ProcessorChoice = typer.Option(ProcessorChoice.tagging, "--processor", help="tagging: RS3L columns + histograms per dataset; variants: with a variant axis (rs3l generate output)."),
        executor: ExecutorChoice = typer.Option(ExecutorChoice.iterative, "--executor", help="coffea executor."),
        scheduler: str = typer.Option(None, "--scheduler", help="Address of a running dask scheduler (with --executor dask); default: start a LocalCluster."),
        workers: int = typer.Option(2, "--workers", min=1, help="Worker processes (futures; dask LocalCluster, 1 thread each)."),
        chunk_size: int = typer.Option(100_000, "--chunk-size", min=1, help="Events per chunk."),
        max_chunks: int = typer.Option(None, "--max-chunks", min=1, help="At most this many chunks per dataset (testing)."),
        model: Path = typer.Option(None, "--model", help="Model (NAME, NAME.safetensors or NAME.json); default: the shipped model."),
        out: Path = typer.Option(..., "--out", "-o", help="Output .coffea file (written atomically)."),
        source: str = typer.Option("auto", "--source", help="auto, delphes, pfnano or nanoaod."),
        jets: str = typer.Option(None, "--jets", help="Stored jet collection (default: FatJet for NanoAOD/PFNano, reclustering for Delphes)."),
        recluster_radius: float = typer.Option(None, "--recluster-radius", help="Recluster candidates with anti-kT of this radius."),
        puppi: bool = typer.Option(False, "--puppi", help="PFNano/NanoAOD: weight candidates by puppiWeight, drop weight 0."),
        selection: str = typer.Option(None, "--selection", help="Jets entering histograms: permissive, generated or paper (default: permissive for tagging, generated for variants)."),
        skim_dir: Path = typer.Option(None, "--skim-dir", help="Write per-chunk parquet skims of the jet table here."),
        skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable files / files without candidates, and chunks that fail (corrupt basket, invalid jet); list them in the output (bad_files, bad_chunks)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA if the worker has one), cpu, cuda, cuda:N."),
        threads: int = typer.Option(None, "--threads", min=1, help="torch threads per task (default: 1 in worker processes)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Tag the jets of FILESET with RS3L and save histograms (and optional skims) to OUT."""
        with user_errors():
            check_output_path(out, option="--out")
            if skim_dir is not None:
                check_output_path(skim_dir, option="--skim-dir", directory=True)
            from rs3l_coffea.coffea_processing.runner import run_fileset, save_output
            from rs3l_coffea.features import JetSelection
            from rs3l_coffea.inference.tagger import RS3LTagger
            from rs3l_coffea.processors import TaggingProcessor, VariantProcessor

            tagger = (
                RS3LTagger.default(device=device, threads=threads)
                if model is None
                else RS3LTagger.load(model, device=device, threads=threads)
            )
            tagger.check_model()  # a bad model must not be reported as "Failed processing file"
            processor_class = VariantProcessor if processor_name is ProcessorChoice.variants else TaggingProcessor
            processor_instance = processor_class(
                tagger,
                source=source,
                jets=jets,
                recluster_radius=recluster_radius,
                puppi=puppi,
                selection=None if selection is None else JetSelection.named(selection),
                skim_dir=skim_dir,
            )
            output = run_fileset(
                fileset,
                processor_instance,
                executor=executor.value,
                workers=workers,
                scheduler=scheduler,
                chunksize=chunk_size,
                maxchunks=max_chunks,
                skip_bad_files=skip_bad_files,
                status=not quiet,
            )
            path = save_output(output, out)
            for bad in output["bad_files"]:
                typer.echo(f"skipped {bad['file']} ({bad['dataset']}): {bad['reason']}", err=True)
            for bad in output["bad_chunks"]:
                typer.echo(
                    f"skipped {bad['file']} entries {bad['entrystart']}-{bad['entrystop']} "
                    f"({bad['dataset']}): {bad['reason']}",
                    err=True,
                )
            for dataset, counts in sorted(output.get("cutflow", {}).items()):
                summary = ", ".join(f"{name}={int(value)}" for name, value in counts.items())
                typer.echo(f"{dataset}: {summary}")
            typer.echo(f"wrote {path}")
