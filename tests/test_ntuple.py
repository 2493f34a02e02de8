"""Training ntuples: jet matching, pair rows, sharded ROOT output, the published h5 layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import uproot

from rs3l_coffea.errors import InputFileError
from rs3l_coffea.features.names import N_FEATURES
from rs3l_coffea.training.ntuple import (
    BRANCHES,
    TREE_NAME,
    JetTable,
    build_pair_rows,
    match_jets,
    read_published_h5,
    write_shards,
)


def _table(event_ids, etas, phis, labels=None, seed=0) -> JetTable:
    n = len(event_ids)
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 100, N_FEATURES)).astype(np.float32)
    mask = np.zeros((n, 100), bool)
    mask[:, :10] = True
    return JetTable(
        hard_event_id=np.asarray(event_ids, np.int64),
        jet_index=np.arange(n, dtype=np.int32),
        pt=np.full(n, 500.0, np.float32),
        eta=np.asarray(etas, np.float64),
        phi=np.asarray(phis, np.float64),
        mass=np.full(n, 100.0, np.float32),
        features=features,
        mask=mask,
        label=np.asarray(labels if labels is not None else np.zeros(n), np.int32),
    )


def test_match_jets_by_event_and_delta_r_with_phi_wrap() -> None:
    # Event 7: two jets, one at phi ≈ +π whose counterpart sits at phi ≈ -π (ΔR = 0.02 + 0.01).
    # Event 9: the variant lost one jet and has an extra one far away. Event 11: no variant jets.
    nominal = _table([7, 7, 9, 9, 11], [0.0, 1.0, -1.0, 0.5, 0.0], [math.pi - 0.01, 0.0, 1.0, 2.0, 0.0])
    variant = _table(
        [9, 7, 9, 7, 3],
        [-1.03, 1.02, 0.5, 0.02, 0.0],
        [1.04, 0.0, -1.0, -math.pi + 0.01, 0.0],
    )
    a, b, dr = match_jets(nominal, variant, max_delta_r=0.4)
    assert a.tolist() == [0, 1, 2]
    assert b.tolist() == [3, 1, 0]
    assert dr == pytest.approx([math.hypot(0.02, 0.02), 0.02, math.hypot(0.03, 0.04)], abs=1e-9)


def test_match_is_one_to_one_and_greedy_in_delta_r() -> None:
    # Two nominal jets both closest to variant jet 0; the closer one wins, the other takes jet 1.
    nominal = _table([1, 1], [0.0, 0.1], [0.0, 0.0])
    variant = _table([1, 1], [0.08, 0.35], [0.0, 0.0])
    a, b, _ = match_jets(nominal, variant)
    assert dict(zip(a.tolist(), b.tolist(), strict=True)) == {1: 0, 0: 1}


def test_pair_rows_rank_and_unmatched_nominal_jets() -> None:
    nominal = _table([1, 2], [0.0, 0.0], [0.0, 0.0], labels=[1, 0])
    seed = _table([1, 2], [0.01, 0.01], [0.0, 0.0], seed=1)
    fsr = _table([1], [0.02], [0.0], seed=2)
    rows = build_pair_rows(nominal, {"fsr_up": fsr, "seed": seed})
    assert rows["hard_event_id"].tolist() == [1, 1, 2]
    assert rows["variant"].tolist() == [0, 1, 0]
    assert rows["pair_rank"].tolist() == [0, 1, 0]
    assert rows["label"].tolist() == [1, 1, 0]
    np.testing.assert_array_equal(rows["partner_features"][1], fsr.features[0])
    np.testing.assert_array_equal(rows["features"][2], nominal.features[1])
    # A nominal jet with no counterpart keeps one row with variant -1 (usable for fine-tuning).
    lonely = build_pair_rows(nominal, {"seed": _table([1], [0.0], [0.0])})
    assert lonely["variant"].tolist() == [0, -1]
    assert lonely["pair_rank"].tolist() == [0, 0]
    assert not lonely["partner_mask"][1].any()


def test_write_shards_round_trip(tmp_path: Path) -> None:
    nominal = _table(list(range(7)), np.zeros(7), np.zeros(7), labels=[0, 1, 0, 1, 0, 1, 0])
    seed = _table(list(range(7)), np.full(7, 0.01), np.zeros(7), seed=3)
    rows = build_pair_rows(nominal, {"seed": seed})
    shards = write_shards(rows, tmp_path / "nt", shard_size=3)
    assert [p.name for p in shards] == ["shard_00000.root", "shard_00001.root", "shard_00002.root"]
    assert not [p for p in (tmp_path / "nt").iterdir() if ".tmp" in p.name]
    meta = json.loads((tmp_path / "nt" / "ntuple.json").read_text())
    assert [s["rows"] for s in meta["shards"]] == [3, 3, 1]
    assert meta["variant_codes"]["vincia_althad"] == 3 and meta["n_features"] == N_FEATURES
    read = {k: [] for k in BRANCHES}
    for path in shards:
        with uproot.open(path) as handle:
            tree = handle[TREE_NAME]
            assert tree.typenames()["features"] == f"float[100][{N_FEATURES}]"
            arrays = tree.arrays(list(BRANCHES), library="np")
        for k in BRANCHES:
            read[k].append(arrays[k])
    for k in BRANCHES:
        np.testing.assert_array_equal(np.concatenate(read[k]), rows[k])


def _write_published_h5(path: Path, n_pairs: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    import h5py

    features = np.zeros((2 * n_pairs, 100, N_FEATURES), np.float32)
    counts = rng.integers(3, 30, size=2 * n_pairs)
    for i, c in enumerate(counts):
        features[i, :c] = rng.normal(size=(c, N_FEATURES)) + 0.1
        features[i, :c, 5] = rng.uniform(0.01, 0.5, size=c)  # published column 5: linear E / E_jet
    vartype = np.empty(2 * n_pairs, np.int32)
    vartype[0::2] = -1
    vartype[1::2] = rng.integers(0, 4, size=n_pairs)
    truth = np.repeat(rng.integers(0, 2, size=n_pairs), 2)
    jettype = np.repeat(rng.integers(1, 9, size=n_pairs), 2)
    with h5py.File(path, "w") as handle:
        handle["features"] = features
        handle["truth_label"] = truth
        handle["jettype"] = jettype
        handle["vartype"] = vartype
    return {"features": features, "counts": counts, "vartype": vartype, "truth": truth, "jettype": jettype}


def test_read_published_h5_layout(tmp_path: Path) -> None:
    written = _write_published_h5(tmp_path / "rs3l.h5", 6, np.random.default_rng(1))
    rows = read_published_h5(tmp_path / "rs3l.h5")
    expected = written["features"].copy()
    real = expected[..., 5] != 0
    expected[..., 5][real] = np.log(expected[..., 5][real])  # published E / E_jet -> our log_e_rel
    for got, want in ((rows["features"], expected[0::2]), (rows["partner_features"], expected[1::2])):
        np.testing.assert_allclose(got[..., 5], want[..., 5], rtol=1e-6)
        np.testing.assert_array_equal(np.delete(got, 5, axis=2), np.delete(want, 5, axis=2))
    assert rows["mask"].sum(axis=1).tolist() == written["counts"][0::2].tolist()
    assert rows["partner_mask"].sum(axis=1).tolist() == written["counts"][1::2].tolist()
    assert rows["variant"].tolist() == written["vartype"][1::2].tolist()
    assert rows["label"].tolist() == written["truth"][0::2].tolist()
    assert rows["jettype"].tolist() == written["jettype"][0::2].tolist()
    assert len(set(rows["hard_event_id"].tolist())) == 6


def test_read_published_h5_rejects_bad_layouts(tmp_path: Path) -> None:
    import h5py

    with pytest.raises(InputFileError, match="does not exist"):
        read_published_h5(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputFileError, match=r"junk\.h5"):
        read_published_h5(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "nolabel.h5", "w") as handle:
        handle["features"] = np.zeros((2, 100, N_FEATURES), np.float32)
    with pytest.raises(InputFileError, match="truth_label"):
        read_published_h5(tmp_path / "nolabel.h5")
    with h5py.File(tmp_path / "order.h5", "w") as handle:
        handle["features"] = np.zeros((2, 100, N_FEATURES), np.float32)
        handle["truth_label"] = np.zeros(2)
        handle["vartype"] = np.asarray([0, -1])
    with pytest.raises(InputFileError, match="row 0 should be a nominal jet"):
        read_published_h5(tmp_path / "order.h5")
    with h5py.File(tmp_path / "width.h5", "w") as handle:
        handle["features"] = np.zeros((2, 100, 12), np.float32)
        handle["truth_label"] = np.zeros(2)
        handle["vartype"] = np.asarray([-1, 0])
    with pytest.raises(InputFileError, match=r"\(N, P, 15\)"):
        read_published_h5(tmp_path / "width.h5")


def test_variant_codes_agree_with_the_generator() -> None:
    from rs3l_coffea.generation.config import VARIANTS
    from rs3l_coffea.variants import VARIANT_CODES

    assert VARIANT_CODES == {name: code for name, (code, _settings) in VARIANTS.items()}
    from typing import get_args

    from rs3l_coffea.training.config import AugmentationName
    from rs3l_coffea.variants import AUGMENTATION_VARIANTS

    # the type the configs validate against spells out the same names as the list
    assert get_args(AugmentationName) == AUGMENTATION_VARIANTS


def test_rs3l_ntuple_cli_on_published_h5_and_bad_inputs(tmp_path: Path, coffea_sample) -> None:
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app
    from rs3l_coffea.training.build import build_ntuples

    for i in range(2):
        _write_published_h5(tmp_path / f"part{i}.h5", 5, np.random.default_rng(i))
    runner = CliRunner()
    result = runner.invoke(app, ["ntuple", "--in", str(tmp_path / "part*.h5"), "--out", str(tmp_path / "nt"),
                                 "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    rows = uproot.concatenate(f"{tmp_path}/nt/shard_*.root:rs3l", ["hard_event_id", "variant"], library="np")
    assert len(rows["variant"]) == 10 and len(set(rows["hard_event_id"].tolist())) == 10

    # A Delphes file that rs3l generate did not write has no hard-event ids to pair by.
    with pytest.raises(InputFileError, match=r"Event/Event\.HardEventID"):
        build_ntuples([coffea_sample("delphes.root")], tmp_path / "x")
    with pytest.raises(InputFileError, match=r"bad_delphes\.root"):
        build_ntuples([coffea_sample("bad_delphes.root")], tmp_path / "y")
    with pytest.raises(InputFileError, match="no input file matches"):
        build_ntuples([str(tmp_path / "none*.root")], tmp_path / "z")
    result = runner.invoke(app, ["ntuple", "--in", str(tmp_path / "missing.root"), "--out", str(tmp_path / "w")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


def test_unpaired_pfnano_ntuple_pretrains_with_symmetry_partners(tmp_path: Path, coffea_sample) -> None:
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app
    from rs3l_coffea.nn import load_model

    runner = CliRunner()
    result = runner.invoke(app, ["ntuple", "--in", str(coffea_sample("pfnano.root")), "--out", str(tmp_path / "nt"),
                                 "--unpaired", "--selection", "permissive"])
    assert result.exit_code == 0, result.output
    rows = uproot.concatenate(f"{tmp_path}/nt/shard_*.root:rs3l", ["variant", "pair_rank", "mask"], library="np")
    assert (rows["variant"] == -1).all() and (rows["pair_rank"] == 0).all() and rows["mask"].any(axis=1).all()
    result = runner.invoke(app, [
        "train", "pretrain", "--data", str(tmp_path / "nt"), "--out", str(tmp_path / "pre"), "--epochs", "1",
        "--batch-size", "4", "--augmentations", "rotate,split", "--quiet", "-s", "threads=1",
        "-s", "model={backbone: {width: 8, k: 4, conv_layers: 1, output_hidden: [8]}}",
        "-s", "data.pretrain_fraction=1.0", "-s", "data.val_fraction=0.0", "-s", "data.test_fraction=0.0",
    ])
    assert result.exit_code == 0, result.output
    _model, card = load_model(tmp_path / "pre" / "model.safetensors")
    assert card.training["config"]["data"]["partner"] == "symmetry"
    assert card.training["config"]["data"]["symmetry_augmentations"] == ["rotate", "split"]


def test_read_published_h5_refuses_rows_already_in_our_convention(tmp_path: Path) -> None:
    """Our log_e_rel is negative; the published E / E_jet is positive: such a file is named, not misread."""
    written = _write_published_h5(tmp_path / "ours.h5", 2, np.random.default_rng(4))
    import h5py

    features = written["features"].copy()
    features[0, 0, 5] = -2.3  # a log(E / E_jet) value in the published column
    with h5py.File(tmp_path / "ours.h5", "r+") as handle:
        handle["features"][...] = features
    with pytest.raises(InputFileError, match=r"ours\.h5: published features: e_rel = -2\.29.* at jet 0, particle 0"):
        read_published_h5(tmp_path / "ours.h5")


def test_shards_are_written_in_small_baskets_and_old_shards_rebasket_losslessly(tmp_path: Path, monkeypatch) -> None:
    """A reader decompresses whole baskets: shards must not be one basket (see BASKET_ROWS)."""
    from rs3l_coffea.training import ntuple

    monkeypatch.setattr(ntuple, "BASKET_ROWS", 4)
    n = 11
    nominal = _table(list(range(n)), np.zeros(n), np.zeros(n), labels=[i % 2 for i in range(n)])
    rows = build_pair_rows(nominal, {"seed": _table(list(range(n)), np.full(n, 0.01), np.zeros(n), seed=3)})
    (shard,) = write_shards(rows, tmp_path / "nt", shard_size=100)
    with uproot.open(shard) as handle:
        assert list(handle[TREE_NAME]["features"].entry_offsets) == [0, 4, 8, 11]
    assert ntuple.largest_basket_rows(shard) == 4
    assert ntuple.rebasket_shard(shard) is False  # already small: left alone

    # a shard of the former layout: one basket for all rows
    monkeypatch.setattr(ntuple, "BASKET_ROWS", 1000)
    old = tmp_path / "old.root"
    ntuple._write_one_shard(old, rows)
    assert ntuple.largest_basket_rows(old) == n
    monkeypatch.setattr(ntuple, "BASKET_ROWS", 3)
    assert ntuple.rebasket_shard(old) is True
    assert ntuple.largest_basket_rows(old) == 3
    with uproot.open(old) as handle:
        again = handle[TREE_NAME].arrays(list(BRANCHES), library="np")
    for k in BRANCHES:  # a lossless re-encoding: the very same values
        np.testing.assert_array_equal(again[k], rows[k])


def test_training_stream_warns_about_shards_of_huge_baskets(tmp_path: Path, monkeypatch) -> None:
    from rs3l_coffea.training import ntuple
    from rs3l_coffea.training.dataset import JetStream, inspect_shards

    n = 30
    rows = build_pair_rows(_table(list(range(n)), np.zeros(n), np.zeros(n)),
                           {"seed": _table(list(range(n)), np.full(n, 0.01), np.zeros(n), seed=3)})
    monkeypatch.setattr(ntuple, "BASKET_ROWS", 1000)
    old = tmp_path / "old.root"
    ntuple._write_one_shard(old, rows)  # one basket of 30 rows
    monkeypatch.setattr(ntuple, "BASKET_ROWS", 5)
    with pytest.warns(UserWarning, match=r"baskets of up to 30 rows.*rebasket_shard"):
        JetStream(inspect_shards([old]), mode="pairs", step_size=5)
    ntuple.rebasket_shard(old)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        JetStream(inspect_shards([old]), mode="pairs", step_size=5)
