"""Figures of the RS3L study (matplotlib object API + mplhep), written as PNG and PDF.

Every function takes arrays, histograms or result objects, draws one figure and writes it with
:func:`save_figure` (atomically, one file per format) and returns the written paths. Figures
are built with :class:`matplotlib.figure.Figure` directly, so no pyplot state or interactive
backend is involved and the functions are safe to call from workers.

* :func:`plot_variant_ratios` - per-variant histograms with error bars and ratio to nominal
  with uncertainties (Fig. 3), HEP style (mplhep), panels in a grid.
* :func:`plot_distributions` - normalised histograms per dataset with error bars (pass/fail).
* :func:`plot_corner` - corner plot of the embedding with Pearson r per class (Fig. 4).
* :func:`tsne_embedding` + :func:`plot_tsne` - t-SNE maps by class and by shower model (Fig. 5).
* :func:`plot_roc_bands` - ε_S vs 1/ε_B with a band over repeated trainings (Figs. 6-8).
* :func:`plot_convergence` - per-epoch training diagnostics (Fig. 2).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike, NDArray

from rs3l_coffea.atomic import atomic_path
from rs3l_coffea.evaluation._validation import EvaluationInputError, finite_2d
from rs3l_coffea.evaluation.roc import RocCurve, background_efficiency_at

if TYPE_CHECKING:
    import pandas as pd
    from hist import Hist

PathLike = str | os.PathLike[str]
History = Union["pd.DataFrame", str, os.PathLike[str], Sequence[Mapping[str, object]]]
"""Per-epoch training metrics: a DataFrame, a CSV/JSONL path, or a list of per-epoch dicts."""


def save_figure(
    figure: Figure, path: PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150
) -> list[Path]:
    """Write ``figure`` once per format next to ``path`` (its suffix is replaced), atomically."""
    stem = Path(path)
    if stem.suffix.lstrip(".").lower() in {"png", "pdf", "svg", "jpg", "jpeg"}:
        stem = stem.with_suffix("")
    written = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format=fmt, dpi=dpi)
        written.append(target)
    return written


RATIO_RANGE = (0.5, 1.5)
"""Default y range of ratio panels; points outside are drawn as triangles at its edge."""
RATIO_MIN_NOMINAL = 5
"""Ratio panels skip bins with fewer nominal jets (their ratio is noise, not information)."""


def hep_style() -> Any:
    """Context manager: mplhep's CMS style with font sizes for multi-panel figures.

    rcParams are read when artists are created and drawn, so figure construction and
    :func:`save_figure` both run inside it.
    """
    import matplotlib.style
    import mplhep

    return matplotlib.style.context(
        [mplhep.style.CMS, {"font.size": 13, "axes.labelsize": 13, "legend.fontsize": 10,
                            "xtick.labelsize": 11, "ytick.labelsize": 11,
                            "axes.titlesize": 13, "figure.titlesize": 15}]
    )


def _filled_range(edges: NDArray[np.float64], counts: NDArray[np.float64]) -> tuple[float, float]:
    """x range spanning the filled bins plus one bin either side (the axis range if empty)."""
    filled = np.flatnonzero(counts > 0)
    if filled.size == 0:
        return float(edges[0]), float(edges[-1])
    first, last = max(filled[0] - 1, 0), min(filled[-1] + 2, len(edges) - 1)
    return float(edges[first]), float(edges[last])


def _per_bin_label(edges: NDArray[np.float64], xlabel: str) -> str:
    """``fraction of jets / 0.04`` or ``fraction of jets / 20 GeV`` (unit from ``[...]``)."""
    widths = np.diff(edges)
    if not np.allclose(widths, widths[0]):
        return "fraction of jets / bin"
    unit = xlabel.rsplit("[", 1)[1].rstrip("] ") if xlabel.endswith("]") and "[" in xlabel else ""
    return f"fraction of jets / {widths[0]:.3g}{' ' + unit if unit else ''}"


def variant_ratio_figure(
    histograms: Mapping[str, Hist],
    nominal: str = "nominal",
    variant_axis: str = "variant",
    variant_labels: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    ncols: int | None = None,
    ratio_range: tuple[float, float] = RATIO_RANGE,
    colours: Mapping[str, str] | None = None,
) -> Figure:
    """The figure of :func:`plot_variant_ratios` (not written; see there for the layout)."""
    import mplhep

    if not histograms:
        raise EvaluationInputError("plot_variant_ratios needs at least one histogram")
    labels = dict(variant_labels or {})
    n_panels = len(histograms)
    ncols = min(n_panels, ncols or n_panels)
    nrows = math.ceil(n_panels / ncols)
    # A fixed layout in inches: constrained layout over many axes with the HEP style's minor
    # ticks took most of the figure's time (measured ~8 of 15 s for 8 panels on a busy core).
    width, height = 4.6 * ncols, 4.7 * nrows + (1.0 if title else 0.6)
    figure = Figure(figsize=(width, height))
    outer = figure.add_gridspec(
        nrows, ncols, left=0.85 / width, right=1 - 0.2 / width, bottom=0.65 / height,
        top=1 - (1.0 if title else 0.6) / height, wspace=0.32, hspace=0.3,
    )
    low, high = ratio_range
    legend: dict[str, Any] = {}
    for index, (quantity, histogram) in enumerate(histograms.items()):
        row, column = divmod(index, ncols)
        variants, edges, counts = _variant_counts(histogram, quantity, nominal, variant_axis)
        palette = _variant_colours(variants, nominal, colours)
        pair = outer[row, column].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.06)
        top = figure.add_subplot(pair[0])
        bottom = figure.add_subplot(pair[1], sharex=top)
        totals = counts.sum(axis=1)
        fractions = counts / totals[:, None]
        errors = np.sqrt(counts) / totals[:, None]  # Poisson error of each bin's count
        reference = fractions[variants.index(nominal)]
        for variant, fraction, error in zip(variants, fractions, errors, strict=True):
            is_nominal = variant == nominal
            mplhep.histplot(
                fraction, edges, yerr=error, ax=top, color=palette[variant],
                linewidth=2 if is_nominal else 1.2,
            )
            n_jets = int(counts[variants.index(variant)].sum())
            legend.setdefault(variant, (
                f"{labels.get(variant, variant)} ({n_jets} jets)",
                Line2D([], [], color=palette[variant], linewidth=2 if is_nominal else 1.2),
            ))
        top.set_ylabel(_per_bin_label(edges, quantity))
        top.set_ylim(0, None)
        top.tick_params(labelbottom=False)
        top.set_xlim(*_filled_range(edges, counts.sum(axis=0)))
        centres = 0.5 * (edges[1:] + edges[:-1])
        bin_widths = np.diff(edges)
        filled = counts[variants.index(nominal)] >= RATIO_MIN_NOMINAL
        with np.errstate(divide="ignore", invalid="ignore"):
            band = np.where(filled, errors[variants.index(nominal)] / reference, np.nan)
        bottom.stairs(
            1 + band, edges, baseline=1 - band, fill=True, color="grey", alpha=0.35,
            label=f"{labels.get(nominal, nominal)} stat. unc.",
        )
        bottom.axhline(1.0, color="black", linewidth=0.8)
        others = [v for v in variants if v != nominal]
        for k, variant in enumerate(others):
            i = variants.index(variant)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(filled, fractions[i] / reference, np.nan)
                ratio_error = np.where(filled, errors[i] / reference, np.nan)
            shift = (k - (len(others) - 1) / 2) * 0.12 * bin_widths  # keep the variants' points apart
            inside = np.isfinite(ratio) & (ratio >= low) & (ratio <= high)
            bottom.errorbar(
                centres[inside] + shift[inside], ratio[inside], yerr=ratio_error[inside],
                fmt="o", markersize=3, linewidth=1, color=palette[variant],
            )
            margin = 0.04 * (high - low)
            for outside, marker, edge in ((ratio > high, "^", high - margin),
                                          (ratio < low, "v", low + margin)):
                outside = outside & np.isfinite(ratio)
                if outside.any():
                    bottom.plot(centres[outside] + shift[outside], np.full(outside.sum(), edge),
                                linestyle="none", marker=marker, markersize=6,
                                color=palette[variant])
        bottom.set_ylim(low, high)
        if index == 0:
            bottom.legend(fontsize="xx-small", loc="lower left", frameon=False)
        bottom.set_ylabel(f"ratio to {labels.get(nominal, nominal)}", fontsize=10)
        bottom.set_xlabel(quantity)
    # One legend entry per variant (jet counts of the first panel; N2 panels may hold fewer).
    figure.legend(
        [handle for _, handle in legend.values()], [text for text, _ in legend.values()],
        loc="upper center", ncols=min(len(legend), 6),
        bbox_to_anchor=(0.5, 1 - (0.45 if title else 0.02) / height), frameon=False,
        fontsize="small",
    )
    if title:
        figure.suptitle(title, y=1 - 0.08 / height, va="top")
    return figure


def plot_variant_ratios(
    histograms: Mapping[str, Hist],
    path: PathLike,
    nominal: str = "nominal",
    variant_axis: str = "variant",
    variant_labels: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    ncols: int | None = None,
    ratio_range: tuple[float, float] = RATIO_RANGE,
    colours: Mapping[str, str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """One panel per quantity: each variant's fraction of jets per bin with Poisson error bars
    (top), and its ratio to the nominal with error bars (bottom) over a grey band holding the
    nominal's own statistical uncertainty; ratio points outside ``ratio_range`` appear as
    triangles at the panel's edge. ``ncols`` wraps the panels into a grid.

    ``histograms`` maps an axis label (e.g. ``"RS3L score"``, ``"soft-drop mass [GeV]"``; a
    unit in brackets goes into the y label) to a ``hist.Hist`` with axes ``[variant_axis,
    observable]`` holding counts. ``colours`` maps variant names to colours (default: black
    for the nominal, matplotlib's ``petroff10`` cycle for the others in axis order); pass the
    same mapping to every figure so a variant keeps its colour. The paper's Fig. 3 puts an
    embedding dimension next to N2 to show which of the two is more stable under re-simulation.
    """
    with hep_style():
        figure = variant_ratio_figure(
            histograms, nominal, variant_axis, variant_labels, title=title, ncols=ncols,
            ratio_range=ratio_range, colours=colours,
        )
        return save_figure(figure, path, formats=formats, dpi=dpi)


def distributions_figure(
    panels: Mapping[str, Mapping[str, Hist]],
    xlabel: str,
    *,
    title: str | None = None,
    colours: Mapping[str, str] | None = None,
) -> Figure:
    """The figure of :func:`plot_distributions` (not written)."""
    import mplhep

    if not panels or not any(panels.values()):
        raise EvaluationInputError("plot_distributions needs at least one histogram")
    names = list(dict.fromkeys(name for hists in panels.values() for name in hists))
    palette = dict(zip(names, petroff10(len(names)), strict=True))
    palette.update(colours or {})
    figure = Figure(
        figsize=(max(5.2 * len(panels), 6.4), 5.0 + (0.4 if title else 0)), layout="constrained"
    )
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, hists) in zip(axes, panels.items(), strict=True):
        edges = None
        for name, histogram in hists.items():
            counts = np.asarray(histogram.values(), dtype=np.float64)
            edges = np.asarray(histogram.axes[0].edges, dtype=np.float64)
            total = counts.sum()
            if total <= 0:
                continue
            mplhep.histplot(counts / total, edges, yerr=np.sqrt(counts) / total, ax=ax,
                            color=palette[name], label=f"{name} ({int(total)} jets)")
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        if edges is not None:
            ax.set_ylabel(_per_bin_label(edges, xlabel))
        ax.set_ylim(0, None)
        ax.legend(fontsize="x-small")
    # One x range for all panels (the filled bins of all of them), so panels compare by eye.
    ranges = [
        _filled_range(np.asarray(h.axes[0].edges, dtype=np.float64), np.asarray(h.values()))
        for hists in panels.values() for h in hists.values()
    ]
    for ax in axes:
        ax.set_xlim(min(r[0] for r in ranges), max(r[1] for r in ranges))
    if title:
        figure.suptitle(title)
    return figure


def plot_distributions(
    panels: Mapping[str, Mapping[str, Hist]],
    path: PathLike,
    xlabel: str,
    *,
    title: str | None = None,
    colours: Mapping[str, str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """Normalised 1-D histograms with Poisson error bars, one panel per entry of ``panels``.

    ``panels`` maps a panel title (e.g. ``"pass: score > 0.5"``) to ``{dataset: hist.Hist}``
    (one axis, counts). A dataset has the same colour in every panel (``colours`` or the
    ``petroff10`` cycle in order of first appearance), so pass/fail panels read side by side.
    """
    with hep_style():
        figure = distributions_figure(panels, xlabel, title=title, colours=colours)
        return save_figure(figure, path, formats=formats, dpi=dpi)


def plot_corner(
    embeddings: ArrayLike,
    labels: ArrayLike,
    path: PathLike,
    class_names: Mapping[int, str] | None = None,
    dimension_names: Sequence[str] | None = None,
    max_points_per_class: int = 2000,
    seed: int = 0,
) -> list[Path]:
    """Corner plot of all embedding dimensions per class, Pearson r per class in the upper half.

    Diagonal: normalised 1-D histograms; lower triangle: scatter of (a random subset of at most
    ``max_points_per_class``) jets per class; upper triangle: Pearson correlation coefficient
    of the pair, computed on all jets of each class.
    """
    x = finite_2d(embeddings, "embeddings")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise EvaluationInputError(f"labels have shape {y.shape}, need ({x.shape[0]},)")
    dims = x.shape[1]
    names = list(dimension_names or [f"z{i}" for i in range(dims)])
    if len(names) != dims:
        raise EvaluationInputError(f"{len(names)} dimension names for {dims} dimensions")
    classes = np.unique(y)
    class_label = {c: (class_names or {}).get(c, str(c)) for c in classes.tolist()}
    colours = petroff10(len(classes))
    rng = np.random.default_rng(seed)
    shown = {}
    for c in classes.tolist():
        rows = np.flatnonzero(y == c)
        if rows.size > max_points_per_class:
            rows = rng.choice(rows, max_points_per_class, replace=False)
        shown[c] = rows
    pearson = {c: _pearson_matrix(x[y == c]) for c in classes.tolist()}
    # Common range per dimension (central 99.8%) so that a column's panels line up.
    low, high = np.percentile(x, [0.1, 99.9], axis=0)
    pad = np.maximum(0.05 * (high - low), 1e-6)
    limits = np.stack([low - pad, high + pad], axis=1)

    size = max(1.3 * dims, 3.0)
    # A fixed layout: constrained layout over d² axes was ~40% of this plot's run time.
    figure = Figure(figsize=(size, size))
    axes = figure.subplots(dims, dims, squeeze=False)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.06, top=0.92, wspace=0.35, hspace=0.35)
    for i in range(dims):
        for j in range(dims):
            ax = axes[i, j]
            ax.tick_params(labelsize=5)
            ax.locator_params(nbins=3)
            if i == j:
                bins = np.linspace(limits[i, 0], limits[i, 1], 31)
                for colour, c in zip(colours, classes.tolist(), strict=True):
                    ax.hist(x[y == c, i], bins=bins, density=True, histtype="step", color=colour)
                ax.set_xlim(*limits[i])
            elif i > j:
                ax.set_xlim(*limits[j])
                ax.set_ylim(*limits[i])
                for colour, c in zip(colours, classes.tolist(), strict=True):
                    ax.scatter(
                        x[shown[c], j],
                        x[shown[c], i],
                        s=1,
                        alpha=0.3,
                        color=colour,
                        rasterized=True,
                    )
            else:
                ax.set_axis_off()
                for k, (colour, c) in enumerate(zip(colours, classes.tolist(), strict=True)):
                    r = pearson[c][i, j]
                    text = "n/a" if not math.isfinite(r) else f"{r:+.2f}"
                    ax.text(
                        0.5,
                        1 - (k + 1) / (len(classes) + 1),
                        text,
                        color=colour,
                        ha="center",
                        va="center",
                        fontsize=6,
                        transform=ax.transAxes,
                    )
            if i == dims - 1:
                ax.set_xlabel(names[j], fontsize=7)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=7)
    handles = [
        axes[0, 0].plot([], [], color=colour, label=class_label[c])[0]
        for colour, c in zip(colours, classes.tolist(), strict=True)
    ]
    figure.legend(
        handles=handles,
        loc="upper center",
        ncols=min(len(classes), 5),
        fontsize="small",
        title="Pearson r per class (upper triangle)",
    )
    return save_figure(figure, path)


def tsne_embedding(
    embeddings: ArrayLike, perplexity: float = 30.0, seed: int = 0, threads: int | None = 1
) -> NDArray[np.float64]:
    """2-D t-SNE coordinates of ``embeddings`` (sklearn; perplexity capped below n/3).

    ``threads`` caps the OpenMP/BLAS threads during the fit (``None``: library default). The
    default of 1 is deliberate: on a shared, busy machine sklearn's OpenMP gradient loop was
    measured 15-20x slower with the default thread count than single-threaded (150 points:
    12-20 s vs 0.9-1.1 s on 2 loaded cores).
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = finite_2d(embeddings, "embeddings")
    if x.shape[0] < 5:
        raise EvaluationInputError(f"t-SNE needs at least 5 points, got {x.shape[0]}")
    effective = min(float(perplexity), (x.shape[0] - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=effective, init="pca", random_state=seed)
    with threadpool_limits(limits=threads):
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def plot_tsne(
    coordinates: ArrayLike,
    colourings: Mapping[str, ArrayLike],
    path: PathLike,
    names: Mapping[str, Mapping[Any, str]] | None = None,
) -> list[Path]:
    """One t-SNE panel per colouring, e.g. ``{"class": truth, "shower model": variant}``.

    Each colouring holds one category per point (ints or strings); ``names`` optionally maps a
    colouring's raw categories to display names.
    """
    xy = finite_2d(coordinates, "coordinates")
    if xy.shape[1] != 2:
        raise EvaluationInputError(f"t-SNE coordinates must be [n, 2], got {xy.shape}")
    if not colourings:
        raise EvaluationInputError("plot_tsne needs at least one colouring")
    figure = Figure(figsize=(4.6 * len(colourings), 4.4), layout="constrained")
    axes = figure.subplots(1, len(colourings), squeeze=False)[0]
    for ax, (title, categories) in zip(axes, colourings.items(), strict=True):
        values = np.asarray(categories)
        if values.shape != (xy.shape[0],):
            raise EvaluationInputError(
                f"colouring {title!r} has shape {values.shape}, need ({xy.shape[0]},)"
            )
        display = (names or {}).get(title, {})
        unique = np.unique(values)
        for colour, value in zip(petroff10(len(unique)), unique.tolist(), strict=True):
            mask = values == value
            ax.scatter(
                xy[mask, 0],
                xy[mask, 1],
                s=4,
                alpha=0.6,
                color=colour,
                label=display.get(value, str(value)),
                rasterized=True,
            )
        ax.set_title(f"t-SNE by {title}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize="x-small", markerscale=3)
    return save_figure(figure, path)


def plot_roc_bands(
    curves: Mapping[str, Sequence[RocCurve]],
    path: PathLike,
    band: Literal["minmax", "std"] = "minmax",
    signal_efficiency_range: tuple[float, float] = (0.05, 1.0),
    title: str | None = None,
) -> list[Path]:
    """Signal efficiency vs background rejection (log y), one line + band per model.

    ``curves`` maps a model name to its ROC curves from repeated trainings. The line is the
    mean rejection; the band spans min-max (``"minmax"``) or mean ± 1 std (``"std"``) over the
    runs, on a common ε_S grid using the package's interpolation rule. A run with no background
    passing at some ε_S (infinite rejection) is left out of the line's mean there, and the band
    is drawn only where every run is finite.
    """
    if band not in ("minmax", "std"):
        raise EvaluationInputError(f"band must be 'minmax' or 'std', got {band!r}")
    if not curves:
        raise EvaluationInputError("plot_roc_bands needs at least one model")
    grid = np.linspace(*signal_efficiency_range, 200)
    figure = Figure(figsize=(5.5, 4.8), layout="constrained")
    ax = figure.add_subplot()
    for colour, (model, runs) in zip(petroff10(len(curves)), curves.items(), strict=True):
        if not runs:
            raise EvaluationInputError(f"model {model!r} has no ROC curve")
        eps_b = np.array([[background_efficiency_at(roc, e) for e in grid] for roc in runs])
        with np.errstate(divide="ignore"):
            rejection = np.where(eps_b > 0, 1.0 / np.where(eps_b > 0, eps_b, 1.0), np.nan)
        finite = np.isfinite(rejection)
        line = finite.any(axis=0)  # mean over the runs with background passing
        full_band = finite.all(axis=0)  # a band needs every run
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(np.where(finite, rejection, np.nan)[:, line], axis=0)
        label = f"{model} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
        ax.plot(grid[line], mean, color=colour, label=label)
        if len(runs) > 1 and full_band.any():
            kept = rejection[:, full_band]
            if band == "minmax":
                low, high = kept.min(axis=0), kept.max(axis=0)
            else:
                centre, std = kept.mean(axis=0), kept.std(axis=0, ddof=1)
                low, high = np.maximum(centre - std, 1.0), centre + std
            ax.fill_between(grid[full_band], low, high, color=colour, alpha=0.25, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
    ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(figure, path)


# Column families of the trainer's per-epoch metrics, (panel title, prefixes). Both spellings
# are accepted: the trainer's ``pos_cos/<class>`` and the long ``pos_cosine_<class>``.
_CONVERGENCE_PANELS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    # (panel title, exact column names, column-name prefixes)
    ("loss", ("loss", "train_loss", "val_loss"), ()),
    ("pair cosine", (), ("pos_cos/", "pos_cosine_", "neg_cos/", "neg_cosine_")),
    ("class-mean cosine", ("class_mean_cosine",), ("class_mean_cos/", "class_mean_cosine_")),
    ("validation classification", ("val_accuracy", "val_auc"), ()),
)


def plot_convergence(
    history: History, path: PathLike, class_names: Mapping[str, str] | None = None
) -> list[Path]:
    """Training diagnostics per epoch (paper Fig. 2), one panel per family present.

    ``history`` is a pandas DataFrame, a path to the trainer's ``metrics.csv`` or
    ``metrics.jsonl``, or a sequence of per-epoch dicts. Column ``epoch`` is required. Drawn when
    present: ``loss``/``train_loss``/``val_loss``; mean positive-pair cosine per class
    (``pos_cos/<class>`` or ``pos_cosine_<class>``) with random-pair ``neg_cos/*`` for contrast;
    cosine between class-mean embeddings (``class_mean_cos/<a>_<b>`` or ``class_mean_cosine*``);
    ``val_accuracy``/``val_auc``. ``class_names`` maps class ids as they appear in the column
    names (e.g. ``"4"``) to display names (e.g. ``"H→bb"``).
    """
    columns = _history_columns(history)
    if "epoch" not in columns:
        raise EvaluationInputError(f"history has no 'epoch' column; columns: {sorted(columns)}")
    epoch = columns["epoch"]
    panels = []
    for title, exact, prefixes in _CONVERGENCE_PANELS:
        names = [c for c in columns if c in exact or c.startswith(prefixes)]
        if names:
            panels.append((title, names))
    if not panels:
        raise EvaluationInputError(
            "history has no loss, pair-cosine, class-mean-cosine or validation columns; "
            f"columns: {sorted(columns)}"
        )
    names_map = dict(class_names or {})
    figure = Figure(figsize=(4.4 * len(panels), 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, names) in zip(axes, panels, strict=True):
        for name in names:
            values = columns[name]
            ok = np.isfinite(values)
            style = {"linestyle": "--"} if name.startswith("neg_cos") else {}
            ax.plot(
                epoch[ok],
                values[ok],
                marker="o",
                markersize=3,
                label=_convergence_label(name, names_map),
                **style,
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(title)
        ax.legend(fontsize="x-small")
        ax.grid(True, alpha=0.3)
    return save_figure(figure, path)


def _convergence_label(column: str, class_names: Mapping[str, str]) -> str:
    for prefix, kind in (
        ("pos_cos/", ""),
        ("pos_cosine_", ""),
        ("neg_cos/", "random pairs "),
        ("neg_cosine_", "random pairs "),
        ("class_mean_cos/", ""),
        ("class_mean_cosine_", ""),
    ):
        if column.startswith(prefix):
            key = column.removeprefix(prefix)
            if key in class_names:
                return kind + class_names[key]
            if "_" in key and all(part in class_names for part in key.split("_")):
                return kind + " vs ".join(class_names[part] for part in key.split("_"))
            return kind + key
    return column


def _history_columns(history: History) -> dict[str, NDArray[np.float64]]:
    import pandas as pd

    if isinstance(history, str | os.PathLike):
        source = Path(history)
        if not source.is_file():
            raise EvaluationInputError(f"training history file {source} does not exist")
        try:
            if source.suffix.lower() in {".jsonl", ".json"}:
                frame = pd.read_json(source, lines=source.suffix.lower() == ".jsonl")
            else:
                frame = pd.read_csv(source)
        except ValueError as error:
            raise EvaluationInputError(f"cannot read training history {source}: {error}") from error
    elif isinstance(history, pd.DataFrame):
        frame = history
    elif isinstance(history, Sequence):
        frame = pd.DataFrame(list(history))
    else:
        raise EvaluationInputError(
            f"history must be a DataFrame, a CSV/JSONL path or a list of dicts, got {type(history)}"
        )
    if frame.empty:
        raise EvaluationInputError("training history is empty")
    columns = {}
    for name in frame.columns:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        if np.isfinite(values).any():  # text columns (e.g. a phase name) are not plottable
            columns[str(name)] = values
    return columns


def _variant_counts(
    histogram: Hist, quantity: str, nominal: str, variant_axis: str
) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64]]:
    """``(variants, edges, counts[variant, bin])``; every variant must have entries."""
    axes = list(getattr(histogram, "axes", ()))
    names = [axis.name for axis in axes]
    if len(axes) != 2 or variant_axis not in names:
        raise EvaluationInputError(
            f"histogram for {quantity!r} must have axes [{variant_axis!r}, observable], has "
            f"{names}; select the other axes first, e.g. h[{{'dataset': 'zh', 'dim': 3}}]"
        )
    v_index = names.index(variant_axis)
    x_axis = axes[1 - v_index]
    variants = [str(v) for v in axes[v_index]]
    if nominal not in variants:
        raise EvaluationInputError(f"{quantity!r}: nominal {nominal!r} not among {variants}")
    counts = np.asarray(histogram.values(flow=False), dtype=np.float64)
    if v_index == 1:
        counts = counts.T
    edges = np.asarray(x_axis.edges, dtype=np.float64)
    totals = counts.sum(axis=1)
    if (totals <= 0).any():
        empty = [variants[i] for i in np.flatnonzero(totals <= 0)]
        raise EvaluationInputError(f"{quantity!r}: variants {empty} have an empty histogram")
    return variants, edges, counts


def _variant_colours(
    variants: Sequence[str], nominal: str, colours: Mapping[str, str] | None
) -> dict[str, str]:
    others = [v for v in variants if v != nominal]
    palette = {nominal: "black", **dict(zip(others, petroff10(len(others)), strict=True))}
    palette.update(colours or {})
    return palette


def _pearson_matrix(x: NDArray[np.float64]) -> NDArray[np.float64]:
    if x.shape[0] < 2:
        return np.full((x.shape[1], x.shape[1]), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        # asarray: numpy's stubs allow corrcoef a scalar result (not for a 2-D input).
        return np.asarray(np.corrcoef(x, rowvar=False))


def petroff10(n: int) -> list[str]:
    """``n`` colours of matplotlib's ``petroff10`` cycle (Petroff, arXiv:2107.02270), repeated."""
    import matplotlib.style

    base = [entry["color"] for entry in matplotlib.style.library["petroff10"]["axes.prop_cycle"]]
    return [base[i % len(base)] for i in range(n)]
