"""``rs3l export``: write a saved model as TorchScript or ONNX for deployment."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from rs3l_coffea.cli._common import check_output_path, user_errors


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    """Add the ``export`` command."""

    @app.command("export")
    def export(
        model: Path = typer.Argument(..., help="Model: NAME, NAME.safetensors or NAME.json (or a published .pt with --published)."),
        format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", "-f", help="Output format."),
        out: Path = typer.Option(..., "--out", "-o", help="Output file (.onnx / .pt)."),
        published: bool = typer.Option(False, "--published", help="MODEL is a checkpoint of the published RS3L code."),
    ) -> None:
        """Export MODEL to TorchScript or ONNX (dynamic batch and particle axes)."""
        with user_errors():
            check_output_path(out, option="--out")
            from rs3l_coffea.nn import (
                export_onnx,
                export_torchscript,
                load_model,
                load_published_rs3l,
            )

            if published:
                if not model.is_file():
                    raise FileNotFoundError(f"checkpoint {model} does not exist")
                loaded = load_published_rs3l(model)
            else:
                loaded, _ = load_model(model)
            writer = export_onnx if format is ExportFormat.onnx else export_torchscript
            path = writer(loaded, out)
            typer.echo(f"wrote {path} ({format.value})")
