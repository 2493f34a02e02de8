"""Run-once stages with atomic completion markers, and the small file helpers they share.

A stage's marker ``<out>/stages/<stage>.json`` is written atomically when the stage completes,
with a fingerprint of what its result depends on; re-running skips it, a killed run loses only
the stage in progress.

Wall time across sittings: while a stage runs, ``<stage>.attempt.json`` beside its marker records
when this sitting started and, every :data:`HEARTBEAT_S` seconds, that it is still alive. A
stage killed mid-way (a closed session, SIGKILL) and resumed later (its chunks and checkpoints
survive) thus adds the earlier sittings' time, up to its last heartbeat, to the marker's
``wall_s``; ``sittings`` counts them and ``wall_this_sitting_s`` keeps the last one alone.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.errors import ConfigError

Log = Callable[[str], None]

#: Seconds between two "still running" notes of a running stage (the time an interruption can lose).
HEARTBEAT_S = 30.0


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


class _Attempt:
    """The running stage's ``.attempt.json``: earlier sittings' time, this sitting's start, heartbeats."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.earlier_s, self.earlier_sittings = 0.0, 0
        if path.is_file():  # a sitting that was killed before the stage finished
            try:
                old = json.loads(path.read_text())
                self.earlier_s = float(old["earlier_s"]) + max(0.0, float(old["alive"]) - float(old["start"]))
                self.earlier_sittings = int(old["earlier_sittings"]) + 1
            except (ValueError, KeyError, TypeError):
                pass  # unreadable note: count this sitting only
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path.name}", daemon=True)

    def _write(self) -> None:
        with atomic_open(self.path, "w") as handle:
            json.dump({"start": self.start, "alive": time.time(), "earlier_s": self.earlier_s,
                       "earlier_sittings": self.earlier_sittings}, handle)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def __enter__(self) -> _Attempt:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is not None:  # a failed stage: its time so far still counts on the next sitting
            self._write()


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
        attempt_path = marker.with_suffix(".attempt.json")
        with _Attempt(attempt_path) as attempt:
            start = time.perf_counter()
            result = fn()
            this_sitting = time.perf_counter() - start
        wall = attempt.earlier_s + this_sitting
        with atomic_open(marker, "w") as handle:
            json.dump({"stage": name, "fingerprint": key, "depends": depends, "wall_s": wall,
                       "sittings": attempt.earlier_sittings + 1, "wall_this_sitting_s": this_sitting,
                       "result": result, "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())},
                      handle, indent=1, default=str)
        attempt_path.unlink(missing_ok=True)
        self.wall[name] = wall
        self.ran.append(name)
        earlier = f" ({attempt.earlier_sittings + 1} sittings, {this_sitting:.1f} s in this one)" if attempt.earlier_sittings else ""
        self.log(f"[done] {name} in {wall:.1f} s{earlier}")
        return result
