"""Self-supervised losses on pairs of embeddings: NT-Xent (SimCLR / JetCLR / RS3L) and VICReg."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _at_least_float32(z: torch.Tensor) -> torch.Tensor:
    """Half precision (autocast) is promoted to float32; float64 stays float64."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


def nt_xent(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Normalised-temperature cross entropy of ``P`` positive pairs ``(z_i[k], z_j[k])``.

    The ``2P`` embeddings ``cat(z_i, z_j)`` are compared by cosine similarity divided by
    ``temperature``; for every anchor its partner is the positive and the other ``2P - 2``
    jets of the batch are the negatives (the anchor itself is excluded). The loss is the mean
    over all ``2P`` anchors of ``-log(exp(s_pos) / sum_{k != anchor} exp(s_k))``.
    """
    if z_i.shape != z_j.shape or z_i.ndim != 2:
        raise ValueError(f"nt_xent needs two (P, D) tensors of equal shape, got {tuple(z_i.shape)} and {tuple(z_j.shape)}")
    n_pairs = z_i.shape[0]
    # Similarities in float32 even under autocast: exp(1/0.1) overflows half precision sums.
    z = F.normalize(_at_least_float32(torch.cat([z_i, z_j])), dim=1)
    logits = z @ z.T / temperature
    # The anchor is not its own negative: remove the diagonal from the softmax.
    self_mask = torch.eye(2 * n_pairs, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(n_pairs, 2 * n_pairs), torch.arange(0, n_pairs)]).to(z.device)
    return F.cross_entropy(logits, partner)


def vicreg_terms(
    z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4
) -> dict[str, torch.Tensor]:
    """The three VICReg terms (Bardes, Ponce, LeCun 2022) of two ``(N, D)`` embedding batches.

    - ``invariance``: mean squared distance between partners;
    - ``variance``: mean over dimensions of ``relu(1 - sqrt(Var + eps))``, averaged over the branches;
    - ``covariance``: sum of squared off-diagonal covariances divided by ``D``, summed over branches.
    """
    z_a = _at_least_float32(z_a)
    z_b = _at_least_float32(z_b)
    n, dim = z_a.shape
    invariance = F.mse_loss(z_a, z_b)
    variance = z_a.new_zeros(())
    covariance = z_a.new_zeros(())
    for z in (z_a, z_b):
        std = torch.sqrt(z.var(dim=0) + eps)
        variance = variance + torch.relu(1.0 - std).mean() / 2
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        off_diagonal = cov - torch.diag(torch.diag(cov))
        covariance = covariance + off_diagonal.pow(2).sum() / dim
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted VICReg loss (defaults 25, 25, 1 as the paper)."""
    terms = vicreg_terms(z_a, z_b)
    return (
        invariance_weight * terms["invariance"]
        + variance_weight * terms["variance"]
        + covariance_weight * terms["covariance"]
    )
