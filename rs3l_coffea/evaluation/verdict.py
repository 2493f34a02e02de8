"""Whether an expected direction holds, given the uncertainties of the numbers compared.

An expectation is written as ``difference > 0`` (for example "network rejection minus N2
rejection", "supervised W1 minus RS3L W1"). With the combined standard uncertainty ``σ`` of that
difference, the verdict is

* ``holds`` when ``difference > z·σ``,
* ``does not hold`` when ``difference < −z·σ``,
* ``inconclusive`` otherwise (the measurement cannot tell; more data, not a new check, decides).

The default ``z = 2`` is a two-sided ~95% statement for Gaussian uncertainties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from rs3l_coffea.evaluation._validation import EvaluationInputError

Verdict = Literal["holds", "does not hold", "inconclusive"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
INCONCLUSIVE: Verdict = "inconclusive"


def verdict(difference: float, uncertainty: float, z: float = 2.0) -> Verdict:
    """The verdict on ``difference > 0`` with standard uncertainty ``uncertainty`` (see module)."""
    if math.isnan(difference) or math.isnan(uncertainty) or uncertainty < 0 or z <= 0:
        raise EvaluationInputError(f"need a number, an uncertainty >= 0 and z > 0; got {difference}, {uncertainty}, {z}")
    if math.isinf(uncertainty):
        return INCONCLUSIVE
    if difference > z * uncertainty:
        return HOLDS
    if difference < -z * uncertainty:
        return FAILS
    return INCONCLUSIVE


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """All of several comparisons: holds if every one holds, fails if any fails, else inconclusive."""
    values = list(verdicts)
    if not values:
        raise EvaluationInputError("no verdicts to combine")
    if FAILS in values:
        return FAILS
    return HOLDS if all(v == HOLDS for v in values) else INCONCLUSIVE


def quadrature(*uncertainties: float) -> float:
    """Uncertainties of independent terms added in quadrature."""
    return math.sqrt(sum(u * u for u in uncertainties))
