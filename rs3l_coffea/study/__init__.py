"""The RS3L comparison study end to end: ``rs3l report --config study.yaml --out DIR``.

Stages (each cached in ``DIR``, see :mod:`~rs3l_coffea.study.stages`; trainings also resume
from their own checkpoints):

1. ``generate:<process>`` - :mod:`~rs3l_coffea.study.samples`: ZH(H→bb) signal, Z+jet
   (QCD-like q/c/b/g jets) background, each showered in every configured variant from one hard
   process; W→qq (``wz_qq``) as the out-of-domain signal. Each chunk is turned into paired
   ntuples (nominal jets with their re-simulated counterparts,
   ``rs3l_coffea.training.build_ntuples``) as soon as it exists, and its ROOT files are dropped
   unless ``generation.keep_root``; resumable chunk by chunk.
2. ``ntuple`` - the index of those chunk ntuples.
3. ``split`` - :mod:`~rs3l_coffea.study.splits`: pools disjoint by hard-event id, labelled
   sets of each size, validation and held-out test sets.
4. ``pretrain:<kind>`` and 5. ``train:<task>:<model>:<size>:s<seed>`` -
   :mod:`~rs3l_coffea.study.trainings`.
6. ``score:*`` / ``embed:*`` / ``n2`` - :mod:`~rs3l_coffea.study.scoring`.
7. ``report`` - :mod:`~rs3l_coffea.study.report` (tables in :mod:`~rs3l_coffea.study.tables`,
   figures in :mod:`~rs3l_coffea.study.figures`); redone whenever a stage ran, an input file or
   the study code changed.

Modules: ``config`` (pydantic schema of the YAML), ``layout`` (every path, the typed
:class:`RunKey`), ``stages``, ``samples``, ``splits``, ``trainings``, ``scoring``, ``tables``, ``figures``,
``report``, ``run`` (the driver), ``default_model`` (re-evaluation and export of the shipped
model). The study orchestrates generation, training and inference; the array-level metrics it
reports live in :mod:`rs3l_coffea.evaluation`, which imports none of those.
"""

from __future__ import annotations

from rs3l_coffea.study.config import StudyConfig, load_study_config, study_config_from_dict
from rs3l_coffea.study.default_model import (
    choose_default_model,
    evaluate_model,
    export_default_model,
)
from rs3l_coffea.study.layout import RowKey, RunKey, StudyLayout
from rs3l_coffea.study.run import StudyResult, run_study
from rs3l_coffea.study.scoring import n2_from_features
from rs3l_coffea.study.splits import read_ntuple

__all__ = [
    "RowKey",
    "RunKey",
    "StudyConfig",
    "StudyLayout",
    "StudyResult",
    "choose_default_model",
    "evaluate_model",
    "export_default_model",
    "load_study_config",
    "n2_from_features",
    "read_ntuple",
    "run_study",
    "study_config_from_dict",
]
