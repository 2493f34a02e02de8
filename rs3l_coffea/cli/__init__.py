"""The ``rs3l`` command line.

Every module in this package that defines ``register(app)`` adds its subcommands; modules
are discovered, so a new stage adds a file here and touches nothing else. Heavy imports
(torch, coffea, pythia8mc) happen inside the commands, keeping ``rs3l --help`` fast.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

import typer

import rs3l_coffea
from rs3l_coffea.cli._common import ClickStyleGroup

app = typer.Typer(
    cls=ClickStyleGroup,
    name="rs3l",
    help="RS3L jet representations for coffea analyses: generate, build features, train, tag, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rs3l-coffea {rs3l_coffea.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """RS3L jet representations for coffea analyses."""


def _register_subcommands() -> None:
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_subcommands()


def main() -> None:
    """Console entry point ``rs3l``."""
    app()
