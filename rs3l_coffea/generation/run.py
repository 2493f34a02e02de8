"""Chunked, reproducible, resumable generation: ``generate_chunk`` and ``generate``.

``generate_chunk(config, i)`` is pure: its output depends only on (config, i), all seeds are
derived from (config.seed, i, purpose). It writes one file per variant,
``<out_dir>/<process>_<variant>_<i:05d>.root``, plus a JSON sidecar (same name, ``.json``)
written last: a chunk whose sidecars all exist and match the config is complete and skipped
on re-run, which resumes a killed job. ``generate`` runs the chunks in this process, in local
processes (``workers > 1``) or on a ``dask.distributed`` client.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import datetime
import json
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import rs3l_coffea
from rs3l_coffea.allocator import retain_freed_memory
from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.detector.columns import JaggedColumns
from rs3l_coffea.detector.simulate import simulate_columns
from rs3l_coffea.generation.config import (
    BEAM_ENERGY,
    PROCESSES,
    STREAM_DETECTOR,
    STREAM_HADRONIZATION,
    STREAM_HARD,
    STREAM_SHOWER,
    VARIANTS,
    GenerationConfig,
    derive_seed,
)
from rs3l_coffea.generation.pythia import (
    ChargeTable,
    generate_hard_events,
    hard_settings,
    make_variant_shower,
    pythia_version,
    shower_settings,
)
from rs3l_coffea.generation.records import ShoweredParticles, hard_block, showered_records
from rs3l_coffea.generation.writer import DelphesWriter

EVENT_FIELDS = (
    "Number", "HardEventID", "VariantCode", "Weight", "PartonLevelSize",
)
# Events collected before one write: uproot's cost per write (one basket per branch, ~9 ms)
# dominates at 500 events (~42 us/event, ISR on) and is ~25 us/event at 2,000. The content
# of the file does not depend on it (only the basket boundaries), so it is not configuration.
WRITE_EVENTS = 2000


@dataclass
class ChunkTiming:
    """CPU seconds (``time.process_time``) spent in each stage of one chunk (for the benchmark).

    CPU time rather than wall time: the cores are shared, wall time measures the neighbours.
    """

    hard: float = 0.0
    shower: float = 0.0
    records: float = 0.0
    detector: float = 0.0
    write: float = 0.0
    init: float = 0.0

    @property
    def pythia(self) -> float:
        """Time inside Pythia (hard process, showers, initialisation)."""
        return self.hard + self.shower + self.init

    @property
    def total(self) -> float:
        return self.hard + self.shower + self.records + self.detector + self.write + self.init


def sidecar_path(root_path: Path) -> Path:
    """The JSON provenance sidecar of a generated ROOT file."""
    return root_path.with_suffix(".json")


def variant_seeds(config: GenerationConfig, chunk_index: int, variant: str) -> dict[str, int]:
    """Seeds of one variant in one chunk (hard process, shower, hadronization, detector)."""
    code = VARIANTS[variant][0]
    # rehadronize shares the nominal shower seed and adds its own hadronization seed.
    shower_code = VARIANTS["nominal"][0] if variant == "rehadronize" else code
    seeds = {
        "hard": derive_seed(config.seed, chunk_index, STREAM_HARD),
        "shower": derive_seed(config.seed, chunk_index, STREAM_SHOWER + shower_code + 1),
        "detector": derive_seed(config.seed, chunk_index, STREAM_DETECTOR + code + 1),
    }
    if variant == "rehadronize":
        seeds["hadronization"] = derive_seed(config.seed, chunk_index, STREAM_HADRONIZATION + code + 1)
    return seeds


def _variant_settings(config: GenerationConfig, variant: str, seeds: dict[str, int]) -> list[str]:
    settings_variant = "nominal" if variant == "rehadronize" else variant
    return shower_settings(VARIANTS[settings_variant][1], config.isr, config.mpi, seeds["shower"])


def provenance(config: GenerationConfig, chunk_index: int, variant: str) -> dict[str, Any]:
    """Everything needed to regenerate one file (no timestamps: the ROOT file is reproducible)."""
    seeds = variant_seeds(config, chunk_index, variant)
    first, n = config.chunk_events(chunk_index)
    return {
        "generator": f"pythia8mc {pythia_version()}",
        "rs3l_coffea": rs3l_coffea.__version__,
        "process": config.process,
        "variant": variant,
        "variant_code": VARIANTS[variant][0],
        "chunk_index": chunk_index,
        "first_hard_event_id": first,
        "n_events": n,
        "seeds": seeds,
        "rehadronize": "replays the nominal random state at each event start, switches to "
        "seeds.hadronization after the parton level" if variant == "rehadronize" else None,
        "hard_process_settings": hard_settings(PROCESSES[config.process].settings, seeds["hard"]),
        "shower_settings": _variant_settings(config, variant, seeds),
        "hard_eta_max": config.eta_max,
        "detector": config.detector.as_dict(),
        # Not out_dir or the total n_events: moving the directory or extending the sample with
        # a larger --events must not invalidate (and regenerate) complete chunks.
        "config": {k: v for k, v in config.as_dict().items() if k not in ("out_dir", "n_events")},
    }


def _chunk_complete(config: GenerationConfig, chunk_index: int) -> bool:
    for variant in config.variants:
        root = config.output_path(variant, chunk_index)
        side = sidecar_path(root)
        if not (root.is_file() and side.is_file()):
            return False
        try:
            recorded = json.loads(side.read_text())
        except (OSError, ValueError):
            return False
        expected = json.loads(json.dumps(provenance(config, chunk_index, variant)))
        if recorded.get("provenance") != expected:
            return False
    return True


def _event_columns(
    first_id: int, indices: np.ndarray, variant: str, particles: ShoweredParticles
) -> JaggedColumns:
    hard_ids = first_id + indices
    columns: dict[str, np.ndarray] = {
        "Number": hard_ids.astype(np.int64),
        "HardEventID": hard_ids.astype(np.int64),
        "VariantCode": np.full(len(indices), VARIANTS[variant][0], np.int32),
        "Weight": particles.valid.astype(np.float32),
        "PartonLevelSize": particles.parton_level_sizes().astype(np.int32),
    }
    return JaggedColumns(np.ones(len(indices), np.int64), columns)


class _BufferedWriter:
    """Collects batches of flat collections and hands :data:`WRITE_EVENTS` at a time to ``writer``."""

    def __init__(self, writer: DelphesWriter) -> None:
        self.writer = writer
        self.pending: list[dict[str, JaggedColumns]] = []
        self.n_pending = 0

    def add(self, collections: dict[str, JaggedColumns]) -> None:
        self.pending.append(collections)
        self.n_pending += len(collections["Event"])
        if self.n_pending >= WRITE_EVENTS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.writer.write({
            name: JaggedColumns.concatenate([batch[name] for batch in self.pending]).to_awkward()
            for name in self.pending[0]
        })
        self.pending, self.n_pending = [], 0


def generate_chunk(
    config: GenerationConfig, chunk_index: int, timing: ChunkTiming | None = None
) -> list[Path]:
    """Generate chunk ``chunk_index`` of every variant; return the ROOT paths (one per variant).

    Pure and idempotent: complete chunks are skipped, a chunk is reproduced exactly from
    (config, chunk_index). Safe to run in another process or on a dask worker.
    """
    paths = [config.output_path(variant, chunk_index) for variant in config.variants]
    if _chunk_complete(config, chunk_index):
        return paths
    config.check_output_dir()
    retain_freed_memory()  # batches re-allocate tens of MB: reuse it instead of page-faulting
    timing = timing if timing is not None else ChunkTiming()
    first_id, n_events = config.chunk_events(chunk_index)
    spec = PROCESSES[config.process]

    tick = time.process_time()
    hard = generate_hard_events(
        spec.settings, spec.target_ids, n_events,
        derive_seed(config.seed, chunk_index, STREAM_HARD), config.eta_max,
    )
    timing.hard += time.process_time() - tick

    # nominal runs first: rehadronize replays its recorded random states.
    order = sorted(config.variants, key=lambda name: name != "nominal")
    nominal_states: dict[int, Any] | None = None
    for variant in order:
        path = config.output_path(variant, chunk_index)
        seeds = variant_seeds(config, chunk_index, variant)
        tick = time.process_time()
        rehadronize = variant == "rehadronize"
        shower = make_variant_shower(
            hard, _variant_settings(config, variant, seeds), BEAM_ENERGY,
            replay=nominal_states if rehadronize else None,
            hadronization_seed=seeds.get("hadronization"),
            reuse=True,  # init once per variant and process; output identical to a fresh one
            record_states=variant == "nominal" and "rehadronize" in config.variants,
        )
        charges = ChargeTable(shower.pythia)
        blocks = hard_block(hard, BEAM_ENERGY, charges)
        rng = np.random.default_rng(seeds["detector"])
        meta = provenance(config, chunk_index, variant)
        timing.init += time.process_time() - tick
        with DelphesWriter(path, meta) as writer:
            buffered = _BufferedWriter(writer)
            while shower.feed.next_index < n_events:
                tick = time.process_time()
                batch, indices = shower.next_batch(min(config.batch_size, n_events - shower.feed.next_index))
                timing.shower += time.process_time() - tick

                tick = time.process_time()
                # Events failed by Pythia stay in the batch (Weight 0, hard block only, no
                # candidates): event i is hard event i in every variant file.
                particles = ShoweredParticles.from_batch(batch)
                record, final_state = showered_records(
                    particles, blocks.events(int(indices[0]), int(indices[-1]) + 1), charges
                )
                timing.records += time.process_time() - tick
                tick = time.process_time()
                candidates = simulate_columns(final_state, config.detector, rng)
                timing.detector += time.process_time() - tick
                tick = time.process_time()
                event = _event_columns(first_id, indices, variant, particles)
                buffered.add({"Event": event, "Particle": record, **candidates})
                timing.write += time.process_time() - tick
            tick = time.process_time()
            buffered.flush()
            timing.write += time.process_time() - tick
        tick = time.process_time()
        with atomic_open(sidecar_path(path)) as handle:
            json.dump(
                {
                    "provenance": meta,
                    "n_events_written": writer.n_events,
                    "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "host": platform.node(),
                },
                handle, indent=1, sort_keys=True,
            )
        timing.write += time.process_time() - tick
        if variant == "nominal" and shower.hook is not None:
            nominal_states = shower.hook.recorded
    return paths


PARENT_POLL_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when ``parent_pid`` dies, even by SIGKILL.

    A killed parent cannot shut its pool down, and a worker inside Pythia never reads the
    pool's queue again, so without this the workers (~185 MB each) and the resource tracker
    run on. Linux: the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG``);
    everywhere: a daemon thread polls ``os.getppid()`` (re-parenting means the parent is gone).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: the watchdog remains
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="rs3l-exit-with-parent", daemon=True).start()


def _events_to_generate(config: GenerationConfig) -> int:
    """Events of the chunks that lack a file or sidecar of some variant (cheap: no reads)."""
    total = 0
    for i in range(config.n_chunks):
        paths = [config.output_path(variant, i) for variant in config.variants]
        if not all(path.is_file() and sidecar_path(path).is_file() for path in paths):
            total += config.chunk_events(i)[1]
    return total


def generate(
    config: GenerationConfig,
    workers: int = 1,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Generate every chunk; return all ROOT paths (variant-major within each chunk).

    ``workers > 1`` uses a local ``ProcessPoolExecutor`` (spawned processes); ``client``, a
    ``dask.distributed.Client``, submits ``generate_chunk`` to its workers instead.
    ``progress(events_done, events_total)`` is called as chunks finish.
    Configuration, output directory and free disk space are checked before any generation
    starts. Local worker processes exit when this process dies (:func:`exit_with_parent`).
    """
    config.validate()
    config.check_output_dir()
    config.check_disk_space(_events_to_generate(config))
    chunks = list(range(config.n_chunks))
    done_events = 0
    results: dict[int, list[Path]] = {}

    def finished(chunk_index: int, paths: list[Path]) -> None:
        nonlocal done_events
        results[chunk_index] = paths
        done_events += config.chunk_events(chunk_index)[1]
        if progress is not None:
            progress(done_events, config.n_events)

    if client is not None:
        from distributed import as_completed

        futures = {client.submit(generate_chunk, config, i, pure=False): i for i in chunks}
        for future in as_completed(futures):
            finished(futures[future], future.result())
    elif workers > 1 and len(chunks) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = {pool.submit(generate_chunk, config, i): i for i in chunks}
            for future in concurrent.futures.as_completed(futures):
                finished(futures[future], future.result())
    else:
        for i in chunks:
            finished(i, generate_chunk(config, i))
    return [path for i in chunks for path in results[i]]
