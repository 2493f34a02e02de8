"""Delphes-layout ROOT writer (uproot), atomic, one batch of events at a time.

Tree ``Delphes`` with one branch group per collection, named like Delphes' own files so that
coffea's ``DelphesSchema`` reads it unchanged: counter ``<Coll>_size`` and leaves
``<Coll>/<Coll>.<Field>`` (e.g. ``EFlowTrack/EFlowTrack.PT``). ``Event`` is a one-entry
collection per event, as in Delphes. Provenance JSON is stored as the ``TObjString``
``rs3l_provenance`` next to the tree.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.atomic import atomic_path

TREE_NAME = "Delphes"
PROVENANCE_KEY = "rs3l_provenance"
COLLECTIONS = ("Event", "Particle", "EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")


class DelphesWriter:
    """Write batches of collections into ``path`` atomically (the file appears on clean close).

    >>> with DelphesWriter(path, provenance) as writer:      # doctest: +SKIP
    ...     writer.write({"Event": ..., "Particle": ..., "EFlowTrack": ..., ...})
    """

    def __init__(self, path: str | os.PathLike[str], provenance: dict[str, Any]) -> None:
        self.path = Path(path)
        self.provenance = provenance
        self._stack = contextlib.ExitStack()
        self._file: Any = None
        self._tree: Any = None
        self.n_events = 0

    def __enter__(self) -> DelphesWriter:
        import uproot

        tmp = self._stack.enter_context(atomic_path(self.path))
        # LZ4: ~5x faster to write than ZLIB; readers need the lz4 package (a coffea dependency).
        self._file = self._stack.enter_context(uproot.recreate(tmp, compression=uproot.LZ4(1)))
        return self

    def write(self, collections: dict[str, ak.Array]) -> None:
        """Append one batch: every collection is a jagged record array, one list per event."""
        missing = [name for name in COLLECTIONS if name not in collections]
        if missing:
            raise ValueError(f"DelphesWriter.write needs collections {missing}")
        lengths = {name: len(collections[name]) for name in COLLECTIONS}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"collections have different numbers of events: {lengths}")
        data = {name: collections[name] for name in COLLECTIONS}
        if self._tree is None:
            self._tree = self._file.mktree(
                TREE_NAME,
                {name: array.type.content for name, array in data.items()},
                counter_name=lambda counted: f"{counted}_size",
                field_name=lambda outer, inner: f"{outer}/{outer}.{inner}",
            )
        self._tree.extend(data)
        self.n_events += lengths["Event"]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if exc_type is None:
            self._file[PROVENANCE_KEY] = json.dumps(self.provenance, sort_keys=True, default=_json)
        return self._stack.__exit__(exc_type, exc, traceback)


def _json(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance JSON stored in a generated file."""
    import uproot

    with uproot.open(path) as handle:
        return json.loads(str(handle[PROVENANCE_KEY]))
