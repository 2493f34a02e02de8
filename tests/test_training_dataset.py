"""The streaming dataset: chunks, shuffling, partitioning, splits, filters, balancing, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.training.dataset import JetStream, assign_split, expand_files, inspect_shards
from rs3l_coffea.training.ntuple import write_shards
from rs3l_coffea.training.toy import toy_pair_rows

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list:
    out = tmp_path_factory.mktemp("ntuple")
    rows = toy_pair_rows(300, seed=5, variants=("seed", "fsr_up"))
    write_shards(rows, out, shard_size=170)
    return inspect_shards(expand_files([str(out / "shard_*.root")]))


def _ids(stream: JetStream) -> list[tuple[int, int]]:
    return [
        (int(e), int(v))
        for batch in stream
        for e, v in zip(batch["hard_event_id"], batch["variant"], strict=True)
    ]


def test_split_is_a_pure_function_of_the_event_id() -> None:
    ids = np.arange(20000)
    pool, split = assign_split(ids, pretrain_fraction=0.5, val_fraction=0.1, test_fraction=0.2)
    again_pool, again_split = assign_split(ids[::-1], 0.5, 0.1, 0.2)
    np.testing.assert_array_equal(pool, again_pool[::-1])
    np.testing.assert_array_equal(split, again_split[::-1])
    assert abs(np.mean(pool == "pretrain") - 0.5) < 0.02
    finetune = pool == "finetune"
    assert abs(np.mean(split[finetune] == "val") - 0.1) < 0.02
    assert abs(np.mean(split[finetune] == "test") - 0.2) < 0.02
    salted, _ = assign_split(ids, 0.5, 0.1, 0.2, salt=1)
    assert np.mean(salted != pool) > 0.3


def test_splits_and_pools_are_disjoint_by_hard_event(shards: list) -> None:
    seen: dict[tuple[str, str], set[int]] = {}
    for pool in ("pretrain", "finetune"):
        for split in ("train", "val", "test"):
            stream = JetStream(shards, mode="pairs", split=split, pool=pool, batch_size=5, drop_last=False)
            seen[pool, split] = {e for e, _ in _ids(stream)}
    union = set().union(*seen.values())
    assert sum(len(s) for s in seen.values()) == len(union) == 300
    # Both variants of an event travel together.
    stream = JetStream(shards, mode="pairs", split="train", pool="pretrain", batch_size=5, drop_last=False)
    counts = Counter(e for e, _ in _ids(stream))
    assert set(counts.values()) == {2}


def test_workers_and_ranks_read_disjoint_rows_covering_everything(shards: list) -> None:
    reference = sorted(_ids(JetStream(shards, mode="pairs", split=None, batch_size=7, drop_last=False, step_size=40)))
    assert len(reference) == 600
    got = []
    for rank in range(2):
        stream = JetStream(
            shards, mode="pairs", split=None, batch_size=7, drop_last=False, step_size=40, rank=rank, world_size=2
        )
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        got += [
            (int(e), int(v))
            for batch in loader
            for e, v in zip(batch["hard_event_id"], batch["variant"], strict=True)
        ]
    assert sorted(got) == reference


def test_stream_is_deterministic_per_epoch_and_shuffled(shards: list) -> None:
    stream = JetStream(shards, mode="pairs", split=None, batch_size=10, shuffle_buffer=50, step_size=60, seed=3)
    first = _ids(stream)
    assert first == _ids(stream)
    stream.set_epoch(1)
    second = _ids(stream)
    assert first != second and sorted(first) == sorted(second)
    # Shuffled: not in file order, and batches are full (drop_last).
    assert first != sorted(first)
    assert len(first) == 600


def test_variant_filter_and_jets_mode(shards: list) -> None:
    only_fsr = _ids(JetStream(shards, mode="pairs", split=None, variants=["fsr_up"], batch_size=10, drop_last=False))
    assert {v for _, v in only_fsr} == {1} and len(only_fsr) == 300
    nominal_only = JetStream(
        shards, mode="jets", split=None, batch_size=10, drop_last=False, use_partner_jets=False
    )
    events = _ids(nominal_only)
    assert len(events) == 300 and {v for _, v in events} == {-1}
    mixed = _ids(JetStream(shards, mode="jets", split=None, variants=["seed"], batch_size=10, drop_last=False))
    assert Counter(v for _, v in mixed) == {-1: 300, 0: 300}


def test_class_balancing_gives_equal_counts(tmp_path: Path) -> None:
    rows = toy_pair_rows(200, seed=2)
    rows["label"] = np.where(np.arange(200) % 5 == 0, 1, 0).astype(np.int32)  # 20% class 1
    write_shards(rows, tmp_path, shard_size=1000)
    infos = inspect_shards(expand_files([str(tmp_path)]))
    stream = JetStream(infos, mode="jets", split=None, batch_size=8, balance_classes=True, use_partner_jets=False)
    batches = list(stream)
    assert len(batches) == 40 // 4  # the minority class (40 jets, 4 per batch) limits the epoch
    for batch in batches:
        assert Counter(batch["label"].tolist()) == {0: 4, 1: 4}
    with pytest.raises(ConfigError, match="batch_size"):
        list(JetStream(infos, mode="jets", split=None, batch_size=1, n_classes=2, balance_classes=True))


def test_bad_inputs_fail_before_reading(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        expand_files([str(tmp_path / "nope.root")])
    with pytest.raises(InputFileError, match="matches"):
        expand_files([str(tmp_path / "*.root")])
    with pytest.raises(ConfigError, match=r"data\.files"):
        expand_files([])
    empty = {k: v[:0] for k, v in toy_pair_rows(2).items()}
    from rs3l_coffea.training.ntuple import _write_one_shard

    _write_one_shard(tmp_path / "shard_00000.root", empty)
    with pytest.raises(InputFileError, match="empty"):
        inspect_shards([tmp_path / "shard_00000.root"])
    write_shards(toy_pair_rows(3), tmp_path / "ok")
    with pytest.raises(InputFileError, match="15 features per particle but the model expects 12"):
        inspect_shards(expand_files([str(tmp_path / "ok")]), expected_features=12)
    (tmp_path / "bad.root").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match=r"bad\.root"):
        inspect_shards([tmp_path / "bad.root"])


def _reference_shuffled_batches(stream: JetStream) -> list[dict[str, np.ndarray]]:
    """The straightforward buffer (copied on every draw), with the stream's own random numbers."""
    rng = np.random.default_rng([stream.seed, stream.epoch, stream.rank, 0, 0xB0FFE7])
    buffer = None
    out = []
    for chunk in stream._rows(stream.units_for(stream.rank, stream.world_size)):
        buffer = chunk if buffer is None else {k: np.concatenate([buffer[k], chunk[k]]) for k in buffer}
        while len(buffer["label"]) >= stream.shuffle_buffer + stream.batch_size:
            chosen = rng.choice(len(buffer["label"]), size=stream.batch_size, replace=False)
            rest = np.ones(len(buffer["label"]), dtype=bool)
            rest[chosen] = False
            out.append({k: v[chosen] for k, v in buffer.items()})
            buffer = {k: v[rest] for k, v in buffer.items()}
    perm = rng.permutation(len(buffer["label"]))
    last = len(perm) - stream.batch_size + 1 if stream.drop_last else len(perm)
    out += [{k: v[perm[s : s + stream.batch_size]] for k, v in buffer.items()} for s in range(0, max(last, 0), stream.batch_size)]
    return out


@pytest.mark.parametrize("drop_last", [True, False])
def test_position_buffer_gives_the_batches_of_a_copied_buffer(shards: list, drop_last: bool) -> None:
    # Draws only move buffer positions (no copy of the whole buffer per batch); the batches
    # must be exactly those of the copying buffer: same rows, same order, same bytes.
    stream = JetStream(
        shards, mode="pairs", split=None, batch_size=16, shuffle_buffer=40, step_size=50,
        drop_last=drop_last, seed=3,
    )
    stream.set_epoch(2)
    ours = list(stream)
    reference = _reference_shuffled_batches(stream)
    assert len(ours) == len(reference) > 5
    for batch, expected in zip(ours, reference, strict=True):
        for key in ("x", "mask", "x_partner", "mask_partner", "hard_event_id", "variant"):
            assert np.array_equal(batch[key].numpy(), expected[key]), key


def test_prefetch_thread_gives_the_same_batches_and_stops_with_the_consumer(shards: list) -> None:
    import threading

    def stream(prefetch: int) -> JetStream:
        return JetStream(shards, mode="pairs", split=None, batch_size=16, shuffle_buffer=40, seed=4, prefetch=prefetch)

    direct = list(stream(0))
    ahead = list(stream(3))
    assert len(direct) == len(ahead) > 5
    for a, b in zip(direct, ahead, strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["hard_event_id"], b["hard_event_id"])
    iterator = iter(stream(2))
    next(iterator)
    iterator.close()  # the consumer stops early: the producer thread must end, not leak
    assert not any(t.name == "JetStream-prefetch" for t in threading.enumerate())


def test_prefetch_thread_reraises_read_errors(tmp_path: Path) -> None:
    out = tmp_path / "ntuple"
    write_shards(toy_pair_rows(60, seed=6, variants=("seed",)), out, shard_size=60)
    infos = inspect_shards(expand_files([str(out / "shard_*.root")]))
    infos[0].path.write_bytes(b"not a ROOT file any more")
    with pytest.raises(InputFileError, match=r"shard_00000\.root"):
        list(JetStream(infos, mode="pairs", split=None, batch_size=8, prefetch=2))


def test_read_cache_gives_the_same_batches_and_decompresses_each_chunk_once(shards: list, monkeypatch) -> None:
    """``read_cache_mb``: memory, not results. Every epoch (and the validation stream) of a
    cached stream gives the batches of an uncached one; the second epoch opens no file."""
    import uproot

    from rs3l_coffea.training import dataset

    monkeypatch.setattr(dataset, "_READ_CACHE", dataset.ReadCache())
    opened: list[str] = []
    real_open = uproot.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(uproot, "open", counting_open)

    def batches(cache_mb: int, epoch: int, split: str = "train") -> list[dict]:
        stream = JetStream(shards, mode="jets", split=split, pool="finetune", batch_size=8, step_size=50,
                           seed=3, read_cache_mb=cache_mb, balance_classes=split == "train",
                           drop_last=split == "train")
        stream.set_epoch(epoch)
        return list(stream)

    for epoch in (0, 1):
        plain = batches(0, epoch)
        before = len(opened)
        cached = batches(64, epoch)
        if epoch == 1:
            assert len(opened) == before  # every chunk came from memory
        assert len(plain) == len(cached) > 2
        for a, b in zip(plain, cached, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), k
    before = len(opened)
    validation = batches(64, 0, split="val")  # the same chunks, another selection: still no reads
    assert len(opened) == before and validation
    for a, b in zip(batches(0, 0, split="val"), validation, strict=True):
        assert torch.equal(a["x"], b["x"])

    # a budget smaller than the data evicts, results unchanged; a rewritten file is read anew
    small = dataset.ReadCache()
    monkeypatch.setattr(dataset, "_READ_CACHE", small)
    for a, b in zip(batches(0, 2), batches(1, 2), strict=True):
        assert torch.equal(a["x"], b["x"])
    assert small._bytes <= 1 << 20


def test_cached_arrays_are_read_only() -> None:
    from rs3l_coffea.training.dataset import ReadCache

    cache = ReadCache()
    arrays = {"x": np.zeros(4)}
    cache.put(("k",), arrays, 1 << 20)
    found = cache.get(("k",))
    assert found is not None
    with pytest.raises(ValueError):
        found["x"][0] = 1.0
    cache.put(("big",), {"x": np.zeros(1 << 18)}, 1 << 10)  # larger than the budget: not kept
    assert cache.get(("big",)) is None
