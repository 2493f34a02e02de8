"""Evaluation of RS3L representations: metrics, plots and the report writer.

Everything here works on plain arrays, ``hist`` histograms and small result objects, so it is
independent of how the embeddings were produced. Submodules:

* :mod:`~rs3l_coffea.evaluation.wasserstein` - W1 between nominal and re-simulated variants.
* :mod:`~rs3l_coffea.evaluation.roc` - ROC, AUC, rejection at fixed ε_S with intervals.
* :mod:`~rs3l_coffea.evaluation.representation` - linear / kNN probes, autoencoder anomaly AUC.
* :mod:`~rs3l_coffea.evaluation.plots` - figures (imports matplotlib; loaded on first use).
* :mod:`~rs3l_coffea.evaluation.report` - ``report.md`` writer.
* :mod:`~rs3l_coffea.evaluation.verdict` - holds / does not hold / inconclusive from uncertainties.

The study that produces the inputs (generation, training, inference) is :mod:`rs3l_coffea.study`;
this package imports neither it nor ``training`` / ``generation``.

Importing this package does not import torch or matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rs3l_coffea.evaluation._validation import EvaluationInputError, EvaluationWarning
from rs3l_coffea.evaluation.report import (
    RejectionRow,
    WassersteinRow,
    package_versions,
    rejection_row,
    wasserstein_rows,
    write_report,
)
from rs3l_coffea.evaluation.representation import (
    AnomalyResult,
    ProbeResult,
    anomaly_detection,
    knn_probe,
    linear_probe,
)
from rs3l_coffea.evaluation.roc import (
    DEFAULT_SIGNAL_EFFICIENCIES,
    MeanStd,
    RejectionPoint,
    RocCurve,
    WorkingPointRule,
    auc_uncertainty,
    background_efficiency_at,
    background_rejection,
    clopper_pearson,
    rejection_summary,
    roc_curve,
    subprocess_rocs,
    summarize,
)
from rs3l_coffea.evaluation.wasserstein import (
    W1Estimate,
    W1PermutationTest,
    WassersteinTable,
    wasserstein_1d,
    wasserstein_binned,
    wasserstein_estimate_table,
    wasserstein_permutation_test,
    wasserstein_table,
    wasserstein_unbinned_table,
    wasserstein_with_floor,
)

_PLOTS = (
    "plot_convergence",
    "plot_corner",
    "plot_distributions",
    "plot_roc_bands",
    "plot_tsne",
    "plot_variant_ratios",
    "save_figure",
    "tsne_embedding",
)

__all__ = [
    "DEFAULT_SIGNAL_EFFICIENCIES",
    "AnomalyResult",
    "EvaluationInputError",
    "EvaluationWarning",
    "MeanStd",
    "ProbeResult",
    "RejectionPoint",
    "RejectionRow",
    "RocCurve",
    "W1Estimate",
    "W1PermutationTest",
    "WassersteinRow",
    "WassersteinTable",
    "WorkingPointRule",
    "anomaly_detection",
    "auc_uncertainty",
    "background_efficiency_at",
    "background_rejection",
    "clopper_pearson",
    "knn_probe",
    "linear_probe",
    "package_versions",
    "rejection_row",
    "rejection_summary",
    "roc_curve",
    "subprocess_rocs",
    "summarize",
    "wasserstein_1d",
    "wasserstein_binned",
    "wasserstein_estimate_table",
    "wasserstein_permutation_test",
    "wasserstein_rows",
    "wasserstein_table",
    "wasserstein_unbinned_table",
    "wasserstein_with_floor",
    "write_report",
    *_PLOTS,
]


def __getattr__(name: str) -> Any:
    # Plotting pulls in matplotlib/mplhep; load it only when a plot function is asked for.
    if name in _PLOTS:
        return getattr(import_module("rs3l_coffea.evaluation.plots"), name)
    raise AttributeError(f"module 'rs3l_coffea.evaluation' has no attribute {name!r}")
