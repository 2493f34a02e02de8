"""NT-Xent and VICReg against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from rs3l_coffea.training.losses import nt_xent, vicreg, vicreg_terms


def _hand_nt_xent(z_i: list[list[float]], z_j: list[list[float]], tau: float) -> float:
    """Plain-Python NT-Xent: cosine similarities, each anchor vs all 2P - 1 others."""
    z = z_i + z_j
    n_pairs = len(z_i)

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    total = 0.0
    for k in range(2 * n_pairs):
        partner = (k + n_pairs) % (2 * n_pairs)
        denominator = sum(math.exp(cos(z[k], z[m]) / tau) for m in range(2 * n_pairs) if m != k)
        total += -math.log(math.exp(cos(z[k], z[partner]) / tau) / denominator)
    return total / (2 * n_pairs)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_hand_computation_on_three_pairs(tau: float) -> None:
    z_i = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-1.0, 0.4, 0.1]]
    z_j = [[0.9, 0.1, 0.4], [0.0, 2.0, -0.5], [-0.5, -0.2, 0.3]]
    got = nt_xent(torch.tensor(z_i, dtype=torch.float64), torch.tensor(z_j, dtype=torch.float64), tau)
    assert got.item() == pytest.approx(_hand_nt_xent(z_i, z_j, tau), rel=1e-6)


def test_nt_xent_two_orthogonal_pairs_closed_form() -> None:
    # Pairs identical, the two pairs orthogonal: each anchor sees cos 1 (positive), 0, 0.
    z_i = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z_j = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    tau = 0.1
    expected = -math.log(math.exp(10) / (math.exp(10) + 2.0))
    assert nt_xent(z_i, z_j, tau).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_is_scale_invariant_and_rejects_shape_mismatch() -> None:
    g = torch.Generator().manual_seed(0)
    z_i, z_j = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert nt_xent(z_i * 1e6, z_j, 0.1).item() == pytest.approx(nt_xent(z_i, z_j, 0.1).item(), rel=1e-5)
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(z_i, z_j[:4])


def test_vicreg_terms_on_constructed_inputs() -> None:
    # Two dimensions, four samples: column 0 = (-2, -2, 2, 2), column 1 = 2 * column 0.
    base = torch.tensor([[-2.0, -4.0], [-2.0, -4.0], [2.0, 4.0], [2.0, 4.0]])
    terms = vicreg_terms(base, base)
    assert terms["invariance"].item() == 0.0
    # Unbiased variances 16/3 and 64/3: both std > 1, so no variance penalty.
    assert terms["variance"].item() == 0.0
    # Covariance(col0, col1) = 2 * 16/3 = 32/3; off-diagonal squared twice, / D = 2, two branches.
    expected_cov = 2 * (2 * (32 / 3) ** 2 / 2)
    assert terms["covariance"].item() == pytest.approx(expected_cov, rel=1e-5)

    # Constant embeddings: std = sqrt(eps) per dimension → variance term 1 - 1e-2 per branch / 2.
    constant = torch.ones(4, 3)
    shifted = constant + torch.tensor([1.0, 0.0, 0.0])
    terms = vicreg_terms(constant, shifted)
    assert terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-5)
    assert terms["invariance"].item() == pytest.approx(1 / 3, rel=1e-6)  # one of three dims off by 1
    assert terms["covariance"].item() == 0.0
    total = vicreg(constant, shifted, 25.0, 25.0, 1.0)
    assert total.item() == pytest.approx(25 / 3 + 25 * (1 - 1e-2), rel=1e-5)
