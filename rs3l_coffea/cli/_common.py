"""Helpers shared by CLI commands: turning our errors into clean exit messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from rs3l_coffea.errors import RS3LError

err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print an :class:`RS3LError` (or a missing file) as one red line and exit with code 2."""
    try:
        yield
    except (RS3LError, FileNotFoundError) as error:
        err_console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=2) from error
