"""Symmetry augmentations on awkward jets + constituents (real PFNano jets and hand-made ones), and
pretraining on PFNano jets with symmetry partners only.

References are independent: four-vector sums and ΔR from the ``vector`` library.
"""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import torch
import vector

from rs3l_coffea.augment import (
    CollinearSplit,
    Rotate,
    Translate,
    augment_constituents,
    augmented_features,
    build_augmentation,
)
from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features.names import FEATURE_INDEX as FI

torch.set_num_threads(1)
vector.register_awkward()


def constituent_sum(constituents: ak.Array) -> ak.Array:
    """Per-jet four-vector sum of constituents (vector library), events x jets."""
    momenta = ak.zip(
        {"pt": constituents.pt, "eta": constituents.eta, "phi": constituents.phi,
         "energy": constituents.energy},
        with_name="Momentum4D",
    )
    return ak.zip(
        {c: ak.sum(getattr(momenta, c), axis=-1) for c in ("px", "py", "pz", "E")},
        with_name="Momentum4D",
    )


def jet_vectors(jets: ak.Array) -> ak.Array:
    return ak.zip(
        {"pt": jets.pt, "eta": jets.eta, "phi": jets.phi, "mass": jets.mass}, with_name="Momentum4D"
    )


def test_split_on_real_pfnano_jets_conserves_four_momentum_and_fills_up_to_capacity(pfnano_jets):
    jets, constituents = pfnano_jets
    new_jets, new_constituents = augment_constituents(
        jets, constituents, CollinearSplit(), np.random.default_rng(1), max_particles=100
    )
    assert ak.to_list(ak.num(new_jets, axis=1)) == ak.to_list(ak.num(jets, axis=1))
    n_before = ak.to_numpy(ak.flatten(ak.num(constituents, axis=2)))
    n_after = ak.to_numpy(ak.flatten(ak.num(new_constituents, axis=2)))
    np.testing.assert_array_equal(n_after, np.maximum(n_before, np.minimum(2 * n_before, 100)))
    before, after = constituent_sum(constituents), constituent_sum(new_constituents)
    for component in ("px", "py", "pz", "E"):
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(getattr(after, component))),
            ak.to_numpy(ak.flatten(getattr(before, component))),
            rtol=1e-9, atol=1e-9,
        )
    # The jets themselves are unchanged (their momentum is conserved).
    for field in ("pt", "eta", "phi", "mass"):
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(new_jets[field])), ak.to_numpy(ak.flatten(jets[field])),
            rtol=1e-7, atol=1e-6,
        )
    # Carried integer fields keep their dtype; each split copy is one of the jet's particles.
    assert str(ak.type(new_constituents.pdg_id)).endswith("int32")
    old = {(p, c) for p, c in zip(ak.flatten(constituents.pdg_id, axis=None).tolist(),
                                  ak.flatten(constituents.charge, axis=None).tolist(), strict=True)}
    new = {(p, c) for p, c in zip(ak.flatten(new_constituents.pdg_id, axis=None).tolist(),
                                  ak.flatten(new_constituents.charge, axis=None).tolist(), strict=True)}
    assert new <= old
    pt = ak.flatten(new_constituents.pt, axis=1)
    assert ak.all(pt[:, :-1] >= pt[:, 1:]), "constituents not sorted by pT"


def test_rotation_keeps_pairwise_dr_and_jets_follow_their_constituents(pfnano_jets):
    jets, constituents = pfnano_jets
    new_jets, new_constituents = augment_constituents(
        jets, constituents, Rotate(), torch.Generator().manual_seed(2)
    )
    old_jets = ak.flatten(constituents, axis=1)
    old_jets = old_jets[ak.argsort(old_jets.pt, axis=1, ascending=False, stable=True)]
    for old, new in zip(old_jets[:6], ak.flatten(new_constituents, axis=1)[:6], strict=True):
        old_vec = ak.zip({"pt": old.pt, "eta": old.eta, "phi": old.phi}, with_name="Momentum3D")
        new_vec = ak.zip({"pt": new.pt, "eta": new.eta, "phi": new.phi}, with_name="Momentum3D")
        # Rotation keeps pT, so the pT order (and the particle correspondence) is unchanged.
        np.testing.assert_allclose(ak.to_numpy(new.pt), ak.to_numpy(old.pt), rtol=1e-12)
        pairs_old = ak.cartesian([old_vec, old_vec], axis=0, nested=True)
        pairs_new = ak.cartesian([new_vec, new_vec], axis=0, nested=True)
        dr_old = ak.to_numpy(pairs_old["0"].deltaR(pairs_old["1"]))
        dr_new = ak.to_numpy(pairs_new["0"].deltaR(pairs_new["1"]))
        np.testing.assert_allclose(dr_new, dr_old, atol=1e-9)
    # New jet = old jet + Σ new constituents − Σ old constituents (vector library arithmetic).
    expected = jet_vectors(jets) + constituent_sum(new_constituents) - constituent_sum(constituents)
    got = jet_vectors(new_jets)
    for component in ("px", "py", "pz", "E"):
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(getattr(got, component))),
            ak.to_numpy(ak.flatten(getattr(expected, component))),
            rtol=1e-6, atol=1e-6,
        )


def test_translation_moves_the_whole_jet(pfnano_jets):
    jets, constituents = pfnano_jets
    new_jets, new_constituents = augment_constituents(
        jets, constituents, Translate(max_shift=0.5), np.random.default_rng(4)
    )
    # Translation keeps pT, so after sorting the input by pT the particles correspond.
    constituents = constituents[ak.argsort(constituents.pt, axis=2, ascending=False, stable=True)]
    shift_eta = ak.flatten(new_constituents.eta - constituents.eta, axis=1)
    # One η shift per jet, shared by all its constituents, within ±0.5.
    spread = ak.to_numpy(ak.max(shift_eta, axis=1) - ak.min(shift_eta, axis=1))
    assert np.all(spread < 1e-9)
    assert np.all(np.abs(ak.to_numpy(ak.firsts(shift_eta))) <= 0.5)
    jet_shift = ak.to_numpy(ak.flatten(new_jets.eta - jets.eta))
    # The PFNano jet is close to (not exactly) its constituent sum, so it moves by about as much.
    np.testing.assert_allclose(jet_shift, ak.to_numpy(ak.firsts(shift_eta)), atol=0.05)


def test_augmented_features_go_through_build_features(pfnano_jets):
    jets, constituents = pfnano_jets
    augmentation = build_augmentation("rotate,smear,split(max_splits=5),dropout(p=0.1)")
    x, mask = augmented_features(
        jets, constituents, augmentation, np.random.default_rng(0), max_particles=50
    )
    assert x.shape == (int(ak.sum(ak.num(jets, axis=1))), 50, 15) and x.dtype == np.float32
    counts = mask.sum(axis=1)
    assert np.array_equal(mask, np.arange(50)[None, :] < counts[:, None])
    assert np.all(x[~mask] == 0.0) and np.isfinite(x).all() and counts.min() >= 1
    np.testing.assert_allclose(
        x[..., FI["delta_r"]][mask], np.hypot(x[..., FI["deta"]], x[..., FI["dphi"]])[mask], rtol=1e-5
    )


def test_bad_constituents_are_named():
    jets = ak.Array([[{"pt": 50.0, "eta": 0.1, "phi": 0.2, "mass": 5.0}]])
    constituents = ak.Array([[[
        {"pt": 30.0, "eta": 0.1, "phi": 0.2, "energy": 30.2, "pdg_id": 211},
        {"pt": 0.0, "eta": 999.9, "phi": 0.0, "energy": 0.0, "pdg_id": 211},
    ]]])
    with pytest.raises(ConfigError, match=r"constituent 1 of jet 0 has invalid pt = 0\.0"):
        augment_constituents(jets, constituents, Rotate(), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="jets lack field"):
        augment_constituents(jets[["pt", "eta"]], constituents, Rotate(), np.random.default_rng(0))


TINY_MODEL = "model={backbone: {width: 16, k: 8, conv_layers: 1, output_hidden: [16], output_dim: 8}}"


def write_nominal_only_ntuple(jets: ak.Array, constituents: ak.Array, out) -> None:
    """Jets of a reader-supported file as training rows without re-simulated partners."""
    from rs3l_coffea.features import build_features
    from rs3l_coffea.training.ntuple import JetTable, build_pair_rows, write_shards

    x, mask = build_features(jets, constituents, max_particles=100)
    per_event = ak.to_numpy(ak.num(jets, axis=1))
    flat = ak.flatten(jets, axis=1)
    table = JetTable(
        hard_event_id=np.repeat(np.arange(len(per_event), dtype=np.int64), per_event),
        jet_index=ak.to_numpy(ak.flatten(ak.local_index(jets, axis=1))).astype(np.int32),
        pt=ak.to_numpy(flat.pt), eta=ak.to_numpy(flat.eta), phi=ak.to_numpy(flat.phi),
        mass=ak.to_numpy(flat.mass), features=x, mask=mask,
        label=np.zeros(len(x), dtype=np.int32),
    )
    rows = build_pair_rows(table, {})
    assert (rows["variant"] == -1).all()  # no re-simulated partner anywhere
    write_shards(rows, out, shard_size=1000)


@pytest.mark.parametrize("spec", ["rotate,translate,smear(lambda_soft=0.2),split", "jetclr"])
def test_pretraining_on_pfnano_jets_with_symmetry_augmentations_only(pfnano_jets, tmp_path, spec):
    """``rs3l train pretrain --augmentations rotate,...`` (or the ``jetclr`` two-view preset)
    on PFNano jets: no re-simulated partner."""
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app
    from rs3l_coffea.training.dataset import JetStream, expand_files, inspect_shards
    from rs3l_coffea.training.partners import make_partner_fn

    write_nominal_only_ntuple(*pfnano_jets, tmp_path / "ntuple")
    result = CliRunner().invoke(app, [
        "train", "pretrain", "--data", str(tmp_path / "ntuple"), "--out", str(tmp_path / "run"),
        "--augmentations", spec, "--epochs", "1",
        "--batch-size", "4", "--quiet",
        "--set", "data.pretrain_fraction=1.0", "--set", "data.val_fraction=0.2",
        "--set", "data.test_fraction=0.0", "--set", "threads=1", "--set", TINY_MODEL,
    ])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(np.isfinite(m["train_loss"]) for m in metrics if "train_loss" in m)
    assert (tmp_path / "run" / "model.safetensors").is_file()

    # The partner the trainer builds from this spec really is an augmented copy of the jet.
    stream = JetStream(inspect_shards(expand_files([str(tmp_path / "ntuple")])), mode="pairs",
                       split=None, require_partner=False, batch_size=4, drop_last=False)
    batch = next(iter(stream))
    partner_fn = make_partner_fn("symmetry", augmentation_names=["rotate", "split"])
    x_a, mask_a, x_b, mask_b = partner_fn(batch, torch.Generator().manual_seed(0))
    assert torch.equal(x_a, batch["x"]) and not torch.equal(x_a, x_b)
    assert (mask_b.sum(dim=1) >= mask_a.sum(dim=1)).all() and (x_b[~mask_b] == 0).all()


def test_cli_rejects_unknown_augmentations_listing_both_kinds(tmp_path):
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    result = CliRunner().invoke(app, [
        "train", "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
        "--augmentations", "seed,twist",
    ])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2
    assert "unknown augmentation 'twist'" in output and "fsr_up" in output and "rotate" in output
    result = CliRunner().invoke(app, [
        "train", "supervised", "--data", str(tmp_path), "--augmentations", "rotate",
    ])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "only make positive partners for pretraining" in output


def test_jets_without_constituents_and_events_without_jets_pass_through():
    jets = ak.Array([
        [{"pt": 50.0, "eta": 0.1, "phi": 0.2, "mass": 5.0}, {"pt": 30.0, "eta": -1.0, "phi": 3.0, "mass": 2.0}],
        [],
    ])
    constituents = ak.Array([
        [[{"pt": 30.0, "eta": 0.1, "phi": 0.2, "energy": 30.2, "pdg_id": 211}], []],
        [],
    ])
    augmentation = build_augmentation("rotate,translate,smear,split,dropout")
    new_jets, new_constituents = augment_constituents(
        jets, constituents, augmentation, np.random.default_rng(0)
    )
    counts = ak.num(new_constituents, axis=2).tolist()
    assert counts[0][0] in (1, 2)  # split into two, then dropout may remove one (never both)
    assert counts[0][1] == 0 and counts[1] == []  # nothing to augment
    assert ak.to_list(new_jets[0, 1]) == ak.to_list(jets[0, 1])  # its jet is untouched
    assert len(new_jets[1]) == 0 and len(new_constituents[1]) == 0
