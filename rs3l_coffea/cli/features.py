"""``rs3l features``: ROOT files -> parquet with RS3L features, masks, observables and labels."""

from __future__ import annotations

from pathlib import Path

import typer

from rs3l_coffea.cli._common import (
    check_output_path,
    err_console,
    expand_input_directories,
    user_errors,
)


def register(app: typer.Typer) -> None:
    """Add the ``features`` command to the ``rs3l`` app."""

    @app.command("features")
    def features(
        files: list[Path] = typer.Argument(..., help="Input ROOT files (Delphes, PFNano, NanoAOD) or folders of them."),
        out: Path = typer.Option(..., "--out", "-o", help="Output parquet file."),
        source: str = typer.Option("auto", help="auto | delphes | pfnano | nanoaod"),
        jets: str | None = typer.Option(
            None, "--jets", help="Stored jet collection (e.g. FatJet, ParticleFlowJet08)."
        ),
        recluster_radius: float | None = typer.Option(
            None, "--recluster-radius", help="Recluster candidates with anti-kT of this radius."
        ),
        max_particles: int = typer.Option(100, help="Particle slots per jet."),
        selection: str = typer.Option(
            "permissive", help="Jet selection preset: permissive | generated | paper."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
        puppi: bool = typer.Option(
            False, "--puppi", help="PFNano/NanoAOD: weight candidates by puppiWeight, drop weight 0."
        ),
    ) -> None:
        """Build the 15 RS3L particle features for every selected jet and write parquet."""
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        from rs3l_coffea.features.pipeline import (
            concatenate_results,
            features_from_file,
            write_features_parquet,
        )
        from rs3l_coffea.features.selection import JetSelection

        with user_errors():
            check_output_path(out, option="--out")
            files = [Path(f) for f in expand_input_directories(files)]  # a folder: its ROOT files
            chosen = JetSelection.named(selection)
            results = []
            # Shown for one file too (a large file takes minutes): spinner, file, elapsed time.
            columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=err_console, disable=quiet, transient=True) as progress:
                task = progress.add_task("building features", total=len(files))
                for path in files:
                    progress.update(task, description=f"building features: {escape(path.name)}")
                    results.append(
                        features_from_file(
                            path,
                            source=source,
                            jets=jets,
                            recluster_radius=recluster_radius,
                            max_particles=max_particles,
                            selection=chosen,
                            puppi=puppi,
                        )
                    )
                    progress.advance(task)
            result = concatenate_results(results)
            write_features_parquet(out, result)
        typer.echo(f"wrote {len(result['label'])} jets from {len(files)} file(s) to {out}")
