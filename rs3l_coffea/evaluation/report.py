"""The study report: paper-format markdown tables plus everything needed to reproduce them.

:func:`write_report` takes already computed results (rows built with :func:`rejection_row` and
:func:`wasserstein_rows`) and plot paths, and writes ``report.md`` atomically, recording the
configuration, data sizes, wall time and package versions, so a driver such as
``rs3l report --config study.yaml`` only has to run the stages and collect their outputs.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.evaluation._validation import EvaluationInputError
from rs3l_coffea.evaluation.roc import (
    DEFAULT_SIGNAL_EFFICIENCIES,
    MeanStd,
    RocCurve,
    auc_uncertainty,
    background_efficiency_at,
    background_rejection,
    clopper_pearson,
    rejection_summary,
    summarize,
)
from rs3l_coffea.evaluation.wasserstein import W1Estimate, WassersteinTable

PathLike = str | os.PathLike[str]

#: Distributions whose versions every report records (distribution name -> display name).
RECORDED_PACKAGES: dict[str, str] = {
    "rs3l-coffea": "rs3l-coffea",
    "coffea": "coffea",
    "awkward": "awkward",
    "uproot": "uproot",
    "torch": "torch",
    "pythia8mc": "pythia8mc",
    "numpy": "numpy",
    "scipy": "scipy",
    "scikit-learn": "sklearn",
    "hist": "hist",
    "fastjet": "fastjet",
}


@dataclass(frozen=True)
class RejectionRow:
    """One line of the rejection table: a model at one labelled-data size."""

    model: str
    labelled_size: int
    rejection: Mapping[float, MeanStd]
    """Signal efficiency -> rejection mean ± std over repeated trainings."""
    auc: MeanStd
    n_background: int | None = None
    """Background jets in the test set (the precision limit of the rejection)."""
    low_statistics: frozenset[float] = frozenset()
    """Signal efficiencies at which some run had fewer than 10 background jets passing."""
    rejection_interval: Mapping[float, tuple[float, float]] = field(default_factory=dict)
    """68% Clopper-Pearson interval on the rejection of the run-averaged ε_B (test-set statistics)."""
    auc_statistical: float | None = None
    """Hanley-McNeil standard error of the mean AUC from the test-set size."""

    def auc_uncertainty(self) -> float:
        """Standard uncertainty of the mean AUC: test-set (Hanley-McNeil) and seed spread."""
        seed_error = self.auc.std / math.sqrt(self.auc.n) if self.auc.n > 1 else 0.0
        return math.hypot(self.auc_statistical or 0.0, seed_error)


@dataclass(frozen=True)
class WassersteinRow:
    """One line of the Wasserstein table: a model's W1 to nominal for one variant."""

    model: str
    variant: str
    distances: Mapping[str, float | W1Estimate] = field(default_factory=dict)


def rejection_row(
    model: str,
    labelled_size: int,
    rocs: Sequence[RocCurve],
    signal_efficiencies: Iterable[float] = DEFAULT_SIGNAL_EFFICIENCIES,
) -> RejectionRow:
    """Summarise the ROC curves of repeated trainings of one model into a table row."""
    if not rocs:
        raise EvaluationInputError(f"model {model!r}: no ROC curves to summarise")
    efficiencies = tuple(signal_efficiencies)
    n_background = min(roc.n_background_effective for roc in rocs)
    intervals = {}
    for eff in efficiencies:
        mean_eps_b = sum(background_efficiency_at(roc, eff) for roc in rocs) / len(rocs)
        low, high = clopper_pearson(mean_eps_b * n_background, n_background)
        intervals[eff] = (_inverse(high), _inverse(low))
    auc_mean = sum(roc.auc for roc in rocs) / len(rocs)
    flagged = {
        point.signal_efficiency
        for roc in rocs
        for point in background_rejection(roc, efficiencies)
        if point.low_statistics
    }
    return RejectionRow(
        model=model,
        labelled_size=int(labelled_size),
        rejection=rejection_summary(rocs, efficiencies),
        auc=summarize(roc.auc for roc in rocs),
        n_background=min(roc.n_background for roc in rocs),
        low_statistics=frozenset(flagged),
        rejection_interval=intervals,
        auc_statistical=auc_uncertainty(auc_mean, min(r.n_signal for r in rocs), min(r.n_background for r in rocs)),
    )


def _inverse(efficiency: float) -> float:
    return math.inf if efficiency <= 0 else 1.0 / efficiency


def wasserstein_rows(
    model: str, table: WassersteinTable | Mapping[str, Mapping[str, float | W1Estimate]]
) -> list[WassersteinRow]:
    """Turn a ``{variant: {quantity: W1}}`` table into rows for :func:`write_report`."""
    return [WassersteinRow(model, variant, dict(row)) for variant, row in table.items()]


def package_versions() -> dict[str, str]:
    """Installed versions of the recorded packages plus Python and the platform."""
    versions = {}
    for distribution, display in RECORDED_PACKAGES.items():
        try:
            versions[display] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[display] = "not installed"
    versions["python"] = platform.python_version()
    versions["platform"] = platform.platform()
    return versions


def write_report(
    path: PathLike,
    rejection_rows: Sequence[RejectionRow] = (),
    wasserstein: Sequence[WassersteinRow] = (),
    plots: Mapping[str, PathLike] | None = None,
    config: Mapping[str, object] | None = None,
    data_sizes: Mapping[str, int] | None = None,
    wall_time_s: float | None = None,
    title: str = "RS3L study report",
    notes: Sequence[str] = (),
    extra_tables: Mapping[str, Sequence[Mapping[str, object]]] | None = None,
) -> Path:
    """Write the markdown report to ``path`` atomically and return the path.

    ``plots`` maps a caption to an image path (linked relative to the report's folder);
    ``config`` is dumped as YAML; ``data_sizes`` maps a sample name to its number of jets.
    ``extra_tables`` maps a section title to rows (dicts with the same keys, e.g. linear-probe,
    kNN or anomaly results); floats are printed with 4 significant digits.
    """
    target = Path(path)
    lines = [f"# {title}", ""]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    summary = f"Generated {stamp} UTC"
    if wall_time_s is not None:
        summary += f"; wall time {_format_duration(wall_time_s)}"
    lines += [summary, ""]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])

    if rejection_rows:
        lines += ["## Background rejection", "", *_rejection_table(rejection_rows), ""]
        lines.append(
            "Rejection is 1/ε_B at fixed signal efficiency ε_S, by the step rule (the tightest "
            "score cut keeping at least ε_S; never interpolated across tied scores); mean ± std "
            "over repeated trainings, then in brackets the 68% Clopper-Pearson interval of the "
            "run-averaged ε_B from the number of test background jets. ∞ means no background jet "
            "passed: the test set is too small to measure it. † marks values where some run had "
            "fewer than 10 background jets passing (Poisson-dominated; rejections of 10²-10³ "
            "need ≥ 50k background jets). AUC: mean ± std over trainings; its test-set "
            "(Hanley-McNeil) standard error is in results.json."
        )
        lines.append("")
    for section, table_rows in (extra_tables or {}).items():
        lines += [f"## {section}", "", *_generic_table(section, table_rows), ""]
    if wasserstein:
        lines += ["## Wasserstein-1 distance to nominal", "", *_wasserstein_table(wasserstein), ""]
    if plots:
        lines += ["## Figures", ""]
        for caption, plot in plots.items():
            lines += [f"![{caption}]({_relative(Path(plot), target.parent)})", f"*{caption}*", ""]
    if data_sizes:
        lines += ["## Data", "", "| sample | jets |", "|---|---:|"]
        lines += [f"| {name} | {int(size):,} |" for name, size in data_sizes.items()]
        lines.append("")
    if config:
        dumped = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)
        lines += ["## Configuration", "", "```yaml", dumped.rstrip(), "```", ""]
    lines += ["## Software", "", "| package | version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in package_versions().items()]
    lines.append("")
    with atomic_open(target, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return target


def _rejection_table(rows: Sequence[RejectionRow]) -> list[str]:
    efficiencies = sorted({eff for row in rows for eff in row.rejection})
    header = ["model", "labelled jets", *[f"1/ε_B @ ε_S={eff:g}" for eff in efficiencies], "AUC"]
    out = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(efficiencies) + 1)]
    for row in rows:
        cells = [row.model, f"{row.labelled_size:,}"]
        cells += [
            (
                row.rejection[e].format()
                + _interval_text(row.rejection_interval.get(e))
                + (" †" if e in row.low_statistics else "")
            )
            if e in row.rejection
            else "-"
            for e in efficiencies
        ]
        cells.append(_format_auc(row.auc))
        out.append("| " + " | ".join(cells) + " |")
    return out


def _interval_text(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    low, high = (MeanStd(v, 0.0, 1, int(math.isinf(v))).format() for v in interval)
    return f" [{low}, {high}]"


def _wasserstein_table(rows: Sequence[WassersteinRow]) -> list[str]:
    quantities: list[str] = []
    for row in rows:
        quantities += [q for q in row.distances if q not in quantities]
    out = [
        "| " + " | ".join(["model", "variant", *quantities]) + " |",
        "|---|---|" + "---:|" * len(quantities),
    ]
    for row in rows:
        cells = [row.model, row.variant]
        cells += [_w1_cell(row.distances[q]) if q in row.distances else "-" for q in quantities]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _w1_cell(value: float | W1Estimate) -> str:
    return value.format() if isinstance(value, W1Estimate) else f"{value:.4g}"


def _generic_table(section: str, rows: Sequence[Mapping[str, object]]) -> list[str]:
    if not rows:
        raise EvaluationInputError(f"table {section!r} has no rows")
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = {str(k): v for k, v in row.items()}
        out.append("| " + " | ".join(_cell(cells.get(c, "-")) for c in columns) + " |")
    return out


def _cell(value: object) -> str:
    if isinstance(value, MeanStd):
        return value.format()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _format_auc(auc: MeanStd) -> str:
    if auc.n > 1:
        return f"{auc.mean:.4f} ± {auc.std:.4f}"
    return f"{auc.mean:.4f}"


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(float(seconds), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{secs:04.1f} ({seconds:.1f} s)"


def _relative(plot: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(plot.resolve(), base.resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return plot.as_posix()


def _plain(value: object) -> object:
    """Make a config YAML-safe (paths and other objects as strings, tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
