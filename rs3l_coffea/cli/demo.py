"""``rs3l demo``: the feature pipeline on the real coffea sample files, with a summary table.

Until a default model ships this shows the data side of RS3L: jets and their constituents
from a Delphes and a PFNano file, jet observables, truth labels, and the feature parquet.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rs3l_coffea.cli._common import user_errors

DEMO_SAMPLES = (("delphes.root", "delphes"), ("pfnano.root", "pfnano"))


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the ``rs3l`` app."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-output"), "--out", help="Output directory."),
        max_rows: int = typer.Option(12, help="Jets shown per sample in the table."),
    ) -> None:
        """Run the feature pipeline over real Delphes and PFNano samples and summarise the jets."""
        from rich.console import Console
        from rich.table import Table

        from rs3l_coffea.features import JetLabel
        from rs3l_coffea.features.pipeline import features_from_file, write_features_parquet
        from rs3l_coffea.testing import sample_path

        console = Console()
        with user_errors():
            for name, source in DEMO_SAMPLES:
                result = features_from_file(sample_path(name), source=source)
                target = out / f"features_{Path(name).stem}.parquet"
                write_features_parquet(target, result)
                table = Table(title=f"{name} ({source}): {len(result['label'])} jets -> {target}")
                for column in ("event", "jet", "pt", "eta", "mass", "msd", "N2", "n const", "label"):
                    table.add_column(column, justify="right")
                order = range(min(max_rows, len(result["label"])))
                for i in order:
                    table.add_row(
                        str(result["event"][i]),
                        str(result["jet"][i]),
                        f"{result['pt'][i]:.1f}",
                        f"{result['eta'][i]:+.2f}",
                        f"{result['mass'][i]:.1f}",
                        f"{result['msd'][i]:.1f}",
                        f"{result['n2'][i]:.3f}",
                        str(result["n_constituents"][i]),
                        JetLabel(int(result["label"][i])).name,
                    )
                console.print(table)
