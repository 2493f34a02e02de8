"""Every figure from a tiny input (PNG + PDF, non-empty) and the markdown report's content."""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path

import hist
import matplotlib
import numpy as np
import pandas as pd
import pytest

from rs3l_coffea.evaluation import (
    EvaluationInputError,
    plot_convergence,
    plot_corner,
    plot_roc_bands,
    plot_tsne,
    plot_variant_ratios,
    rejection_row,
    roc_curve,
    tsne_embedding,
    wasserstein_rows,
    wasserstein_table,
    write_report,
)

matplotlib.use("Agg")
RNG = np.random.default_rng(5)
MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF"}


def _assert_figures(paths: list[Path], stem: Path) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for path in paths:
        assert path.with_suffix("") == stem.with_suffix("")
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:4] == MAGIC[path.suffix]
    leftovers = [p.name for p in stem.parent.iterdir() if ".tmp" in p.name]
    assert leftovers == []  # atomic writes leave no temporaries behind


def _variant_hist(name: str, shift: float) -> hist.Hist:
    h = hist.Hist(
        hist.axis.StrCategory(["nominal", "fsr_up", "vincia"], name="variant"),
        hist.axis.Regular(20, -4, 4, name=name),
    )
    for i, variant in enumerate(["nominal", "fsr_up", "vincia"]):
        h.fill(variant=variant, **{name: RNG.normal(i * shift, 1.0, size=500)})
    return h


def test_variant_ratio_plot(tmp_path: Path) -> None:
    hists = {"embedding z3": _variant_hist("z3", 0.05), "N2": _variant_hist("n2", 0.3)}
    _assert_figures(plot_variant_ratios(hists, tmp_path / "fig3_ratio"), tmp_path / "fig3_ratio")
    with pytest.raises(EvaluationInputError, match="nominal 'central'"):
        plot_variant_ratios(hists, tmp_path / "x", nominal="central")


def test_variant_ratio_figure_has_errors_labels_title_and_out_of_range_markers() -> None:
    """Artists, not pixels: error bars on every variant, a nominal band and ratio points with
    error bars, triangles for ratios outside the range, labels, title, fixed colours."""
    from matplotlib.container import ErrorbarContainer
    from matplotlib.patches import StepPatch

    from rs3l_coffea.evaluation.plots import petroff10, variant_ratio_figure

    h = hist.Hist(
        hist.axis.StrCategory(["nominal", "fsr_up", "vincia"], name="variant"),
        hist.axis.Regular(10, 0, 1, name="score"),
    )
    h.fill(variant="nominal", score=RNG.uniform(size=2000))
    h.fill(variant="fsr_up", score=RNG.uniform(size=2000) ** 3)  # piles up at 0: ratio >> 1.5
    h.fill(variant="vincia", score=RNG.uniform(size=2000))
    colours = {"fsr_up": "#123456", "vincia": "#abcdef"}
    figure = variant_ratio_figure(
        {"RS3L score": h, "soft-drop mass [GeV]": h}, title="ZH", colours=colours
    )
    assert figure.get_suptitle() == "ZH"
    top, bottom = figure.axes[0], figure.axes[1]
    bars = [c for c in top.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
    bar_colours = {matplotlib.colors.to_hex(c.lines[2][0].get_color()[0]) for c in bars}
    assert bar_colours == {"#000000", "#123456", "#abcdef"}  # every variant has error bars
    assert top.get_ylabel() == "fraction of jets / 0.1"
    assert figure.axes[2].get_ylabel() == "fraction of jets / 0.1 GeV"
    assert bottom.get_xlabel() == "RS3L score" and bottom.get_ylabel() == "ratio to nominal"
    ratio_bars = [c for c in bottom.containers if isinstance(c, ErrorbarContainer)]
    assert len(ratio_bars) == 2 and all(c.has_yerr for c in ratio_bars)
    assert any(isinstance(p, StepPatch) for p in bottom.patches)  # the nominal's stat. band
    high = bottom.get_ylim()[1]
    up = [line for line in bottom.lines if line.get_marker() == "^"]
    assert up and all(line.get_color() == "#123456" for line in up)
    assert all(np.all(line.get_ydata() <= high) for line in up)
    legend = figure.legends[0]
    assert [t.get_text().split(" (")[0] for t in legend.get_texts()] == ["nominal", "fsr_up", "vincia"]
    assert "2000 jets" in legend.get_texts()[0].get_text()
    assert petroff10(12)[10] == petroff10(12)[0]  # the cycle repeats after 10 colours


def test_distributions_keep_a_dataset_colour_across_panels(tmp_path: Path) -> None:
    from matplotlib.container import ErrorbarContainer

    from rs3l_coffea.evaluation import plot_distributions  # exported next to the other plots
    from rs3l_coffea.evaluation.plots import distributions_figure

    def one(shift: float) -> hist.Hist:
        h = hist.Hist(hist.axis.Regular(20, 0, 300, name="msd"))
        h.fill(RNG.normal(125 + shift, 20, size=300))
        return h

    panels = {"pass": {"ZH": one(0), "Z+jet": one(-60)}, "fail": {"Z+jet": one(-50), "ZH": one(5)}}
    figure = distributions_figure(panels, "soft-drop mass [GeV]", title="pass/fail")
    colour = {}
    for ax in figure.axes:
        assert ax.get_xlabel() == "soft-drop mass [GeV]" and ax.get_ylabel() == "fraction of jets / 15 GeV"
        assert ax.get_title() in panels
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
        assert len({matplotlib.colors.to_hex(c.lines[2][0].get_color()[0]) for c in bars}) == 2
        for text, handle in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles, strict=True):
            colour.setdefault(text.get_text().split(" (")[0], set()).add(
                matplotlib.colors.to_hex(handle.get_color() if hasattr(handle, "get_color")
                                         else handle.get_edgecolor())
            )
    assert colour.keys() == {"ZH", "Z+jet"} and all(len(c) == 1 for c in colour.values())
    assert colour["ZH"] != colour["Z+jet"]
    _assert_figures(plot_distributions(panels, tmp_path / "pf", "soft-drop mass [GeV]"), tmp_path / "pf")
    with pytest.raises(EvaluationInputError, match="at least one"):
        plot_distributions({}, tmp_path / "x", "m")


def _embeddings(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    labels = RNG.integers(0, 3, size=n)
    x = RNG.normal(size=(n, 8)) + labels[:, None] * np.linspace(0, 2, 8)
    return x, labels


def test_corner_plot(tmp_path: Path) -> None:
    x, labels = _embeddings()
    x[:, 5] = 1.0  # a dead dimension: Pearson r is undefined, shown as n/a without warnings
    paths = plot_corner(x, labels, tmp_path / "fig4.png", class_names={0: "q", 1: "g", 2: "H→bb"})
    _assert_figures(paths, tmp_path / "fig4")


def test_tsne_maps(tmp_path: Path) -> None:
    x, labels = _embeddings(150)
    coordinates = tsne_embedding(x, perplexity=20, seed=0)
    assert coordinates.shape == (150, 2) and np.isfinite(coordinates).all()
    shower = np.where(RNG.uniform(size=150) < 0.5, "pythia", "vincia")
    paths = plot_tsne(
        coordinates,
        {"class": labels, "shower model": shower},
        tmp_path / "fig5_tsne",
        names={"class": {0: "q", 1: "g", 2: "H→bb"}},
    )
    _assert_figures(paths, tmp_path / "fig5_tsne")


def _rocs(strength: float, runs: int) -> list:
    out = []
    for _ in range(runs):
        truth = np.arange(400) < 150
        out.append(roc_curve(RNG.normal(size=400) + strength * truth, truth))
    return out


@pytest.mark.parametrize("band", ["minmax", "std"])
def test_roc_band_plot(tmp_path: Path, band: str) -> None:
    curves = {"RS3L": _rocs(2.0, 3), "supervised": _rocs(1.5, 1)}
    paths = plot_roc_bands(curves, tmp_path / f"roc_{band}", band=band, title="H→bb vs QCD")
    _assert_figures(paths, tmp_path / f"roc_{band}")


def _history() -> list[dict[str, float]]:
    return [
        {
            "epoch": epoch,
            "loss": 5.0 / (epoch + 1),
            "val_loss": 5.2 / (epoch + 1),
            "pos_cosine_H": 1 - 0.5 / (epoch + 1),
            "pos_cosine_q": 1 - 0.6 / (epoch + 1),
            "class_mean_cosine": 0.9 - 0.1 * epoch,
            "phase": "pretrain",
        }
        for epoch in range(5)
    ]


def test_convergence_plot_from_frame_csv_jsonl_and_dicts(tmp_path: Path) -> None:
    history = _history()
    frame = pd.DataFrame(history)
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(row) for row in history))
    for i, source in enumerate(
        [frame, tmp_path / "metrics.csv", str(tmp_path / "metrics.jsonl"), history]
    ):
        out = tmp_path / "plots" / f"fig2_{i}"
        _assert_figures(plot_convergence(source, out), out)
    # The trainer's own spelling (rs3l_coffea.training writes metrics.csv/jsonl like this).
    trainer_rows = [
        {
            "epoch": epoch,
            "step": 10 * epoch,
            "train_loss": 4.0 - epoch,
            "lr": 1e-3,
            "val_loss": 4.1 - epoch,
            "pos_cos/all": 0.5 + 0.1 * epoch,
            "neg_cos/all": 0.05,
            "pos_cos/1": 0.4 + 0.1 * epoch,
            "pos_cos/4": 0.6 + 0.1 * epoch,
            "class_mean_cos/1_4": 0.9 - 0.2 * epoch,
        }
        for epoch in range(3)
    ]
    out = tmp_path / "trainer_fig2"
    paths = plot_convergence(trainer_rows, out, class_names={"1": "light q", "4": "H→bb"})
    _assert_figures(paths, out)
    with pytest.raises(EvaluationInputError, match="no 'epoch' column"):
        plot_convergence([{"loss": 1.0}], tmp_path / "bad")
    with pytest.raises(EvaluationInputError, match="does not exist"):
        plot_convergence(tmp_path / "missing.csv", tmp_path / "bad")


def test_report_contains_tables_figures_and_versions(tmp_path: Path) -> None:
    truth = np.arange(200) < 100
    perfect = roc_curve(truth.astype(float), truth)  # no background passes: rejection ∞
    rows = [
        rejection_row("RS3L + fine-tune", 10000, _rocs(2.0, 3)),
        rejection_row("supervised", 1000, [perfect]),
    ]
    h = _variant_hist("z0", 0.2)
    w_rows = wasserstein_rows("RS3L", wasserstein_table(h))
    figure = plot_roc_bands({"RS3L": _rocs(2.0, 2)}, tmp_path / "plots" / "roc")[0]
    report = write_report(
        tmp_path / "out" / "report.md",
        rows,
        w_rows,
        plots={"ROC, H→bb vs QCD": figure},
        config={"seed": 3, "variants": ("nominal", "fsr_up"), "data": tmp_path},
        data_sizes={"pretrain pairs": 12500, "test": 200},
        wall_time_s=3723.5,
        extra_tables={
            "Linear classifier test": [
                {"model": "RS3L", "classifier": "logistic", "AUC": 0.98765, "accuracy": 0.9},
                {"model": "random init", "classifier": "lda", "AUC": 0.81234, "accuracy": 0.7},
            ]
        },
    )
    text = report.read_text(encoding="utf-8")
    assert (
        "| model | labelled jets | 1/ε_B @ ε_S=0.3 | 1/ε_B @ ε_S=0.5 | 1/ε_B @ ε_S=0.7 | AUC |"
        in text
    )
    assert "| RS3L + fine-tune | 10,000 |" in text
    # 100 background jets, none passing: every working point is flagged as low statistics, and
    # the 68% Clopper-Pearson lower limit is 1/(1 - 0.1587^(1/100)) = 54.8.
    assert "| supervised | 1,000 | ∞ [54.8, ∞] † | ∞ [54.8, ∞] † | ∞ [54.8, ∞] † | 1.0000 |" in text
    assert "## Linear classifier test" in text
    assert "| model | classifier | AUC | accuracy |" in text
    assert "| RS3L | logistic | 0.9877 | 0.9 |" in text
    assert "| model | variant | z0 |" in text
    expected_w = wasserstein_table(h)["fsr_up"]["z0"]
    assert f"| RS3L | fsr_up | {expected_w:.4g} |" in text
    assert "![ROC, H→bb vs QCD](../plots/roc.png)" in text
    assert "| pretrain pairs | 12,500 |" in text and "1:02:03.5" in text
    assert "variants:\n- nominal\n- fsr_up" in text
    for package in ("coffea", "awkward", "torch", "numpy", "sklearn"):
        assert (
            f"| {package} | {metadata.version('scikit-learn' if package == 'sklearn' else package)} |"
            in text
        )
    assert "| pythia8mc |" in text and "| python |" in text and "| platform |" in text
    assert not math.isnan(rows[0].auc.mean)
    assert [p.name for p in report.parent.iterdir()] == ["report.md"]
