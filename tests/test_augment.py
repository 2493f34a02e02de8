"""JetCLR symmetry augmentations on padded batches: physics invariants, padding, seeding, registry.

Reference jets are built here from known particle four-vectors with plain numpy (not with the
package's encoder), so every expected value is an independent hand computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rs3l_coffea.augment import (
    AUGMENTATIONS,
    CollinearSplit,
    Dropout,
    Rotate,
    Smear,
    Translate,
    TwoViewAugmentation,
    build_augmentation,
    estimate_jet_eta,
    jetclr_translation_bounds,
    partition_spec,
    training_overrides,
)
from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features.names import FEATURE_INDEX as FI
from rs3l_coffea.features.names import N_FEATURES

torch.set_num_threads(1)

PION_MASS = 0.13957


def make_batch(
    seed: int = 0, n_jets: int = 64, width: int = 40, spread: float = 0.12,
    multiplicities: np.ndarray | None = None, pts: np.ndarray | None = None,
):
    """Random jets with known truth: returns (x float64, mask, jet_eta, particle four-vectors).

    Particle pT ~ falling spectrum, directions Gaussian around a random jet axis, photons
    massless and charged hadrons with the pion mass. The jet is the four-vector sum; Δη, Δφ
    are relative to the sum's direction.
    """
    rng = np.random.default_rng(seed)
    if multiplicities is None:
        multiplicities = rng.integers(2, width // 2, size=n_jets)
    x = np.zeros((n_jets, width, N_FEATURES))
    mask = np.zeros((n_jets, width), dtype=bool)
    jet_etas = np.zeros(n_jets)
    for j, n in enumerate(multiplicities):
        axis_eta, axis_phi = rng.uniform(-2.5, 2.5), rng.uniform(-np.pi, np.pi)
        pt = np.sort(pts if pts is not None else 200.0 * rng.pareto(1.5, size=n) + 0.5)[::-1]
        eta = axis_eta + rng.normal(0, spread, n)
        phi = axis_phi + rng.normal(0, spread, n)
        is_photon = rng.random(n) < 0.3
        mass = np.where(is_photon, 0.0, PION_MASS)
        energy = np.sqrt(mass**2 + (pt * np.cosh(eta)) ** 2)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        jet_px, jet_py, jet_pz, jet_e = px.sum(), py.sum(), pz.sum(), energy.sum()
        jet_pt = np.hypot(jet_px, jet_py)
        jet_eta, jet_phi = np.arcsinh(jet_pz / jet_pt), np.arctan2(jet_py, jet_px)
        deta = eta - jet_eta
        dphi = (phi - jet_phi + np.pi) % (2 * np.pi) - np.pi
        charge = np.where(is_photon, 0.0, rng.choice([-1.0, 1.0], n))
        x[j, :n, FI["log_pt"]] = np.log(pt)
        x[j, :n, FI["log_pt_rel"]] = np.log(pt / jet_pt)
        x[j, :n, FI["deta"]] = deta
        x[j, :n, FI["dphi"]] = dphi
        x[j, :n, FI["log_e"]] = np.log(energy)
        x[j, :n, FI["log_e_rel"]] = np.log(energy / jet_e)
        x[j, :n, FI["charge"]] = charge
        x[j, :n, FI["tanh_d0"]] = np.where(is_photon, 0.0, np.tanh(rng.normal(0, 0.05, n)))
        x[j, :n, FI["tanh_dz"]] = np.where(is_photon, 0.0, np.tanh(rng.normal(0, 0.05, n)))
        x[j, :n, FI["delta_r"]] = np.hypot(deta, dphi)
        x[j, :n, FI["is_photon"]] = is_photon
        x[j, :n, FI["is_charged_hadron"]] = ~is_photon
        mask[j, :n] = True
        jet_etas[j] = jet_eta
    return x, mask, jet_etas


def four_momenta(x: np.ndarray, mask: np.ndarray, jet_eta: np.ndarray) -> np.ndarray:
    """(px, py, pz, E) per particle in the jet frame, from the features (hand formula)."""
    pt = np.exp(x[..., FI["log_pt"]])
    eta = jet_eta[:, None] + x[..., FI["deta"]]
    dphi = x[..., FI["dphi"]]
    p = np.stack((pt * np.cos(dphi), pt * np.sin(dphi), pt * np.sinh(eta), np.exp(x[..., FI["log_e"]])), -1)
    return np.where(mask[..., None], p, 0.0)


def pairwise_dr(x_jet: np.ndarray, n: int) -> np.ndarray:
    deta = x_jet[:n, FI["deta"]][:, None] - x_jet[:n, FI["deta"]][None, :]
    dphi = x_jet[:n, FI["dphi"]][:, None] - x_jet[:n, FI["dphi"]][None, :]
    dphi = (dphi + np.pi) % (2 * np.pi) - np.pi
    return np.hypot(deta, dphi)


def narrow_jet_mass(x_jet: np.ndarray, n: int) -> float:
    pt = np.exp(x_jet[:n, FI["log_pt"]])
    deta = x_jet[:n, FI["deta"]][:, None] - x_jet[:n, FI["deta"]][None, :]
    dphi = x_jet[:n, FI["dphi"]][:, None] - x_jet[:n, FI["dphi"]][None, :]
    return float(np.sqrt(np.sum(pt[:, None] * pt[None, :] * (np.cosh(deta) - np.cos(dphi)))))


def assert_valid_padding(x: np.ndarray, mask: np.ndarray, width: int) -> None:
    assert x.shape[1] == width and mask.shape == x.shape[:2] and mask.dtype == bool
    counts = mask.sum(axis=1)
    assert np.array_equal(mask, np.arange(width)[None, :] < counts[:, None]), "mask not contiguous"
    assert (counts >= 1).all() and (counts <= width).all()
    assert np.all(x[~mask] == 0.0), "padded slots not exactly zero"
    assert np.isfinite(x).all()
    log_pt = x[..., FI["log_pt"]]
    assert np.all(np.diff(log_pt, axis=1)[mask[:, 1:]] <= 0), "particles not sorted by pT"
    np.testing.assert_allclose(
        x[..., FI["delta_r"]][mask], np.hypot(x[..., FI["deta"]], x[..., FI["dphi"]])[mask], rtol=1e-5
    )
    assert np.all(np.abs(x[..., FI["dphi"]]) <= np.pi + 1e-6)


ALL_SPECS = [*AUGMENTATIONS, "rotate,translate,smear,split,dropout"]


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("backend", ["torch32", "numpy64"])
def test_padding_masks_and_sorting_valid_after_every_augmentation(spec, backend):
    x, mask, _ = make_batch(seed=1, n_jets=24, width=30)
    x[3, :, :] = 0.0  # a jet with a single particle: dropout must keep it, split may double it
    mask[3, :] = False
    x_single, mask_single, _ = make_batch(seed=9, n_jets=1, width=30, multiplicities=np.array([1]))
    x[3], mask[3] = x_single[0], mask_single[0]
    augmentation = build_augmentation(spec)
    if backend == "torch32":
        out_x, out_mask = augmentation(
            torch.from_numpy(x).float(), torch.from_numpy(mask), torch.Generator().manual_seed(3)
        )
        assert out_x.dtype == torch.float32 and isinstance(out_mask, torch.Tensor)
        out_x, out_mask = out_x.numpy(), out_mask.numpy()
    else:
        out_x, out_mask = augmentation(x, mask, np.random.default_rng(3))
        assert isinstance(out_x, np.ndarray) and out_x.dtype == np.float64
    assert_valid_padding(out_x, out_mask, 30)
    # Carried features stay one of the particle's own values (type flags remain one-hot).
    flags = out_x[..., FI["is_photon"]:][out_mask]
    np.testing.assert_array_equal(flags.sum(axis=1), 1.0)


@pytest.mark.parametrize("augmentation", [Rotate(), Translate(max_shift=1.0)])
def test_rotation_and_translation_keep_pairwise_dr_and_narrow_jet_mass(augmentation):
    x, mask, jet_eta = make_batch(seed=2, n_jets=32, width=40, spread=0.08)
    out_x, out_mask = augmentation(x, mask, np.random.default_rng(5), jet_eta=jet_eta)
    assert np.array_equal(out_mask, mask)
    np.testing.assert_allclose(out_x[..., FI["log_pt"]], x[..., FI["log_pt"]], rtol=1e-12)
    moved = 0
    for j in range(len(x)):
        n = int(mask[j].sum())
        np.testing.assert_allclose(pairwise_dr(out_x[j], n), pairwise_dr(x[j], n), atol=1e-9)
        mass_before, mass_after = narrow_jet_mass(x[j], n), narrow_jet_mass(out_x[j], n)
        # Translations keep Δη_ij, Δφ_ij exactly; rotations only in the small-angle limit.
        rtol = 1e-9 if isinstance(augmentation, Translate) else 0.01
        np.testing.assert_allclose(mass_after, mass_before, rtol=rtol)
        moved += not np.allclose(out_x[j, :n, FI["deta"]], x[j, :n, FI["deta"]])
    assert moved >= len(x) - 1, "the augmentation did not move the constituents"
    if isinstance(augmentation, Rotate):
        np.testing.assert_allclose(out_x[..., FI["delta_r"]], x[..., FI["delta_r"]], atol=1e-9)


def test_translation_is_constant_offset_and_energies_follow_eta():
    x, mask, jet_eta = make_batch(seed=4, n_jets=16, width=30)
    out_x, _ = Translate(max_shift=1.0)(x, mask, np.random.default_rng(8), jet_eta=jet_eta)
    for j in range(len(x)):
        n = int(mask[j].sum())
        shift_eta = out_x[j, :n, FI["deta"]] - x[j, :n, FI["deta"]]
        shift_phi = (out_x[j, :n, FI["dphi"]] - x[j, :n, FI["dphi"]] + np.pi) % (2 * np.pi) - np.pi
        np.testing.assert_allclose(shift_eta, shift_eta[0], atol=1e-12)
        np.testing.assert_allclose(shift_phi, shift_phi[0], atol=1e-12)
        assert abs(shift_eta[0]) <= 1.0 and abs(shift_phi[0]) <= 1.0
        # E' = sqrt(m² + pT² cosh²(η_jet + Δη')) with each particle's mass kept.
        pt = np.exp(x[j, :n, FI["log_pt"]])
        old_eta = jet_eta[j] + x[j, :n, FI["deta"]]
        mass_sq = np.clip(np.exp(2 * x[j, :n, FI["log_e"]]) - (pt * np.cosh(old_eta)) ** 2, 0, None)
        expected = np.sqrt(mass_sq + (pt * np.cosh(old_eta + shift_eta[0])) ** 2)
        np.testing.assert_allclose(np.exp(out_x[j, :n, FI["log_e"]]), expected, rtol=1e-9)
        # log E ratio relative to the translated jet's energy = Σ E' (all constituents present).
        np.testing.assert_allclose(
            out_x[j, :n, FI["log_e_rel"]], np.log(expected / expected.sum()), atol=1e-9
        )


def test_jet_eta_estimate_recovers_the_axis():
    x, mask, jet_eta = make_batch(seed=6, n_jets=64, width=30)
    estimate = estimate_jet_eta(
        torch.from_numpy(x[..., FI["log_pt"]]), torch.from_numpy(x[..., FI["log_e"]]),
        torch.from_numpy(x[..., FI["deta"]]), torch.from_numpy(mask),
    ).numpy()
    # Seeds can be pions (m = 0.14 GeV): E/pT is then slightly above cosh η; near η = 0 the
    # arccosh amplifies that, so the tolerance is looser there.
    np.testing.assert_allclose(estimate, jet_eta, atol=0.05)
    # Without jet_eta, a translation reproduces the energies computed with the true axis.
    est_out, _ = Translate()(x, mask, np.random.default_rng(1))
    true_out, _ = Translate()(x, mask, np.random.default_rng(1), jet_eta=jet_eta)
    np.testing.assert_allclose(est_out[mask], true_out[mask], atol=5e-3)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_collinear_split_conserves_jet_four_momentum(dtype, rtol):
    x, mask, jet_eta = make_batch(seed=7, n_jets=32, width=40)
    x_in = torch.from_numpy(x).to(dtype)
    x_in_np = x_in.double().numpy()  # the input as the augmentation sees it
    out_x, out_mask = CollinearSplit()(
        x_in, torch.from_numpy(mask), torch.Generator().manual_seed(11)
    )
    out_x, out_mask = out_x.double().numpy(), out_mask.numpy()
    before = four_momenta(x_in_np, mask, jet_eta).sum(axis=1)
    after = four_momenta(out_x, out_mask, jet_eta).sum(axis=1)
    scale = np.abs(before).max(axis=1, keepdims=True)
    np.testing.assert_allclose(after / scale, before / scale, atol=rtol)
    n_before, n_after = mask.sum(axis=1), out_mask.sum(axis=1)
    np.testing.assert_array_equal(n_after, np.minimum(2 * n_before, 40))
    # The jet is unchanged, so log pT − log pT ratio (= log pT_jet) is too.
    jet_log_pt = (x_in_np[..., FI["log_pt"]] - x_in_np[..., FI["log_pt_rel"]])[:, 0]
    out_jet_log_pt = out_x[..., FI["log_pt"]] - out_x[..., FI["log_pt_rel"]]
    np.testing.assert_allclose(out_jet_log_pt[out_mask], np.repeat(jet_log_pt, n_after), atol=10 * rtol)
    # Every output particle shares its direction and carried features with an input particle.
    carried = [FI[name] for name in ("deta", "dphi", "charge", "tanh_d0", "tanh_dz", "is_photon")]
    for j in range(4):
        inputs = {tuple(np.round(r, 5)) for r in x_in_np[j][mask[j]][:, carried]}
        outputs = [tuple(np.round(r, 5)) for r in out_x[j][out_mask[j]][:, carried]]
        assert set(outputs) == inputs
        assert len(outputs) == n_after[j]


def test_collinear_split_respects_capacity_and_choice():
    width = 12
    x, mask, _ = make_batch(seed=3, n_jets=3, width=width, multiplicities=np.array([12, 9, 4]))
    out_x, out_mask = CollinearSplit()(x, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask.sum(axis=1), [12, 12, 8])
    np.testing.assert_allclose(out_x[0], x[0], atol=1e-12)  # a full jet is left alone
    hardest = build_augmentation("split(max_splits=2, choice=hardest, fraction=0.5)")
    out_x, out_mask = hardest(x, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask.sum(axis=1), [12, 11, 6])
    # z = 1/2: the two hardest of jet 2 become two pairs of halves, the rest are unchanged.
    pt_in = np.exp(x[2, :4, FI["log_pt"]])
    expected = np.sort(np.concatenate([np.repeat(pt_in[:2] / 2, 2), pt_in[2:]]))[::-1]
    np.testing.assert_allclose(np.exp(out_x[2, :6, FI["log_pt"]]), expected, rtol=1e-12)


def test_smear_moves_soft_particles_by_lambda_over_pt():
    pts = np.array([100.0, 1.0])  # one hard, one soft particle per jet
    x, mask, jet_eta = make_batch(seed=5, n_jets=400, width=4, multiplicities=np.full(400, 2), pts=pts)
    out_x, out_mask = Smear(lambda_soft=0.1)(x, mask, np.random.default_rng(2), jet_eta=jet_eta)
    assert np.array_equal(out_mask, mask)
    shift = out_x[:, :2, FI["deta"]] - x[:, :2, FI["deta"]]
    rms_hard, rms_soft = np.sqrt(np.mean(shift**2, axis=0))
    # Expected widths Λ/pT: 0.001 (hard), 0.1 (soft); 400 draws give ~4% statistical spread.
    assert rms_soft > 50 * rms_hard
    np.testing.assert_allclose([rms_hard, rms_soft], [0.001, 0.1], rtol=0.15)


def test_dropout_never_empties_a_jet_and_updates_the_jet():
    x, mask, jet_eta = make_batch(seed=8, n_jets=50, width=20)
    out_x, out_mask = Dropout(p=0.95)(x, mask, np.random.default_rng(4), jet_eta=jet_eta)
    assert (out_mask.sum(axis=1) >= 1).all() and (out_mask.sum(axis=1) <= mask.sum(axis=1)).all()
    assert out_mask.sum() < 0.3 * mask.sum()
    for j in range(len(x)):
        originals = {round(v, 9) for v in x[j][mask[j]][:, FI["log_pt"]]}
        kept = out_x[j][out_mask[j]]
        assert {round(v, 9) for v in kept[:, FI["log_pt"]]} <= originals
        # The jet loses the dropped particles: pT_jet' = |Σ pT vectors| of survivors (all
        # constituents of these jets are present), hand computed.
        pt, dphi = np.exp(kept[:, FI["log_pt"]]), kept[:, FI["dphi"]]
        jet_pt = np.hypot(np.sum(pt * np.cos(dphi)), np.sum(pt * np.sin(dphi)))
        np.testing.assert_allclose(kept[:, FI["log_pt_rel"]], np.log(pt / jet_pt), atol=1e-9)


def test_same_seed_same_output_different_seed_different():
    x, mask, _ = make_batch(seed=10, n_jets=16, width=30)
    augmentation = build_augmentation("rotate,translate,smear,split,dropout")
    xt, mt = torch.from_numpy(x).float(), torch.from_numpy(mask)
    first = augmentation(xt, mt, torch.Generator().manual_seed(42))
    second = augmentation(xt, mt, torch.Generator().manual_seed(42))
    other = augmentation(xt, mt, torch.Generator().manual_seed(43))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    a = augmentation(x, mask, np.random.default_rng(7))
    b = augmentation(x, mask, np.random.default_rng(7))
    c = augmentation(x, mask, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert np.array_equal(x, make_batch(seed=10, n_jets=16, width=30)[0]), "input was modified"


def test_unknown_names_and_bad_parameters_list_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        build_augmentation("rotate,twist")
    message = str(error.value)
    assert "twist" in message
    assert all(name in message for name in ("rotate", "translate", "smear", "split", "dropout"))
    with pytest.raises(ConfigError, match=r"dropout: p must be a number in \[0.0, 1.0\)"):
        build_augmentation("dropout(p=1.5)")
    with pytest.raises(ConfigError, match=r"lambda_soft must be a number"):
        build_augmentation("smear", smear={"lambda_soft": -0.1})
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) extent; valid: max_shift, width"):
        build_augmentation(["translate(extent=2)"])
    with pytest.raises(ConfigError, match=r"either max_shift .* or width"):
        build_augmentation(["translate(max_shift=0.5, width=1.0)"])
    with pytest.raises(ConfigError, match="choice must be one of random, hardest"):
        build_augmentation("split(choice=softest)")
    with pytest.raises(ConfigError, match=r"split: fraction must be a number in \(0.0, 1.0\)"):
        build_augmentation("split(fraction=1)")
    with pytest.raises(ConfigError, match="not in the spec"):
        build_augmentation("rotate", smear={"lambda_soft": 0.2})
    with pytest.raises(ConfigError, match="empty augmentation spec"):
        build_augmentation(" , ")
    built = build_augmentation("smear(lambda_soft=0.2),split(max_splits=3, choice=hardest)")
    assert [type(a) for a in built.augmentations] == [Smear, CollinearSplit]
    assert built.augmentations[0].lambda_soft == 0.2 and built.augmentations[1].max_splits == 3


def test_partition_spec_separates_resimulation_variants():
    variants, symmetry = partition_spec("seed,rotate,fsr_up,split(max_splits=2)", ["seed", "fsr_up"])
    assert variants == ["seed", "fsr_up"]
    assert symmetry == "rotate,split(max_splits=2)"
    assert partition_spec(["fsr_down"], ["fsr_down"]) == (["fsr_down"], None)
    with pytest.raises(ConfigError, match=r"re-simulation variants: seed.*valid augmentations"):
        partition_spec("herwig", ["seed"])


def test_bad_batches_are_rejected_with_a_clear_message():
    x, mask, _ = make_batch(seed=0, n_jets=4, width=10)
    x[2, 1, FI["deta"]] = np.nan
    with pytest.raises(ConfigError, match="NaN or inf at jet 2, particle 1"):
        Rotate()(x, mask, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="expected features of shape"):
        Rotate()(x[..., :10], mask, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="mask must be boolean"):
        Rotate()(x, mask.astype(np.float32), np.random.default_rng(0))
    x[2, 1, FI["deta"]] = 0.1
    with pytest.raises(ConfigError, match="generator must be"):
        Rotate()(x, mask, 42)


def test_truncated_jets_keep_their_unseen_constituents_in_the_jet():
    # 30-particle jets cut to 20 slots: the 10 softest are not in the batch but in the jet.
    x, mask, jet_eta = make_batch(seed=12, n_jets=8, width=40, multiplicities=np.full(8, 30))
    x, mask = x[:, :20], mask[:, :20]
    out_x, out_mask = Dropout(p=0.3)(x, mask, np.random.default_rng(3), jet_eta=jet_eta)
    for j in range(len(x)):
        jet_pt = np.exp(x[j, 0, FI["log_pt"]] - x[j, 0, FI["log_pt_rel"]])
        kept = {round(v, 9) for v in out_x[j][out_mask[j]][:, FI["log_pt"]]}
        dropped = np.array([round(v, 9) not in kept for v in x[j, :, FI["log_pt"]]])
        pt, dphi = np.exp(x[j, dropped, FI["log_pt"]]), x[j, dropped, FI["dphi"]]
        # Jet frame: the jet points along +x; remove the dropped particles' transverse momenta.
        expected = np.hypot(jet_pt - np.sum(pt * np.cos(dphi)), -np.sum(pt * np.sin(dphi)))
        out_jet_pt = np.exp(out_x[j, 0, FI["log_pt"]] - out_x[j, 0, FI["log_pt_rel"]])
        np.testing.assert_allclose(out_jet_pt, expected, rtol=1e-9)
        assert dropped.any()


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(1, 6),
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    spec=st.sampled_from(ALL_SPECS),
    seed=st.integers(0, 2**16),
)
def test_padding_invariants_hold_for_any_multiplicity(width, counts, spec, seed):
    counts = np.minimum(np.array(counts), width)
    x, mask, _ = make_batch(seed=seed, n_jets=len(counts), width=max(width, 2),
                            multiplicities=np.maximum(counts, 1))
    x, mask = x[:, :width], mask[:, :width]
    x[counts == 0], mask[counts == 0] = 0.0, False  # jets without particles stay empty
    out_x, out_mask = build_augmentation(spec)(x, mask, np.random.default_rng(seed))
    n_out = out_mask.sum(axis=1)
    assert np.array_equal(mask.sum(axis=1) == 0, n_out == 0)
    assert np.array_equal(out_mask, np.arange(width)[None, :] < n_out[:, None])
    assert np.all(out_x[~out_mask] == 0.0) and np.isfinite(out_x).all()
    assert (n_out <= width).all()


def test_training_overrides_route_variants_and_symmetry_augmentations():
    variants = ["seed", "fsr_up", "fsr_down"]
    assert training_overrides("seed, fsr_up", variants) == ["data.augmentations=[seed, fsr_up]"]
    assert training_overrides("rotate,split", variants) == [
        "data.symmetry_augmentations=[rotate, split]", "data.partner=symmetry",
    ]
    both = training_overrides("fsr_down,smear(lambda_soft=0.2)", variants)
    assert both == [
        "data.augmentations=[fsr_down]", "data.symmetry_augmentations=[smear]",
        'data.symmetry_params={"smear": {"lambda_soft": 0.2}}', "data.partner=resim+symmetry",
    ]
    # An explicit --partner is left alone; bad parameters fail before any data is read.
    assert "data.partner=symmetry" not in training_overrides("rotate", variants, partner="resim+symmetry")
    with pytest.raises(ConfigError, match="max_shift must be a number"):
        training_overrides("translate(max_shift=9)", variants)
    with pytest.raises(ConfigError, match="only make positive partners for pretraining"):
        training_overrides("seed,rotate", variants, task="finetune")


def test_rotation_angles_and_translation_shifts_are_uniform():
    from scipy.stats import kstest

    x, mask, jet_eta = make_batch(seed=13, n_jets=300, width=8, multiplicities=np.full(300, 3))
    out_x, _ = Rotate()(x, mask, np.random.default_rng(1), jet_eta=jet_eta)
    # Rotation keeps pT, so slot 0 is the same particle: its polar angle in (Δη, Δφ) turned by θ.
    before = np.arctan2(x[:, 0, FI["dphi"]], x[:, 0, FI["deta"]])
    after = np.arctan2(out_x[:, 0, FI["dphi"]], out_x[:, 0, FI["deta"]])
    angle = np.mod(after - before, 2 * np.pi)
    assert kstest(angle, "uniform", args=(0, 2 * np.pi)).pvalue > 1e-3
    out_x, _ = Translate(max_shift=1.0)(x, mask, np.random.default_rng(2), jet_eta=jet_eta)
    shift = out_x[:, 0, FI["deta"]] - x[:, 0, FI["deta"]]
    assert kstest(shift, "uniform", args=(-1.0, 2.0)).pvalue > 1e-3


# --- JetCLR's recipe (bmdillon/JetCLR, scripts/modules/jet_augs.py and scripts/run_jetclr.py) ---


def jetclr_translate_reference(batch: np.ndarray, width: float, rng: np.random.Generator):
    """JetCLR's ``translate_jets`` re-written here in plain numpy, on its own layout.

    ``batch`` is (N, 3, P): pT, η, φ per slot, zero padded (pT = 0 marks padding). The range
    is the peak-to-peak over *all* slots (padding included, as np.ptp in JetCLR), the φ range
    clipped so that shifted φ stays in [-π, π]. Returns (shifted batch, shift_eta, shift_phi).
    """
    valid = batch[:, 0] > 0
    ptp_eta = batch[:, 1].max(axis=1) - batch[:, 1].min(axis=1)
    ptp_phi = batch[:, 2].max(axis=1) - batch[:, 2].min(axis=1)
    low_phi = np.maximum(-width * ptp_phi, -np.pi - batch[:, 2].min(axis=1))
    high_phi = np.minimum(width * ptp_phi, np.pi - batch[:, 2].max(axis=1))
    shift_eta = rng.uniform(-width * ptp_eta, width * ptp_eta)
    shift_phi = rng.uniform(low_phi, high_phi)
    out = batch.copy()
    out[:, 1] += valid * shift_eta[:, None]
    out[:, 2] += valid * shift_phi[:, None]
    return out, shift_eta, shift_phi, (-width * ptp_eta, width * ptp_eta, low_phi, high_phi)


def jetclr_layout(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Our padded features as JetCLR's (N, 3, P) pT, η, φ array (axis-relative, zero padded)."""
    pt = np.where(mask, np.exp(x[..., FI["log_pt"]]), 0.0)
    return np.stack((pt, x[..., FI["deta"]], x[..., FI["dphi"]]), axis=1)


@pytest.mark.parametrize("width", [0.3, 1.0, 3.0])
def test_translate_width_bounds_match_jetclr_reference(width):
    # Jets with free (zero-padded) slots, wide spreads so that for width 3 the φ clip is active.
    x, mask, _ = make_batch(seed=21, n_jets=200, width=30, spread=0.35)
    reference = jetclr_translate_reference(jetclr_layout(x, mask), width, np.random.default_rng(0))[3]
    ours = jetclr_translation_bounds(
        torch.from_numpy(x[..., FI["deta"]]), torch.from_numpy(x[..., FI["dphi"]]),
        torch.from_numpy(mask), width,
    )
    for got, expected in zip(ours, reference, strict=True):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    if width == 3.0:
        assert np.any(reference[3] < width * (x[..., FI["dphi"]].max(1) - x[..., FI["dphi"]].min(1)) - 1e-6), (
            "the φ clip was never active: the test does not exercise it"
        )


def test_translate_width_shift_distribution_matches_jetclr_and_differs_from_fixed():
    from scipy.stats import ks_2samp

    # One narrow and one wide jet type, many copies each: per-jet ranges matter.
    base_x, base_mask, base_eta = make_batch(seed=22, n_jets=40, width=20, spread=0.15)
    reps = 50
    x, mask = np.repeat(base_x, reps, axis=0), np.repeat(base_mask, reps, axis=0)
    jet_eta = np.repeat(base_eta, reps)
    out_x, out_mask = Translate(width=1.0)(x, mask, np.random.default_rng(3), jet_eta=jet_eta)
    assert np.array_equal(out_mask, mask)
    # Translation keeps pT, so slot 0 is the same particle before and after.
    ours_eta = out_x[:, 0, FI["deta"]] - x[:, 0, FI["deta"]]
    ours_phi = out_x[:, 0, FI["dphi"]] - x[:, 0, FI["dphi"]]
    _, ref_eta, ref_phi, _ = jetclr_translate_reference(jetclr_layout(x, mask), 1.0, np.random.default_rng(4))
    assert ks_2samp(ours_eta, ref_eta).pvalue > 1e-3
    assert ks_2samp(ours_phi, ref_phi).pvalue > 1e-3
    # Every shifted Δφ stays inside [-π, π] (JetCLR clips the range instead of wrapping).
    assert np.all(np.abs(out_x[..., FI["dphi"]][mask]) <= np.pi + 1e-12)
    # The fixed ±1 range is a different distribution on the same jets: the comparison has power.
    fixed_x, _ = Translate()(x, mask, np.random.default_rng(3), jet_eta=jet_eta)
    assert ks_2samp(fixed_x[:, 0, FI["deta"]] - x[:, 0, FI["deta"]], ref_eta).pvalue < 1e-6


def test_translate_default_stays_the_fixed_range():
    augmentation = build_augmentation("translate")
    assert augmentation.width is None and augmentation.max_shift == 1.0
    assert build_augmentation("translate(width=0.5)").max_shift is None


def _collinear_pairs(x_jet: np.ndarray, n: int) -> int:
    """Number of particle pairs with exactly the same direction (both halves of a split)."""
    directions = np.round(x_jet[:n, [FI["deta"], FI["dphi"]]], 12)
    _, counts = np.unique(directions, axis=0, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def test_jetclr_preset_reproduces_order_double_split_and_both_views():
    preset = build_augmentation("jetclr")
    assert isinstance(preset, TwoViewAugmentation)
    width = 100
    x, mask, jet_eta = make_batch(seed=23, n_jets=200, width=width, spread=0.1,
                                  multiplicities=np.full(200, 12))
    xa, ma, xb, mb = preset.views(x, mask, np.random.default_rng(5), jet_eta=jet_eta)
    n = mask.sum(axis=1)
    # Anchor: rotated and translated only (JetCLR's x_i): same particles, same pairwise ΔR and
    # pT, but moved relative to the input.
    assert np.array_equal(ma, mask)
    np.testing.assert_allclose(xa[..., FI["log_pt"]], x[..., FI["log_pt"]], rtol=1e-12)
    for j in range(20):
        np.testing.assert_allclose(pairwise_dr(xa[j], n[j]), pairwise_dr(x[j], n[j]), atol=1e-9)
    moved = np.abs(xa[:, 0, FI["deta"]] - x[:, 0, FI["deta"]]) > 1e-6
    assert moved.mean() > 0.95
    # The anchor's rotation is uniform: the direction from the hardest to the second particle.
    from scipy.stats import kstest

    def heading(values):
        return np.arctan2(values[:, 1, FI["dphi"]] - values[:, 0, FI["dphi"]],
                          values[:, 1, FI["deta"]] - values[:, 0, FI["deta"]])

    turned = np.mod(heading(xa) - heading(x), 2 * np.pi)
    assert kstest(turned, "uniform", args=(0, 2 * np.pi)).pvalue > 1e-3
    # Partner: two collinear splits (12 -> 24 -> 48 particles with 100 slots), pT shared so the
    # total pT of the particles is kept ...
    np.testing.assert_array_equal(mb.sum(axis=1), 4 * n)
    np.testing.assert_allclose(
        np.where(mb, np.exp(xb[..., FI["log_pt"]]), 0).sum(1),
        np.where(mask, np.exp(x[..., FI["log_pt"]]), 0).sum(1), rtol=1e-9,
    )
    # ... and smeared *after* splitting (JetCLR's order): the halves of a split particle get
    # their own noise, so no two particles share a direction. Smearing *before* splitting (our
    # plain spec "rotate,translate,smear,split") leaves exactly collinear halves.
    assert sum(_collinear_pairs(xb[j], mb[j].sum()) for j in range(len(xb))) == 0
    plain_x, plain_mask = build_augmentation("rotate,translate,smear,split")(x, mask, np.random.default_rng(5))
    assert all(_collinear_pairs(plain_x[j], plain_mask[j].sum()) == n[j] for j in range(len(x)))
    # Translation comes last: the partner's shift range is set by its own (split, smeared)
    # constituents, so every partner stays inside JetCLR's φ bounds, and the anchor's shift is
    # independent of the partner's.
    assert np.all(np.abs(xb[..., FI["dphi"]][mb]) <= np.pi + 1e-12)
    shift_a = xa[:, :, FI["deta"]].sum(1) / n
    shift_b = np.where(mb, xb[..., FI["deta"]], 0).sum(1) / mb.sum(1)
    assert abs(np.corrcoef(shift_a, shift_b)[0, 1]) < 0.25


def test_jetclr_preset_in_training_routes_both_views():
    from rs3l_coffea.training.partners import make_partner_fn

    variants = ["seed", "fsr_up"]
    assert training_overrides("jetclr", variants) == [
        "data.symmetry_augmentations=[jetclr]", "data.partner=symmetry",
    ]
    with pytest.raises(ConfigError, match="cannot be combined"):
        build_augmentation("jetclr,rotate")
    with pytest.raises(ConfigError, match="takes no parameters"):
        build_augmentation("jetclr(width=2)")
    x, mask, _ = make_batch(seed=24, n_jets=8, width=60, multiplicities=np.full(8, 10))
    batch = {"x": torch.from_numpy(x).float(), "mask": torch.from_numpy(mask)}
    batch.update(x_partner=batch["x"].clone(), mask_partner=batch["mask"].clone())
    for kind in ("symmetry", "resim+symmetry"):
        fn = make_partner_fn(kind, augmentation_names=["jetclr"])
        xa, ma, _, mb = fn(batch, torch.Generator().manual_seed(0))
        # JetCLR augments the anchor too (rotation + translation), the partner is split twice.
        assert torch.equal(ma, batch["mask"]) and not torch.allclose(xa, batch["x"])
        assert torch.equal(mb.sum(1), 4 * batch["mask"].sum(1))
    # A single-view spec still leaves the anchor untouched.
    xa, _, _, _ = make_partner_fn("symmetry", augmentation_names=["rotate"])(batch, torch.Generator().manual_seed(0))
    assert torch.equal(xa, batch["x"])
