"""Run-once stages with atomic completion markers, and the small file helpers they share.

A stage's marker ``<out>/stages/<stage>.json`` is written atomically when the stage completes,
with a fingerprint of what its result depends on; re-running skips it, a killed run loses only
the stage in progress.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.errors import ConfigError

Log = Callable[[str], None]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (derived stages are redone when a model file changes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(value: Any) -> str:
    """A short stable hash of a JSON-able value (what a stage's result depends on)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # Plain arrays only (the readers load with allow_pickle=False); naming the flag also
        # tells the type checker that **arrays does not supply it.
        np.savez(handle, allow_pickle=False, **arrays)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class Stages:
    """Run-once stages with atomic completion markers under ``<out>/stages``."""

    def __init__(self, stage_dir: Path, log: Log) -> None:
        self.dir = stage_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.wall: dict[str, float] = {}
        self.skipped: list[str] = []
        self.ran: list[str] = []

    def marker(self, name: str) -> Path:
        return self.dir / (name.replace(":", "__").replace("+", "_plus_").replace("/", "_") + ".json")

    def fingerprint_of(self, name: str) -> str:
        return json.loads(self.marker(name).read_text())["fingerprint"]

    def run(self, name: str, depends: Any, fn: Callable[[], Any], derived: bool = False) -> Any:
        """Run ``fn`` unless ``name`` completed with the same ``depends``; return its result.

        A finished stage whose ``depends`` changed is an error (the out dir holds another
        configuration's results), except for ``derived`` stages (scores, embeddings of a model
        file): those are recomputed when their input changed.
        """
        marker = self.marker(name)
        key = fingerprint(depends)
        if marker.is_file():
            record = json.loads(marker.read_text())
            if record["fingerprint"] != key and derived:
                self.log(f"[redo] {name}: its inputs changed")
                marker.unlink()
                return self.run(name, depends, fn, derived)
            if record["fingerprint"] != key:
                old = record.get("depends", {})
                changed = sorted(k for k in set(old) | set(depends) if old.get(k) != depends.get(k))
                raise ConfigError(
                    f"stage {name!r} in {self.dir.parent} was completed with a different configuration "
                    f"(changed: {changed}; marker {marker}); use a fresh --out directory or delete that "
                    "marker and its outputs"
                )
            self.wall[name] = float(record["wall_s"])
            self.skipped.append(name)
            self.log(f"[skip] {name} (done, {record['wall_s']:.1f} s)")
            return record["result"]
        self.log(f"[run ] {name}")
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
        with atomic_open(marker, "w") as handle:
            json.dump({"stage": name, "fingerprint": key, "depends": depends, "wall_s": wall, "result": result,
                       "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, handle, indent=1,
                      default=str)
        self.wall[name] = wall
        self.ran.append(name)
        self.log(f"[done] {name} in {wall:.1f} s")
        return result
