"""``rs3l ntuple``: re-simulated files → sharded training ntuples (see ``rs3l_coffea.training.build``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer
from rich.markup import escape

from rs3l_coffea.cli._common import (
    check_output_path,
    err_console,
    expand_input_directories,
    user_errors,
)


def ntuple(
    inputs: list[str] = typer.Option(..., "--in", "-i", help="Generated ROOT files or published RS3L .h5 files (globs or folders; repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for shard_*.root and ntuple.json."),
    selection: str = typer.Option("generated", "--selection", help="Nominal-jet selection preset: generated, paper, permissive."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Rows (pairs) per shard.", min=1),
    max_delta_r: float = typer.Option(0.4, "--max-delta-r", help="ΔR within which a re-simulated jet is the counterpart."),
    recluster_radius: float = typer.Option(0.8, "--recluster-radius", help="Anti-kT radius with which the jets are clustered."),
    signal: str = typer.Option("H_BB", "--signal", help="Truth labels (JetLabel names) of class 1, comma separated."),
    background: str | None = typer.Option(None, "--background", help="Truth labels of class 0 (default: all other known)."),
    unpaired: bool = typer.Option(False, "--unpaired", help="Any reader-supported file, no re-simulated partners (variant -1 rows)."),
    source: str = typer.Option("auto", "--source", help="With --unpaired: auto, delphes, pfnano, nanoaod."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Pair nominal jets with their re-simulated counterparts and write training ntuples."""
    with user_errors():
        check_output_path(out, option="--out", directory=True)
        from rs3l_coffea.training.build import build_ntuples

        inputs = expand_input_directories(inputs, (".root", ".h5", ".hdf5"))  # folders: their files
        # build_ntuples reports no progress of its own: at least show that it is working.
        status = contextlib.nullcontext() if quiet else err_console.status(f"building ntuples in {escape(str(out))}")
        with status:
            shards = build_ntuples(
                inputs, out, selection=selection, shard_size=shard_size, max_delta_r=max_delta_r,
                recluster_radius=recluster_radius, signal=[s for s in signal.split(",") if s],
                background=None if background is None else [b for b in background.split(",") if b],
                unpaired=unpaired, source=source,
            )
        typer.echo(f"{len(shards)} shard(s) in {out}")


def register(app: typer.Typer) -> None:
    """Add ``rs3l ntuple`` to the root CLI."""
    app.command("ntuple")(ntuple)
