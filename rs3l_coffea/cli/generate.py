"""``rs3l generate``: re-simulated Pythia8 samples with the parametric detector, Delphes layout."""

from __future__ import annotations

from pathlib import Path

import typer

from rs3l_coffea.cli._common import user_errors


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command."""

    @app.command("generate")
    def generate_command(
        process: str = typer.Option(..., "--process", help="zh_bb | zj | wz_qq | wj_qq"),
        events: int = typer.Option(..., "--events", help="Number of hard events (per variant)."),
        variants: str = typer.Option(
            "nominal,seed,fsr_up,fsr_down",
            "--variants",
            help="Comma list of nominal, seed, fsr_up, fsr_down, vincia, vincia_althad, rehadronize.",
        ),
        seed: int = typer.Option(1, "--seed", help="Master seed; every chunk derives its own."),
        out: Path = typer.Option(..., "--out", help="Output directory."),
        workers: int = typer.Option(1, "--workers", help="Local worker processes."),
        chunk_size: int = typer.Option(
            5000, "--chunk-size", help="Events per file (Pythia init ~0.2 s per variant and chunk)."
        ),
        eta_max: float | None = typer.Option(
            None, "--eta-max", help="|eta| window on the boson/parton, applied before showering."
        ),
        isr: bool = typer.Option(True, "--isr/--no-isr", help="Initial-state radiation."),
        mpi: bool = typer.Option(False, "--mpi/--no-mpi", help="Multi-parton interactions."),
        scheduler: str | None = typer.Option(
            None, "--scheduler", help="dask.distributed scheduler address (instead of --workers)."
        ),
    ) -> None:
        """Generate one hard process once and shower it in every variant; write Delphes-layout files."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with user_errors():
            from rs3l_coffea.generation import GenerationConfig, generate

            config = GenerationConfig(
                process=process,
                n_events=events,
                out_dir=out,
                variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
                seed=seed,
                chunk_size=chunk_size,
                eta_max=eta_max,
                isr=isr,
                mpi=mpi,
            )
            if workers <= 0:
                from rs3l_coffea.errors import ConfigError

                raise ConfigError(f"--workers must be positive, got {workers}")
            config.check_output_dir()
            client = None
            if scheduler is not None:
                from distributed import Client

                client = Client(scheduler)
            with Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(),
            ) as bar:
                task = bar.add_task(f"{process} x {len(config.variants)} variants", total=events)
                paths = generate(
                    config, workers=workers, client=client,
                    progress=lambda done, total: bar.update(task, completed=done),
                )
            typer.echo(f"wrote {len(paths)} files to {out}")
