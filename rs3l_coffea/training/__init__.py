"""Standalone RS3L trainer: ntuples, streaming data, contrastive pretraining and fine-tuning.

- :mod:`~rs3l_coffea.training.config`: the typed schema (pydantic dataclasses, :class:`TrainConfig`), YAML and overrides.
- :mod:`~rs3l_coffea.training.ntuple`: pairing of nominal and re-simulated jets, sharded ROOT
  ntuples, the published RS3L h5 reader.
- :mod:`~rs3l_coffea.training.dataset`: :class:`JetStream`, the streaming ``IterableDataset``.
- :mod:`~rs3l_coffea.training.partners`: the positive-partner hook.
- :mod:`~rs3l_coffea.training.losses`: NT-Xent and VICReg.
- :mod:`~rs3l_coffea.training.trainer`: :func:`train`, :class:`Trainer` (DDP, AMP, resume).
- :mod:`~rs3l_coffea.training.checkpoint`: checkpoint layout.

Names are imported lazily so that reading a config does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "TrainConfig": "config",
    "load_config": "config",
    "config_from_dict": "config",
    "VARIANT_CODES": "config",
    "nt_xent": "losses",
    "vicreg": "losses",
    "vicreg_terms": "losses",
    "JetStream": "dataset",
    "assign_split": "dataset",
    "make_partner_fn": "partners",
    "resim_partner": "partners",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "train": "trainer",
    "build_pair_rows": "ntuple",
    "match_jets": "ntuple",
    "write_shards": "ntuple",
    "read_published_h5": "ntuple",
    "build_ntuples": "build",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'rs3l_coffea.training' has no attribute {name!r}") from None
    return getattr(import_module(f"rs3l_coffea.training.{module}"), name)
