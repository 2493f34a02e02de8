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
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup

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


def expand_input_directories(
    inputs: list[Any], suffixes: tuple[str, ...] = (".root",)
) -> list[str]:
    """Inputs with every directory replaced by its files ending in ``suffixes`` (sorted);
    other entries (files, globs, URLs) unchanged. A directory without such files is an
    :class:`~rs3l_coffea.errors.InputFileError` ("is a directory without .root files")."""
    from rs3l_coffea.coffea_processing.runner import files_in_directory

    out: list[str] = []
    for entry in inputs:
        if os.path.isdir(entry):
            out.extend(files_in_directory(entry, suffixes))
        else:
            out.append(str(entry))
    return out


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


_CLICK_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "bool": "BOOLEAN"}


def _click_metavar(parameter: Any) -> str:
    label = str(parameter.display_type(None)).strip("<>")
    if "|" in label:
        return f"[{label}]"
    label = label.removesuffix(" range").removeprefix("list[").removesuffix("]").lower()
    return _CLICK_TYPE_NAMES.get(label, label.upper())


class _ClickStyleArgument(TyperArgument):
    """An argument shown as click shows it in the usage line: ``FILES...``, not ``{files}...``."""

    def _usage_display_name(self) -> str:
        name = self.metavar or str(self.name).upper()
        if not self.required:
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name says it (click shows no type for arguments)


def _style_parameter(parameter: Any) -> None:
    if parameter.metavar is not None:
        return
    if parameter.param_type_name == "option":
        if not hasattr(parameter, "display_type"):  # older typer: click's own metavars already
            return
        flag = parameter.is_flag or parameter.count
        parameter.metavar = "" if flag else _click_metavar(parameter)
    elif isinstance(parameter, TyperArgument):
        parameter.metavar = str(parameter.name).upper()
        if type(parameter) is TyperArgument:
            parameter.__class__ = _ClickStyleArgument


def click_style_help(command: Any) -> None:
    """Give ``command`` (and its subcommands) help that reads like other click/typer tools.

    Typer 0.29 shows ``<bool>`` after every flag (``--help <bool>``), ``<list[Path]>`` type
    labels and ``{files}...`` in usage lines. Here flags get no value placeholder, options
    click's upper-case metavars (``PATH``, ``INTEGER``, ``[tagging|variants]``) and arguments
    their upper-case name (``FILES...``).
    """
    for parameter in command.params:
        _style_parameter(parameter)
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            _style_parameter(option)
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        click_style_help(sub)


class ClickStyleGroup(TyperGroup):
    """The root ``rs3l`` group: applies :func:`click_style_help` to every command it holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        click_style_help(self)
