"""Helpers shared by CLI commands: clean exit messages, output paths checked before the work.

Every message that can hold user text (file, dataset or option values) is printed with that
text escaped, never parsed as rich markup: a file named ``[bold]x.root`` must be named as it is,
and one named ``a[/x]b.root`` must not turn the error into a ``MarkupError`` traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from rs3l_coffea.errors import ConfigError, RS3LError

err_console = Console(stderr=True)


def print_error(message: object) -> None:
    """One red ``error:`` line on stderr; ``message`` is shown verbatim (markup escaped)."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True)


def print_warning(message: object) -> None:
    """One yellow ``warning:`` line on stderr; ``message`` is shown verbatim."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print an :class:`RS3LError` (or a missing file) as one red line and exit with code 2."""
    try:
        yield
    except (RS3LError, FileNotFoundError) as error:
        print_error(error)
        raise typer.Exit(code=2) from error


def check_output_path(
    path: str | os.PathLike[str], *, option: str = "--out", directory: bool = False
) -> Path:
    """Prove, before any work starts, that ``path`` can be written; return it as a ``Path``.

    ``directory=False``: ``path`` is a file (an existing file is replaced; an existing
    directory is refused). ``directory=True``: ``path`` is a directory (created later by the
    command; an existing file is refused). In both cases the nearest existing ancestor must be
    a directory in which a file can really be created (a probe file is made and removed, so
    read-only mounts, permissions and ACLs are all covered). Nothing is created otherwise.

    Raises :class:`ConfigError` naming the option and the path.
    """
    target = Path(path)
    shown = f"{option} {str(target)!r}"
    if target.is_dir() and not directory:
        raise ConfigError(f"{shown} is an existing directory; give a file name")
    if target.exists() and not target.is_dir() and directory:
        raise ConfigError(f"{shown} is an existing file; give a directory")
    folder = (target if directory else target.parent).absolute()
    ancestor = folder
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{shown}: {str(ancestor)!r} is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=ancestor, prefix=".rs3l-write-test-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"{shown}: directory {str(ancestor)!r} is not writable ({error.strerror or error})"
        ) from error
    return target
