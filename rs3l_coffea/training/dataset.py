"""Streaming training data: ntuple shards read in chunks, shuffled in a buffer, batched.

The stream never holds the data set in memory: work units of ``step_size`` rows are read with
uproot one at a time, rows pass a buffer of ``shuffle_buffer`` rows and leave as whole batches.

Determinism: the order of work units, the shuffle buffer and class balancing draw from numpy
generators seeded by ``(seed, epoch, rank, worker)``, never from global RNG state, so the
stream of an epoch is a pure function of its configuration. Resuming skips the batches already
consumed (see ``Trainer``).

Partitioning: work units are dealt round-robin over ``world_size x num_workers`` streams, so
DDP ranks and DataLoader workers read disjoint rows and every row is read once per epoch.

Splits: every hard event goes wholly to one pool (pretrain / finetune) and one split
(train / val / test), decided by a 64-bit hash of its id: re-simulated partners of the same
event can never end up on both sides.
"""

from __future__ import annotations

import glob
import queue
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.training.ntuple import TREE_NAME
from rs3l_coffea.variants import VARIANT_CODES

Split = Literal["train", "val", "test"]
Pool = Literal["pretrain", "finetune", "all"]
Mode = Literal["pairs", "jets"]

T = TypeVar("T")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fixed, platform-independent 64-bit mix."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return z ^ (z >> np.uint64(31))


def event_uniform(hard_event_id: np.ndarray, salt: int = 0) -> np.ndarray:
    """A deterministic uniform number in [0, 1) per hard-event id (same id → same number)."""
    ids = np.asarray(hard_event_id, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(ids ^ _splitmix64(np.asarray([salt], dtype=np.uint64))[0])
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_split(
    hard_event_id: np.ndarray,
    pretrain_fraction: float = 0.5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    salt: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool (``"pretrain"``/``"finetune"``) and split (``"train"``/``"val"``/``"test"``) per id."""
    u = event_uniform(hard_event_id, salt)
    in_pretrain = u < pretrain_fraction
    # Re-scale u inside its pool so the split fractions hold within each pool.
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(in_pretrain, u / pretrain_fraction, (u - pretrain_fraction) / (1 - pretrain_fraction))
    pool = np.where(in_pretrain, "pretrain", "finetune")
    split = np.where(v < val_fraction, "val", np.where(v < val_fraction + test_fraction, "test", "train"))
    return pool, split


def expand_files(patterns: Sequence[str]) -> list[Path]:
    """Expand globs; a pattern that matches nothing or a path that does not exist is an error."""
    if not patterns:
        raise ConfigError("config key data.files: no ntuple files given")
    files: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matched = sorted(glob.glob(pattern))
            if not matched:
                raise InputFileError(f"no ntuple file matches {pattern!r}")
            files.extend(Path(m) for m in matched)
        else:
            path = Path(pattern)
            if path.is_dir():
                shards = sorted(path.glob("shard_*.root"))
                if not shards:
                    raise InputFileError(f"ntuple directory {path} holds no shard_*.root files")
                files.extend(shards)
            elif not path.is_file():
                raise InputFileError(f"ntuple file {path} does not exist")
            else:
                files.append(path)
    return files


class ReadCache:
    """Decompressed ntuple chunks by (file identity, rows, branches), least recently used first out.

    One per process (the train and validation streams of a training share it). The arrays are
    read-only: what a later read returns is bit for bit what the first read returned.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[object, ...], dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(path: Path, start: int, stop: int, branches: Sequence[str]) -> tuple[object, ...]:
        stat = path.stat()  # a rewritten file (other inode, size or time) is a new entry
        return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, start, stop, tuple(branches))

    def get(self, key: tuple[object, ...]) -> dict[str, np.ndarray] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[object, ...], arrays: dict[str, np.ndarray], budget_bytes: int) -> None:
        size = sum(a.nbytes for a in arrays.values())
        if size > budget_bytes:
            return
        for array in arrays.values():
            array.flags.writeable = False
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = arrays
            self._bytes += size
            while self._bytes > budget_bytes:
                _old, evicted = self._entries.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in evicted.values())


_READ_CACHE = ReadCache()


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    entries: int
    n_features: int
    max_particles: int
    #: Most rows in one basket of ``features`` (a read decompresses whole baskets).
    basket_rows: int = 0


def inspect_shards(files: Sequence[Path], expected_features: int | None = None) -> list[ShardInfo]:
    """Open every shard once: tree present, branches present, not empty, feature count right."""
    from rs3l_coffea.io import open_tree
    from rs3l_coffea.training.ntuple import BRANCHES

    infos = []
    for path in files:
        with open_tree(path, TREE_NAME, what="ntuple shard") as opened:
            tree = opened.tree
            missing = [b for b in BRANCHES if b not in tree]
            if missing:
                raise InputFileError(f"ntuple shard {path} lacks the branches {missing}")
            if tree.num_entries == 0:
                raise InputFileError(f"ntuple shard {path} is empty (0 rows)")
            shape = tree["features"].interpretation.inner_shape
            if len(shape) != 2:
                raise InputFileError(f"ntuple shard {path}: branch 'features' has shape {shape}, expected (P, F)")
            max_particles, n_features = shape
            if expected_features is not None and n_features != expected_features:
                raise InputFileError(
                    f"ntuple shard {path} has {n_features} features per particle but the model "
                    f"expects {expected_features}"
                )
            basket_rows = int(np.diff(np.asarray(tree["features"].entry_offsets)).max())
            infos.append(ShardInfo(Path(path), tree.num_entries, n_features, max_particles, basket_rows))
    return infos


class JetStream(IterableDataset):
    """Batches from ntuple shards; use with ``DataLoader(stream, batch_size=None)``.

    ``mode="pairs"``: batches of ``(x, mask, x_partner, mask_partner, variant, label)`` from rows
    whose partner variant is in ``variants`` (pretraining).
    With ``require_partner=False`` (symmetry-only partners) every nominal jet is used once.
    ``mode="jets"``: batches of ``(x, mask, label)``: every nominal jet once (``pair_rank == 0``)
    and, if ``use_partner_jets``, the re-simulated partner jets of the selected variants as
    further labelled jets (the augmentation mix); labels outside ``[0, n_classes)`` are dropped.
    ``balance_classes`` makes every batch hold the same number of jets of each class (the
    majority classes are under-sampled through a capped, randomly-replaced buffer).

    ``prefetch``: batches prepared ahead in a background thread (reading, decompression,
    selection and shuffling overlap the training step; 0: none). The sequence of batches is the
    same either way; an error while reading reaches the consumer with its original type.

    Every batch is a dict of tensors; with ``drop_last`` (training) the last, incomplete batch of
    an epoch is dropped so that all steps see ``batch_size`` pairs/jets; validation keeps it.
    """

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        *,
        mode: Mode,
        split: Split | None = "train",
        pool: Pool = "all",
        variants: Sequence[str] = ("seed", "fsr_up", "fsr_down", "vincia_althad", "vincia"),
        batch_size: int = 100,
        shuffle_buffer: int = 2000,
        step_size: int = 1000,
        n_classes: int = 2,
        balance_classes: bool = False,
        use_partner_jets: bool = True,
        require_partner: bool = True,
        drop_last: bool = True,
        pretrain_fraction: float = 0.5,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_salt: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 2,
        read_cache_mb: int = 0,
    ) -> None:
        super().__init__()
        if not shards:
            raise InputFileError("no ntuple shards to read")
        self.shards = list(shards)
        self.mode = mode
        self.split = split
        self.pool = pool
        self.variant_codes = np.asarray([VARIANT_CODES[v] for v in variants], dtype=np.int32)
        self.batch_size = batch_size
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.step_size = step_size
        self.n_classes = n_classes
        self.balance_classes = balance_classes
        self.use_partner_jets = use_partner_jets
        self.require_partner = require_partner
        self.drop_last = drop_last
        self.pretrain_fraction = pretrain_fraction
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_salt = split_salt
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.prefetch = prefetch
        self.read_cache_bytes = read_cache_mb << 20
        self.epoch = 0
        from rs3l_coffea.training import ntuple

        # Baskets up to the writer's size are expected; far larger ones are the former one-basket layout.
        oversized = [info for info in self.shards if info.basket_rows > max(4 * step_size, ntuple.BASKET_ROWS)]
        if oversized:
            warnings.warn(
                f"{len(oversized)} ntuple shard(s), e.g. {oversized[0].path}, have baskets of up to "
                f"{max(i.basket_rows for i in oversized)} rows: every read of {step_size} rows decompresses "
                "whole baskets, which can dominate a training step; rewrite them with "
                "rs3l_coffea.training.ntuple.rebasket_shard (same rows and values)",
                stacklevel=2,
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) order the next iteration produces."""
        self.epoch = epoch

    # --- partitioning ------------------------------------------------------------------------

    def work_units(self) -> list[tuple[int, int, int]]:
        """All ``(shard, start, stop)`` units of the epoch, in the epoch's shuffled order."""
        units = [
            (i, start, min(start + self.step_size, info.entries))
            for i, info in enumerate(self.shards)
            for start in range(0, info.entries, self.step_size)
        ]
        order = np.random.default_rng([self.seed, self.epoch, 0xC0FFEE]).permutation(len(units))
        return [units[k] for k in order]

    def units_for(self, stream_index: int, n_streams: int) -> list[tuple[int, int, int]]:
        return self.work_units()[stream_index::n_streams]

    # --- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream_index = self.rank * n_workers + worker
        n_streams = self.world_size * n_workers
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 0xB0FFE7])
        rows = self._rows(self.units_for(stream_index, n_streams))
        if self.balance_classes and self.mode == "jets":
            batches = self._balanced_batches(rows, rng)
        else:
            batches = self._shuffled_batches(rows, rng)
        yield from (_prefetched(batches, self.prefetch) if self.prefetch > 0 else batches)

    def _read(self, unit: tuple[int, int, int]) -> dict[str, np.ndarray]:
        import uproot

        shard, start, stop = unit
        path = self.shards[shard].path
        branches = ["features", "mask", "variant", "pair_rank", "hard_event_id", "label"]
        if self.mode == "pairs" or self.use_partner_jets:
            branches += ["partner_features", "partner_mask"]
        try:
            key = ReadCache.key(path, start, stop, branches) if self.read_cache_bytes else None
            cached = None if key is None else _READ_CACHE.get(key)
            if cached is not None:
                return dict(cached)
            with uproot.open(path) as handle:
                arrays = handle[TREE_NAME].arrays(branches, entry_start=start, entry_stop=stop, library="np")
        except Exception as error:
            raise InputFileError(f"reading rows {start}:{stop} of ntuple shard {path} failed: {error}") from error
        if key is not None:
            _READ_CACHE.put(key, arrays, self.read_cache_bytes)
        return dict(arrays)

    def _select(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
        keep = np.ones(len(chunk["variant"]), dtype=bool)
        if self.split is not None or self.pool != "all":
            pool, split = assign_split(
                chunk["hard_event_id"], self.pretrain_fraction, self.val_fraction,
                self.test_fraction, self.split_salt,
            )
            if self.split is not None:
                keep &= split == self.split
            if self.pool != "all":
                keep &= pool == self.pool
        return keep

    def _rows(self, units: Sequence[tuple[int, int, int]]) -> Iterator[dict[str, np.ndarray]]:
        """Yield the selected rows of each unit as column dicts (x, mask, [partner], label, variant)."""
        for unit in units:
            chunk = self._read(unit)
            keep = self._select(chunk)
            in_variants = np.isin(chunk["variant"], self.variant_codes)
            if self.mode == "pairs":
                # Without a re-simulated partner (symmetry-only pretraining) every nominal jet once.
                sel = keep & (in_variants if self.require_partner else chunk["pair_rank"] == 0)
                yield {
                    "x": chunk["features"][sel],
                    "mask": chunk["mask"][sel],
                    "x_partner": chunk["partner_features"][sel],
                    "mask_partner": chunk["partner_mask"][sel],
                    "variant": chunk["variant"][sel],
                    "label": chunk["label"][sel],
                    "hard_event_id": chunk["hard_event_id"][sel],
                }
                continue
            labelled = keep & (chunk["label"] >= 0) & (chunk["label"] < self.n_classes)
            nominal = labelled & (chunk["pair_rank"] == 0)
            parts = [
                {
                    "x": chunk["features"][nominal],
                    "mask": chunk["mask"][nominal],
                    "label": chunk["label"][nominal],
                    "variant": np.full(int(nominal.sum()), -1, np.int32),
                    "hard_event_id": chunk["hard_event_id"][nominal],
                }
            ]
            if self.use_partner_jets:
                partner = labelled & in_variants
                parts.append(
                    {
                        "x": chunk["partner_features"][partner],
                        "mask": chunk["partner_mask"][partner],
                        "label": chunk["label"][partner],
                        "variant": chunk["variant"][partner],
                        "hard_event_id": chunk["hard_event_id"][partner],
                    }
                )
            yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _shuffled_batches(
        self, chunks: Iterator[dict[str, np.ndarray]], rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        # The buffer is ``storage`` rows at positions ``live`` (in buffer order). A draw takes
        # rows out of ``live`` only; ``storage`` is compacted when the next chunk arrives, so a
        # batch costs O(batch) instead of a copy of the whole buffer. The batches equal those of
        # drawing from a compacted buffer each time (same random numbers, same row order).
        storage: dict[str, np.ndarray] | None = None
        live = np.zeros(0, dtype=np.int64)
        for chunk in chunks:
            if storage is None:
                storage = chunk
            else:
                storage = {k: np.concatenate([storage[k][live], chunk[k]]) for k in storage}
            live = np.arange(len(storage["label"]))
            # Emit batches while the buffer is over-full; random draws without replacement.
            while len(live) >= self.shuffle_buffer + self.batch_size:
                live, chosen = _draw_positions(live, self.batch_size, rng)
                yield _to_tensors({k: v[chosen] for k, v in storage.items()})
        if storage is None:
            return
        perm = live[rng.permutation(len(live))]
        last_start = len(perm) if not self.drop_last else len(perm) - self.batch_size + 1
        for start in range(0, max(last_start, 0), self.batch_size):
            yield _to_tensors({k: v[perm[start : start + self.batch_size]] for k, v in storage.items()})

    def _balanced_batches(
        self, chunks: Iterator[dict[str, np.ndarray]], rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        per_class = self.batch_size // self.n_classes
        if per_class == 0:
            raise ConfigError(
                f"config key data.batch_size: {self.batch_size} is smaller than the number of classes "
                f"{self.n_classes}; class balancing needs at least one jet per class per batch"
            )
        cap = max(self.shuffle_buffer // self.n_classes, per_class)
        buffers: list[dict[str, np.ndarray] | None] = [None] * self.n_classes
        for chunk in chunks:
            for c in range(self.n_classes):
                rows = {k: v[chunk["label"] == c] for k, v in chunk.items()}
                current = buffers[c]
                current = rows if current is None else {k: np.concatenate([current[k], rows[k]]) for k in rows}
                excess = len(current["label"]) - cap
                if excess > 0:
                    # Under-sample the over-full class: keep a uniform random subset of size cap.
                    keep = np.sort(rng.choice(len(current["label"]), size=cap, replace=False))
                    current = {k: v[keep] for k, v in current.items()}
                buffers[c] = current
            while all(b is not None and len(b["label"]) >= per_class for b in buffers):
                parts = []
                for c in range(self.n_classes):
                    buffer = buffers[c]
                    assert buffer is not None  # the loop condition
                    buffers[c], part = _draw(buffer, per_class, rng)
                    parts.append(part)
                batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                perm = rng.permutation(len(batch["label"]))
                yield _to_tensors({k: v[perm] for k, v in batch.items()})


def _draw(
    buffer: dict[str, np.ndarray], n: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    size = len(buffer["label"])
    chosen = rng.choice(size, size=n, replace=False)
    rest = np.ones(size, dtype=bool)
    rest[chosen] = False
    return {k: v[rest] for k, v in buffer.items()}, {k: v[chosen] for k, v in buffer.items()}


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def _prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items`` produced by a daemon thread up to ``depth`` ahead; stops when the consumer does."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, re-raised there
            put(_Failure(error))

    worker = threading.Thread(target=produce, name="JetStream-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


def _draw_positions(live: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_draw` on an array of buffer positions: (remaining positions, drawn positions)."""
    chosen = rng.choice(len(live), size=n, replace=False)
    rest = np.ones(len(live), dtype=bool)
    rest[chosen] = False
    return live[rest], live[chosen]


def _to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = tensor.long() if key in ("label", "variant") else tensor
    return out
