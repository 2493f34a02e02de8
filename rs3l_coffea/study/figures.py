"""The study's figures: ROC bands, variant ratios, corner plot, t-SNE and pretraining convergence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs3l_coffea.evaluation import RocCurve
from rs3l_coffea.study.config import MODEL_TITLES, TASK_TITLES, StudyConfig
from rs3l_coffea.study.layout import EmbeddingSource, RowKey
from rs3l_coffea.study.tables import VariantRows, selected_variant_rows, unit


def _variant_hist(values_by_variant: Mapping[str, np.ndarray], name: str) -> Any:
    import hist

    nominal = values_by_variant["nominal"]
    low, high = np.quantile(nominal, [0.005, 0.995])
    if not high > low:
        low, high = float(nominal.min()) - 0.5, float(nominal.max()) + 0.5
    h: hist.Hist = hist.Hist(hist.axis.StrCategory(list(values_by_variant), name="variant"),
                             hist.axis.Regular(30, float(low), float(high), name=name))
    for variant, values in values_by_variant.items():
        h.fill(variant, values)  # in axis order: variant, then the observable
    return h


def roc_figures(
    config: StudyConfig, plots_dir: Path, rocs: Mapping[RowKey, Sequence[RocCurve]], directions: Mapping[str, Any]
) -> dict[str, Path]:
    from rs3l_coffea.evaluation.plots import plot_roc_bands

    cls, plots = config.classifier, {}
    for task in cls.tasks:
        for size in config.split.labelled_sizes:
            curves = {MODEL_TITLES[m]: rocs[RowKey(task, m, size)] for m in cls.models if rocs.get(RowKey(task, m, size))}
            curves[f"N2 ({directions[task]['score']})"] = rocs[RowKey(task, "n2", 0)]
            path = plots_dir / f"roc-{task}-{size}.png"
            plot_roc_bands(curves, path, title=f"{TASK_TITLES[task]}, {size} labelled jets")
            plots[f"ROC, {TASK_TITLES[task]}, {size} labelled jets (band: min-max over {len(cls.seeds)} seeds)"] = path
    return plots


def embedding_figures(
    config: StudyConfig,
    plots_dir: Path,
    t: Mapping[str, np.ndarray],
    n2: Mapping[str, np.ndarray],
    embeds: Mapping[EmbeddingSource, Mapping[str, np.ndarray]],
    variant_names: Mapping[int, str],
    class_names: Mapping[int, str],
    history: Path,
    rows: VariantRows | None = None,
) -> dict[str, Path]:
    """Variant ratios (Fig. 3), corner plot, t-SNE and convergence of the re-simulation backbone."""
    from rs3l_coffea.evaluation.plots import (
        plot_convergence,
        plot_corner,
        plot_tsne,
        plot_variant_ratios,
        tsne_embedding,
    )

    plots: dict[str, Path] = {}
    nominal = t["pair_rank"] == 0
    rs3l = next(e for s, e in embeds.items() if s.pretrain == "resim")
    # one nominal histogram for every variant: the jets whose partners all pass the selection
    rows = rows or selected_variant_rows(config, t, list(variant_names))
    by_variant = {"nominal": rows.common, **{name: rows.common_partners[c] for c, name in variant_names.items()}}

    def per_variant(source: Mapping[str, np.ndarray], nominal_key: str, partner_key: str) -> dict[str, np.ndarray]:
        return {v: source[nominal_key if v == "nominal" else partner_key][m] for v, m in by_variant.items()}

    ratio_hists = {"RS3L embedding z0 (unit)": _variant_hist(
        {v: unit(x)[:, 0] for v, x in per_variant(rs3l, "nominal", "partner").items()}, "z0")}
    for model in ("fixed", "supervised"):
        source = next((s for s in embeds if s.run is not None and s.run.model == model), None)
        if source is not None and "score_nominal" in embeds[source]:
            values = per_variant(embeds[source], "score_nominal", "score_partner")
            ratio_hists[f"{source.name.split(' (')[0]} score"] = _variant_hist(values, "score")
    ratio_hists["N2"] = _variant_hist(per_variant(n2, "nominal", "partner"), "N2")
    path = plots_dir / "variant-ratios.png"
    plot_variant_ratios(ratio_hists, path)
    plots["Nominal vs re-simulated variants: RS3L embedding, classifier scores and N2 (ratio to nominal; "
          "test jets whose partner in every variant passes the jet selection)"] = path

    rng = np.random.default_rng(0)
    corner_idx = rng.permutation(int(nominal.sum()))[: config.evaluation.corner_points]
    path = plots_dir / "corner-rs3l.png"
    plot_corner(unit(rs3l["nominal"][nominal])[corner_idx], t["label"][nominal][corner_idx], path,
                class_names=class_names)
    plots["Corner plot of the RS3L (re-simulation) embedding, unit-normalised, test jets by class"] = path

    half = config.evaluation.tsne_points // 2
    names = list(variant_names.values())
    alt = "vincia" if "vincia" in names else names[-1]
    alt_code = next(c for c, name in variant_names.items() if name == alt)
    nominal_idx = rng.permutation(np.flatnonzero(nominal))[:half]
    alt_idx = rng.permutation(np.flatnonzero(t["variant"] == alt_code))[:half]
    points = np.concatenate([unit(rs3l["nominal"][nominal_idx]), unit(rs3l["partner"][alt_idx])])
    path = plots_dir / "tsne-rs3l.png"
    plot_tsne(
        tsne_embedding(points, seed=0),
        {"class": np.concatenate([t["label"][nominal_idx], t["label"][alt_idx]]),
         "shower": np.array(["nominal"] * len(nominal_idx) + [alt] * len(alt_idx))},
        path, names={"class": dict(class_names)},
    )
    plots[f"t-SNE of the RS3L embedding: nominal jets and {alt} re-simulations, by class and by shower"] = path

    path = plots_dir / "convergence-pretrain.png"
    plot_convergence(history, path, class_names={"0": "QCD", "1": class_names[1]})
    plots["Pretraining convergence (re-simulation RS3L): loss and pair cosines per epoch"] = path
    return plots
