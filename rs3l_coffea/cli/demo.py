"""``rs3l demo``: RS3L tagging in coffea on the bundled sample, with large-statistics plots.

Runs :func:`rs3l_coffea.demo.run_demo` with the shipped default model: the ready coffea
processors over the bundled ROOT sample and, when cached, coffea's ``delphes.root`` /
``pfnano.root``; the same tagging over the bundled compact inputs (>= 1,000 selected jets per
process and variant). Prints the coffea path's per-jet table and the nominal-vs-variant
Wasserstein table with each W1's statistical floor, and lists the files written (histograms as
``.coffea`` and UHI JSON, per-jet parquet, W1 JSON, PNG plots). No network access unless
``--fetch-samples``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from rs3l_coffea.cli._common import user_errors

EMBEDDING_DIMS_SHOWN = 3


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the ``rs3l`` app."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-output"), "--out", help="Output directory."),
        model: Path = typer.Option(
            None, "--model", help="Model (NAME, NAME.safetensors or NAME.json); default: the shipped model."
        ),
        variants: str = typer.Option(
            "nominal,seed,fsr_up,fsr_down,vincia", "--variants",
            help="Bundled variants to process (nominal is always included).",
        ),
        processes: str = typer.Option("zh_bb,zj", "--processes", help="Bundled processes: zh_bb, zj."),
        coffea_samples: bool = typer.Option(
            True, "--coffea-samples/--no-coffea-samples",
            help="Also tag coffea's delphes.root and pfnano.root test files when they are cached.",
        ),
        fetch_samples: bool = typer.Option(
            False, "--fetch-samples", help="Download coffea's test samples if they are not cached."
        ),
        max_rows: int = typer.Option(8, "--max-rows", min=0, help="Jets shown per dataset in the table."),
        jets_per_variant: int = typer.Option(
            None, "--jets-per-variant", min=2,
            help="Compact-input jets per process and variant (default: all, 1,000).",
        ),
        threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
    ) -> None:
        """RS3L in coffea on the bundled sample; W1 table with noise floors and HEP plots from 1,000 jets per variant."""
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # captured or piped output: don't squeeze the tables to 80
            console = Console(width=180)
        with user_errors():
            from rs3l_coffea.demo import run_demo

            with console.status("running the RS3L processors and tagging the compact inputs..."):
                result = run_demo(
                    out,
                    model=model,
                    processes=_split(processes),
                    variants=_split(variants),
                    include_coffea_samples=coffea_samples,
                    fetch_samples=fetch_samples,
                    threads=threads,
                    jets_per_variant=jets_per_variant,
                )
        console.print(f"model: {result.model_path}")
        if result.coffea_samples:
            console.print("coffea test files: " + ", ".join(sorted(result.coffea_samples)))
        else:
            console.print("coffea test files: not cached, skipped (use --fetch-samples)")
        console.print(_jet_table(result, max_rows))
        console.print(_wasserstein_table(result, "all"))
        for name, counts in sorted(result.cutflow.items()):
            console.print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        timings = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
        console.print(f"wrote {len(result.files)} files to {result.out_dir} in {result.seconds:.0f} s ({timings}):")
        for path in result.files:
            console.print(f"  {path}")


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _number(value: float, spec: str) -> str:
    return "-" if not math.isfinite(value) else format(value, spec)


def _jet_table(result: Any, max_rows: int) -> Any:
    """Selected jets tagged through coffea (nominal variant of the bundled ROOT sample, and
    coffea's test files), ``max_rows`` per dataset."""
    import numpy as np
    from rich.table import Table

    jets = result.jets
    head = result.head_names[0] if result.head_names else None
    dims = min(EMBEDDING_DIMS_SHOWN, result.embedding_dim)
    sources = ["bundled ROOT sample (nominal shower)"]
    if result.coffea_samples:
        sources.append("coffea's test files " + ", ".join(sorted(result.coffea_samples)))
    table = Table(title="RS3L-tagged jets from coffea's processor.Runner: " + " and ".join(sources))
    columns = ["dataset", "event", "jet", "pT [GeV]", "η", "m [GeV]", "m_SD [GeV]", "N2",
               "n const", "truth"]
    columns += ["RS3L score" if head == "score" else f"RS3L score ({head})"] if head else []
    columns += [f"ê{i}" for i in range(dims)]
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "truth") else "right")
    norms = np.linalg.norm(jets["embedding"], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        directions = jets["embedding"] / norms[:, None]
    shown = (
        jets["selected"].astype(bool)
        & (jets["input"] != "compact")
        & np.isin(jets["variant"], ["nominal", ""])
    )
    for dataset in dict.fromkeys(jets["dataset"][shown].tolist()):
        rows = np.flatnonzero(shown & (jets["dataset"] == dataset))[:max_rows]
        for i in rows:
            cells = [
                str(dataset), str(jets["entry"][i]), str(jets["jet"][i]),
                _number(jets["pt"][i], ".1f"), _number(jets["eta"][i], "+.2f"),
                _number(jets["mass"][i], ".1f"), _number(jets["msd"][i], ".1f"),
                _number(jets["n2"][i], ".3f"), str(jets["n_constituents"][i]), str(jets["truth"][i]),
            ]
            if head:
                cells.append(_number(jets[f"head:{head}"][i], ".3f"))
            cells += [_number(directions[i, d], "+.3f") for d in range(dims)]
            table.add_row(*cells)
    return table


def _wasserstein_table(result: Any, key: str) -> Any:
    """W1(nominal, variant) / σ(nominal) with its statistical floor, one row per quantity."""
    from rich.markup import escape
    from rich.table import Table

    rows = result.wasserstein.get(key, {})
    variants = list(rows)
    quantities = list(next(iter(rows.values()), {}))
    sizes = {
        v: min((cell["n_variant"] for cell in rows[v].values()), default=0) for v in variants
    }
    first: Mapping[str, Any] = next(iter(rows.values()), {})
    n_nominal = min((cell["n_nominal"] for cell in first.values()), default=0)
    table = Table(
        title=(
            "W1(nominal, variant) / σ(nominal) \\[statistical floor: 95% quantile of W1 over "
            "random splits of the pooled jets], selected jets of both processes, compact inputs"
        ),
        caption=(
            f"{n_nominal} nominal jets; ▲: beyond statistical noise (permutation p < 0.05), "
            "otherwise consistent with the nominal at this sample size. Absolute values, floors "
            "and p-values in wasserstein.json."
        ),
    )
    table.add_column("quantity")
    for variant in variants:
        table.add_column(f"{variant} ({sizes[variant]} jets)", justify="right")
    for quantity in quantities:
        cells = []
        for variant in variants:
            cell = rows[variant][quantity]
            text = escape(
                f"{_number(cell['w1_relative'], '.3f')} "
                f"[{_number(cell['floor_q95_relative'], '.3f')}]"
            )
            beyond = cell["p_value"] == cell["p_value"] and cell["p_value"] < 0.05
            cells.append(f"[bold]{text} ▲[/bold]" if beyond else f"{text}  ")
        table.add_row(_short(quantity), *cells)
    return table


def _short(quantity: str) -> str:
    """``embedding[dim=3]`` -> ``ê3``, ``score[head=score]`` -> ``RS3L score``."""
    if quantity.startswith("embedding[dim="):
        return "ê" + quantity.removeprefix("embedding[dim=").rstrip("]")
    if quantity.startswith("score[head="):
        head = quantity.removeprefix("score[head=").rstrip("]")
        return "RS3L score" if head == "score" else f"RS3L score ({head})"
    return {"msd": "m_SD"}.get(quantity, quantity)
