"""ROC curves, AUC and background rejection at fixed signal efficiency.

Working-point definition (used everywhere in the package, and in every table of the study):
    The ROC is the list of points ``(ε_S, ε_B)`` that ``sklearn.metrics.roc_curve`` returns
    for every distinct score threshold (``drop_intermediate=False``), starting at ``(0, 0)``.
    ``ε_B`` at a target ``ε_S`` follows the *step rule* (``rule="step"``, the default): the
    tightest cut ``score >= t`` that keeps at least the target signal efficiency, which is what
    an analysis can apply and what JetCLR's ``get_perf_stats`` reports. It never overstates the
    rejection. ``rule="interpolate"`` instead interpolates linearly between the last point with
    ``ε_S < target`` and the first with ``ε_S ≥ target`` (achievable only by choosing between the
    two cuts at random); for continuous scores the two agree to within one jet, but for tied scores
    (integer-valued or rounded outputs, a saturated sigmoid) a tie spans a long diagonal ROC
    segment and the interpolated rejection can be up to twice the step rule's.
    When several points share ``ε_S = target`` (a vertical step) the one with the smallest
    ``ε_B`` is taken under both rules. Rejection is ``1/ε_B``; it is ``inf`` when no background
    passes.

Statistical intervals: the number of background jets passing, ``k = ε_B · N_B`` (``N_B`` is
Kish's effective count ``(Σw)²/Σw²`` for weighted samples) is treated as binomial, and the
Clopper-Pearson interval on ``ε_B`` (central, ``confidence_level``; computed by
:func:`hist.intervals.clopper_pearson_interval`) is inverted into an interval on the rejection.
With ``k = 0`` the upper rejection limit is ``inf`` and the lower one is still finite, which is
what a test set that is too small can honestly claim. Rejections of 10²-10³ need ≥ 50k
background jets; :attr:`RejectionPoint.low_statistics` flags working points with fewer than
``min_background_passing`` jets passing.

AUC uncertainty: :func:`auc_uncertainty` is the Hanley-McNeil (1982) standard error of an AUC
measured on ``n_signal`` and ``n_background`` test jets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from hist.intervals import clopper_pearson_interval
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as _sklearn_roc_curve

from rs3l_coffea.evaluation._validation import (
    EvaluationInputError,
    finite_1d,
    labels_in,
    matching_labels,
    optional_weights,
)

DEFAULT_SIGNAL_EFFICIENCIES: tuple[float, ...] = (0.3, 0.5, 0.7)
ONE_SIGMA: float = 0.6826894921370859  # central probability of ±1σ of a Gaussian
WorkingPointRule = Literal["step", "interpolate"]


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve with the sample sizes needed to judge its precision."""

    signal_efficiency: NDArray[np.float64]
    """ε_S per threshold, non-decreasing, from 0 to 1."""
    background_efficiency: NDArray[np.float64]
    """ε_B per threshold, non-decreasing, from 0 to 1."""
    thresholds: NDArray[np.float64]
    """Score cut (``score >= threshold`` passes); the first is ``inf``."""
    auc: float
    n_signal: int
    n_background: int
    n_background_effective: float
    """Kish effective number of background jets (equals ``n_background`` if unweighted)."""


@dataclass(frozen=True)
class RejectionPoint:
    """Background rejection at one signal efficiency, with a Clopper-Pearson interval."""

    signal_efficiency: float
    background_efficiency: float
    rejection: float
    rejection_low: float
    rejection_high: float
    n_background_passing: float
    low_statistics: bool


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation over repeated trainings.

    Infinite values (no background passing) are counted in ``n_infinite`` and left out of the
    mean and std, which then describe the finite runs only; ``mean`` is ``inf`` if all are.
    """

    mean: float
    std: float
    n: int
    n_infinite: int = 0

    def format(self, digits: int = 3) -> str:
        """Human string such as ``"12.3 ± 0.4"`` or ``"∞"`` / ``"12.3 ± 0.4 (1/5 runs ∞)"``."""
        if self.n_infinite == self.n:
            return "∞"
        text = _round_sig(self.mean, digits)
        if self.n - self.n_infinite > 1:
            text += f" ± {_round_sig(self.std, 2)}"
        if self.n_infinite:
            text += f" ({self.n_infinite}/{self.n} runs ∞)"
        return text


def roc_curve(
    scores: ArrayLike, is_signal: ArrayLike, weights: ArrayLike | None = None
) -> RocCurve:
    """ROC of ``scores`` (higher = more signal-like) for boolean truth ``is_signal``."""
    score_values = finite_1d(scores, "scores")
    truth = np.asarray(is_signal)
    if truth.shape != score_values.shape:
        raise EvaluationInputError(
            f"is_signal has shape {truth.shape}, scores have {score_values.shape}"
        )
    if truth.dtype != np.bool_:
        # Refuse e.g. multi-class labels, which astype(bool) would silently merge.
        unexpected = np.setdiff1d(np.unique(truth), [0, 1])
        if unexpected.size:
            raise EvaluationInputError(
                f"is_signal must be boolean or 0/1, found values {unexpected[:5].tolist()}; "
                "use subprocess_rocs for class labels"
            )
    truth = truth.astype(bool)
    w = optional_weights(weights, score_values.size, "weights")
    n_signal, n_background = int(truth.sum()), int((~truth).sum())
    if n_signal == 0 or n_background == 0:
        raise EvaluationInputError(
            f"a ROC needs both classes: got {n_signal} signal and {n_background} background jets"
        )
    fpr, tpr, thresholds = _sklearn_roc_curve(
        truth, score_values, sample_weight=w, drop_intermediate=False
    )
    auc = float(roc_auc_score(truth, score_values, sample_weight=w))
    if w is None:
        n_eff = float(n_background)
    else:
        wb = w[~truth]
        n_eff = float(wb.sum() ** 2 / np.sum(wb**2)) if np.any(wb > 0) else 0.0
        if n_eff == 0.0:
            raise EvaluationInputError("all background weights are zero")
    return RocCurve(
        signal_efficiency=np.asarray(tpr, dtype=np.float64),
        background_efficiency=np.asarray(fpr, dtype=np.float64),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        auc=auc,
        n_signal=n_signal,
        n_background=n_background,
        n_background_effective=n_eff,
    )


def background_efficiency_at(roc: RocCurve, signal_efficiency: float, rule: WorkingPointRule = "step") -> float:
    """ε_B at ``signal_efficiency`` by the step rule or by interpolation (see the module docstring)."""
    target = float(signal_efficiency)
    if not 0.0 < target <= 1.0:
        raise EvaluationInputError(f"signal efficiency must be in (0, 1], got {target}")
    if rule not in ("step", "interpolate"):
        raise EvaluationInputError(f"working-point rule must be 'step' or 'interpolate', got {rule!r}")
    tpr, fpr = roc.signal_efficiency, roc.background_efficiency
    j = int(np.searchsorted(tpr, target, side="left"))  # first point with ε_S >= target
    if j >= tpr.size:  # only possible through rounding just below 1
        return float(fpr[-1])
    if j == 0 or rule == "step":
        return float(fpr[j])
    t0, t1, f0, f1 = tpr[j - 1], tpr[j], fpr[j - 1], fpr[j]
    return float(f0 + (f1 - f0) * (target - t0) / (t1 - t0))


def clopper_pearson(
    passing: float, total: float, confidence_level: float = ONE_SIGMA
) -> tuple[float, float]:
    """Central Clopper-Pearson interval on a binomial efficiency (``passing`` may be fractional).

    A thin checked wrapper of :func:`hist.intervals.clopper_pearson_interval`.
    """
    if total <= 0 or not 0 <= passing <= total:
        raise EvaluationInputError(f"need 0 <= passing <= total, total > 0; got {passing}/{total}")
    low, high = clopper_pearson_interval(np.asarray([passing], float), np.asarray([total], float), confidence_level)
    return float(low[0]), float(high[0])


def auc_uncertainty(auc: float, n_signal: int, n_background: int) -> float:
    """Hanley-McNeil standard error of an AUC from ``n_signal`` and ``n_background`` jets."""
    if n_signal < 1 or n_background < 1 or not 0.0 <= auc <= 1.0:
        raise EvaluationInputError(f"need an AUC in [0, 1] and both classes, got {auc}, {n_signal}, {n_background}")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc**2 / (1.0 + auc)
    variance = (auc * (1 - auc) + (n_signal - 1) * (q1 - auc**2) + (n_background - 1) * (q2 - auc**2)) / (
        n_signal * n_background
    )
    return float(math.sqrt(max(variance, 0.0)))


def background_rejection(
    roc: RocCurve,
    signal_efficiencies: Iterable[float] = DEFAULT_SIGNAL_EFFICIENCIES,
    confidence_level: float = ONE_SIGMA,
    min_background_passing: float = 10.0,
    rule: WorkingPointRule = "step",
) -> tuple[RejectionPoint, ...]:
    """Rejection ``1/ε_B`` at each signal efficiency, with Clopper-Pearson intervals."""
    points = []
    n_eff = roc.n_background_effective
    for eff in signal_efficiencies:
        eps_b = background_efficiency_at(roc, eff, rule)
        passing = eps_b * n_eff
        low, high = clopper_pearson(passing, n_eff, confidence_level)
        points.append(
            RejectionPoint(
                signal_efficiency=float(eff),
                background_efficiency=eps_b,
                rejection=_inverse(eps_b),
                rejection_low=_inverse(high),
                rejection_high=_inverse(low),
                n_background_passing=passing,
                low_statistics=passing < min_background_passing,
            )
        )
    return tuple(points)


def subprocess_rocs(
    scores: ArrayLike,
    labels: ArrayLike,
    signal: int | Sequence[int],
    backgrounds: Mapping[str, int | Sequence[int]],
    weights: ArrayLike | None = None,
    inclusive_name: str | None = "all backgrounds",
) -> dict[str, RocCurve]:
    """Signal vs each background subprocess (e.g. light q, c, b, g→qq, g→cc, g→bb, g→gg).

    ``labels`` are the integer truth labels per jet; ``signal`` and each value of
    ``backgrounds`` are one label or several. Jets of other classes are ignored. With
    ``inclusive_name`` set, one more curve against all listed backgrounds together is added.
    Subprocesses with no jet are skipped (not an error: small test sets lack rare classes).
    """
    score_values = finite_1d(scores, "scores")
    label_values = matching_labels(labels, score_values.size, "labels")
    w = optional_weights(weights, score_values.size, "weights")
    is_signal = labels_in(label_values, signal)
    if not is_signal.any():
        raise EvaluationInputError(f"no jet carries the signal label(s) {signal}")
    curves: dict[str, RocCurve] = {}
    any_background = np.zeros_like(is_signal)
    for name, codes in backgrounds.items():
        is_background = labels_in(label_values, codes)
        any_background |= is_background
        if not is_background.any():
            continue
        curves[name] = _roc_on(score_values, is_signal, is_background, w)
    if inclusive_name is not None and any_background.any():
        curves[inclusive_name] = _roc_on(score_values, is_signal, any_background, w)
    return curves


def summarize(values: Iterable[float]) -> MeanStd:
    """Mean ± sample std (ddof=1; 0 for a single run) of repeated results, infinities apart."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        raise EvaluationInputError("nothing to summarize: no runs given")
    if np.isnan(array).any():
        raise EvaluationInputError(f"NaN among the results to summarize: {array.tolist()}")
    finite = array[np.isfinite(array)]
    n_infinite = int(array.size - finite.size)
    if finite.size == 0:
        return MeanStd(math.inf, math.nan, int(array.size), n_infinite)
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return MeanStd(float(np.mean(finite)), std, int(array.size), n_infinite)


def rejection_summary(
    rocs: Sequence[RocCurve],
    signal_efficiencies: Iterable[float] = DEFAULT_SIGNAL_EFFICIENCIES,
) -> dict[float, MeanStd]:
    """Mean ± std of the rejection at each signal efficiency over repeated trainings."""
    efficiencies = tuple(signal_efficiencies)
    per_run = [background_rejection(roc, efficiencies) for roc in rocs]
    return {
        eff: summarize(run[i].rejection for run in per_run) for i, eff in enumerate(efficiencies)
    }


def _roc_on(
    scores: NDArray[np.float64],
    is_signal: NDArray[np.bool_],
    is_background: NDArray[np.bool_],
    weights: NDArray[np.float64] | None,
) -> RocCurve:
    keep = is_signal | is_background
    return roc_curve(scores[keep], is_signal[keep], None if weights is None else weights[keep])


def _inverse(efficiency: float) -> float:
    return math.inf if efficiency <= 0 else 1.0 / efficiency


def _round_sig(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "∞" if value > 0 else str(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):  # avoid "1.23e+03" for large rejections
        return f"{value:.0f}"
    return f"{value:.{digits}g}"
