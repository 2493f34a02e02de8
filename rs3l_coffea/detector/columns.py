"""Per-event lists of records kept as flat numpy columns plus per-event counts.

The generator's record pruning and the detector simulation work on flat arrays; awkward
arrays are only built when a batch is written. Keeping the flat form in between lets several
batches be joined with one ``np.concatenate`` per column (joining awkward records costs more
than building them) and makes slicing a range of events a view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """``[0, c0, c0 + c1, ...]`` (int64): where each event's entries start, plus the total."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def jagged_record(columns: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    """Per-event lists of records (``var * {columns}``) from flat columns and per-event counts.

    Builds the layout directly: the same array as ``ak.unflatten(ak.zip(columns,
    depth_limit=1), counts)``, without their broadcasting machinery (~5 ms per batch of 500
    events of ~200 particles, about 10 us per event).
    """
    offsets = offsets_from_counts(counts)
    lengths = {name: len(column) for name, column in columns.items()}
    if any(length != offsets[-1] for length in lengths.values()):
        raise ValueError(f"columns {lengths} do not hold the {int(offsets[-1])} entries counted")
    record = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(column)) for column in columns.values()],
        list(columns),
        length=int(offsets[-1]),
    )
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


@dataclass
class JaggedColumns:
    """``counts[i]`` entries of event ``i``, stored event after event in every column."""

    counts: np.ndarray
    columns: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, np.int64)
        total = int(self.counts.sum())
        lengths = {name: len(column) for name, column in self.columns.items()}
        if any(length != total for length in lengths.values()):
            raise ValueError(f"columns {lengths} do not hold the {total} entries counted")

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def offsets(self) -> np.ndarray:
        return offsets_from_counts(self.counts)

    def events(self, start: int, stop: int) -> JaggedColumns:
        """Events ``start`` to ``stop - 1`` (views, no copy)."""
        offsets = self.offsets
        first, last = int(offsets[start]), int(offsets[stop])
        return JaggedColumns(
            self.counts[start:stop],
            {name: column[first:last] for name, column in self.columns.items()},
        )

    def to_awkward(self) -> ak.Array:
        return jagged_record(self.columns, self.counts)

    @classmethod
    def concatenate(cls, parts: Sequence[JaggedColumns]) -> JaggedColumns:
        """The events of ``parts`` one after another (all parts have the same columns)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        if len(parts) == 1:
            return parts[0]
        names = list(parts[0].columns)
        for part in parts[1:]:
            if list(part.columns) != names:
                raise ValueError(f"columns differ: {names} vs {list(part.columns)}")
        return cls(
            np.concatenate([part.counts for part in parts]),
            {name: np.concatenate([part.columns[name] for part in parts]) for name in names},
        )
