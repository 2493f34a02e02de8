"""The split stage: pools disjoint by hard-event id, labelled sets, validation and test ntuples.

Pools and splits use :func:`rs3l_coffea.training.assign_split` (the hash the trainer uses): the
*pretraining* pool (H→bb and QCD jets; W→qq never enters pretraining) and the *fine-tuning* pool,
cut into labelled training sets of each configured size (half signal, half background, the same
jets for every model), a validation set and the held-out test sets (``test-<task>``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.study.config import QCD_LABELS, TASK_SIGNALS, StudyConfig
from rs3l_coffea.study.layout import StudyLayout


def label_codes(names: Sequence[str]) -> list[int]:
    from rs3l_coffea.features import JetLabel

    return [int(JetLabel[n]) for n in names]


def ntuple_shards(directory: Path) -> list[Path]:
    """The shards of an ntuple directory and of every chunk below it, in (process, chunk) order.

    Staging directories of chunks still being written (``*.partial``) are not part of it.
    """
    shards = sorted(p for p in directory.rglob("shard_*.root")
                    if not any(part.endswith(".partial") for part in p.relative_to(directory).parts))
    if not shards:
        raise InputFileError(f"no ntuple shards in {directory}")
    return shards


def read_ntuple(directory: Path, branches: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    import uproot

    from rs3l_coffea.training.ntuple import BRANCHES, TREE_NAME

    shards = ntuple_shards(directory)
    return uproot.concatenate([f"{s}:{TREE_NAME}" for s in shards], list(branches or BRANCHES), library="np")


def nominal_jets(t: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(first_row, jet_of_row)``: a nominal jet sits on one row per re-simulated partner, keyed
    by ``(hard_event_id, jet_index)``; ``first_row[j]`` is a row of distinct jet ``j`` and
    ``jet_of_row[i]`` the jet of row ``i`` (no arithmetic packing: the ids may use all 64 bits)."""
    keys = np.stack([t["hard_event_id"].astype(np.int64), t["jet_index"].astype(np.int64)], axis=1)
    _unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _shard_rows(directory: Path) -> Iterator[dict[str, np.ndarray]]:
    import uproot

    from rs3l_coffea.training.ntuple import BRANCHES, TREE_NAME

    for shard in ntuple_shards(directory):
        with uproot.open(shard) as handle:
            yield handle[TREE_NAME].arrays(list(BRANCHES), library="np")


def _first_jets(key: np.ndarray, order: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Keys of the first ``n`` jets of ``mask`` in the fixed hash order."""
    candidates = np.flatnonzero(mask)
    picked = candidates[np.argsort(order[candidates], kind="stable")[:n]]
    return key[picked]


def _select_rows(
    ntuple_dir: Path, mask: np.ndarray, signal_code: int, qcd_codes: Sequence[int]
) -> Iterator[dict[str, np.ndarray]]:
    """Rows of ``mask`` shard by shard, ``label`` rewritten to 1 signal / 0 QCD."""
    start = 0
    for rows in _shard_rows(ntuple_dir):
        n = len(rows["variant"])
        keep = mask[start : start + n]
        start += n
        if not keep.any():
            continue
        out = {k: v[keep] for k, v in rows.items()}
        jt = out["jettype"]
        out["label"] = np.where(jt == signal_code, 1, np.where(np.isin(jt, qcd_codes), 0, -1)).astype(np.int32)
        yield out


def _selections(config: StudyConfig, scalars: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, int]]:
    """Output name -> (row mask, signal code) of every split ntuple."""
    from rs3l_coffea.training.dataset import assign_split, event_uniform

    sp = config.split
    hid, jettype, rank = scalars["hard_event_id"], scalars["jettype"], scalars["pair_rank"]
    pool, split = assign_split(hid, sp.pretrain_fraction, sp.val_fraction, sp.test_fraction, sp.salt)
    is_qcd = np.isin(jettype, label_codes(QCD_LABELS))
    signal_code = {task: label_codes([sig])[0] for task, sig in TASK_SIGNALS.items()}
    jet_key = hid * 64 + scalars["jet_index"].astype(np.int64)  # one key per nominal jet
    selections = {"pretrain": ((pool == "pretrain") & (is_qcd | (jettype == signal_code["hbb"])), signal_code["hbb"])}
    order_value = event_uniform(jet_key, sp.salt + 7919)  # a fixed, seed-independent jet order
    for task in config.classifier.tasks:
        sig = signal_code[task]
        finetune = (pool == "finetune") & (is_qcd | (jettype == sig))
        selections[f"test-{task}"] = (finetune & (split == "test"), sig)
        nominal_train = finetune & (split == "train") & (rank == 0)
        nominal_val = finetune & (split == "val") & (rank == 0)
        val_keys = _first_jets(jet_key, order_value, nominal_val, sp.max_val_jets)
        for size in sp.labelled_sizes:
            signal_keys = _first_jets(jet_key, order_value, nominal_train & (jettype == sig), size // 2)
            background_keys = _first_jets(jet_key, order_value, nominal_train & is_qcd, size // 2)
            if len(signal_keys) < size // 2 or len(background_keys) < size // 2:
                raise ConfigError(
                    f"labelled size {size} for task {task}: the fine-tuning pool holds only {len(signal_keys)} "
                    f"signal and {len(background_keys)} background training jets; generate more events or lower "
                    "split.labelled_sizes"
                )
            keys = np.concatenate([signal_keys, background_keys, val_keys])
            selections[f"{task}-{size}"] = (finetune & np.isin(jet_key, keys) & (split != "test"), sig)
    return selections


def split_ntuples(config: StudyConfig, layout: StudyLayout) -> dict[str, Any]:
    """Write the pretraining, labelled, validation and test ntuples (see the module docstring)."""
    from rs3l_coffea.training.dataset import assign_split
    from rs3l_coffea.training.ntuple import write_shards

    sp = config.split
    qcd = label_codes(QCD_LABELS)
    scalars = read_ntuple(layout.ntuple, ["hard_event_id", "jet_index", "pair_rank", "jettype", "variant"])
    _pool, split = assign_split(scalars["hard_event_id"], sp.pretrain_fraction, sp.val_fraction, sp.test_fraction,
                                sp.salt)
    rank, jettype = scalars["pair_rank"], scalars["jettype"]
    is_qcd = np.isin(jettype, qcd)
    summary: dict[str, Any] = {"rows_total": len(rank)}
    for name, (mask, sig) in _selections(config, scalars).items():
        if not mask.any():
            raise InputFileError(f"split {name!r} is empty: generate more events")
        rows = _select_rows(layout.ntuple, mask, sig, qcd)
        write_shards(rows, layout.data / name, shard_size=sp.shard_size, sources=[str(layout.ntuple)])
        nominal = mask & (rank == 0)
        summary[name] = {
            "rows": int(mask.sum()),
            "nominal_jets": int(nominal.sum()),
            "signal_jets": int((nominal & (jettype == sig)).sum()),
            "background_jets": int((nominal & is_qcd).sum()),
            "train_nominal_jets": int((nominal & (split == "train")).sum()),
            "val_nominal_jets": int((nominal & (split == "val")).sum()),
        }
    return summary
