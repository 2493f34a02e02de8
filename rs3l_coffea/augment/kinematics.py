"""Constituent kinematics behind the 15 padded features, and their consistent re-encoding.

The augmentations change particle kinematics (pT, Δη, Δφ, E), never features directly:
:func:`decode_features` turns a padded ``(x, mask)`` batch into a :class:`JetBatch` of
kinematics in the *jet frame* (jet axis at Δη = Δφ = 0, jet momentum along +x), and
:func:`encode_features` turns it back, recomputing every derived feature (log pT, log pT
ratio, log E, log E ratio, Δφ wrapping, ΔR), sorting particles by pT and zeroing padding.

Reference axis. Δη and Δφ always stay relative to the *original* jet axis: a translation
therefore shows up as a constant offset of (Δη, Δφ), exactly as in JetCLR, where the
constituents of an axis-centred jet are shifted.

Jet four-momentum. The ratios log(pT/pT_jet) and log(E/E_jet) use the jet after the
augmentation: ``p_jet' = p_jet + Σ_i p_i' − Σ_i p_i`` over the particles in the batch. Jet
constituents beyond the padded length (or momentum the file's jet has on top of its
constituents, e.g. from corrections) thus stay in the jet unchanged, and an exactly
momentum-conserving augmentation (collinear splitting) leaves the jet unchanged.

Energies. When a particle's pseudorapidity changes, its energy follows with its mass kept:
``E'² = m² + pT² cosh²(η_jet + Δη')`` with ``m² = E² − pT² cosh²(η_jet + Δη)``. This needs the
jet's absolute η, which the padded features do not store: :func:`estimate_jet_eta` recovers
it from the particles' E/pT = cosh η (massless particles), unless the caller passes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features.names import FEATURE_INDEX, N_FEATURES
from rs3l_coffea.kinematics import wrap_phi  # tensor % float is torch.remainder: same kernel

KINEMATIC_FEATURES: tuple[str, ...] = (
    "log_pt", "log_pt_rel", "deta", "dphi", "log_e", "log_e_rel", "delta_r",
)
"""Features recomputed from kinematics after every augmentation."""

CARRIED_FEATURES: tuple[str, ...] = tuple(
    name for name in FEATURE_INDEX if name not in KINEMATIC_FEATURES
)
"""Features copied along unchanged with their particle (charge, impact parameters, type flags)."""

_CARRIED_INDEX = [FEATURE_INDEX[name] for name in CARRIED_FEATURES]


def _log_cosh(value: torch.Tensor) -> torch.Tensor:
    # log(cosh x) without overflow for large |x|.
    magnitude = value.abs()
    return magnitude + torch.log1p(torch.exp(-2.0 * magnitude)) - math.log(2.0)


@dataclass(frozen=True)
class JetBatch:
    """Particle kinematics of a padded jet batch in the jet frame (float64 tensors).

    ``pt, deta, dphi, energy, mask`` are ``(N, P)``; ``carried`` is ``(N, P, K)`` (features or
    fields that travel with their particle). ``remainder`` ``(N, 4)`` is the jet
    four-momentum minus the particles in the batch, as (px, py, pz, E) in the jet frame;
    pz is only meaningful when ``jet_eta`` was known at decoding. ``capacity`` is how many
    particles a jet may hold (collinear splitting stops there).
    """

    pt: torch.Tensor
    deta: torch.Tensor
    dphi: torch.Tensor
    energy: torch.Tensor
    mask: torch.Tensor
    carried: torch.Tensor
    jet_eta: torch.Tensor
    remainder: torch.Tensor
    capacity: int

    @property
    def n_particles(self) -> torch.Tensor:
        """Number of particles per jet, ``(N,)`` int64."""
        return self.mask.sum(dim=1)

    def four_momenta(self) -> torch.Tensor:
        """Per-particle (px, py, pz, E) in the jet frame, zero in padded slots, ``(N, P, 4)``."""
        eta = self.jet_eta[:, None] + self.deta
        momenta = torch.stack(
            (
                self.pt * torch.cos(self.dphi),
                self.pt * torch.sin(self.dphi),
                self.pt * torch.sinh(eta),
                self.energy,
            ),
            dim=-1,
        )
        return momenta * self.mask[..., None]

    def jet_four_momentum(self) -> torch.Tensor:
        """The jet's (px, py, pz, E) in the original jet frame after the augmentations, ``(N, 4)``."""
        return self.remainder + self.four_momenta().sum(dim=1)

    def with_angles(self, deta: torch.Tensor, dphi: torch.Tensor) -> JetBatch:
        """Move particles to new (Δη, Δφ), keeping pT and mass; energy follows (see module doc)."""
        pt_cosh_old = self.pt * torch.cosh(self.jet_eta[:, None] + self.deta)
        pt_cosh_new = self.pt * torch.cosh(self.jet_eta[:, None] + deta)
        mass_squared = torch.clamp(self.energy**2 - pt_cosh_old**2, min=0.0)
        energy = torch.sqrt(mass_squared + pt_cosh_new**2)
        return replace(
            self,
            deta=torch.where(self.mask, deta, 0.0),
            dphi=torch.where(self.mask, wrap_phi(dphi), 0.0),
            energy=torch.where(self.mask, energy, 0.0),
        )

    def sorted_by_pt(self) -> JetBatch:
        """Particles in descending pT order, padded slots last (stable)."""
        key = torch.where(self.mask, self.pt, -1.0)
        order = torch.argsort(key, dim=1, descending=True, stable=True)

        def take(values: torch.Tensor) -> torch.Tensor:
            index = order if values.dim() == 2 else order[..., None].expand_as(values)
            return torch.gather(values, 1, index)

        return replace(
            self,
            pt=take(self.pt),
            deta=take(self.deta),
            dphi=take(self.dphi),
            energy=take(self.energy),
            mask=take(self.mask),
            carried=take(self.carried),
        )


def check_padded_batch(x: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise :class:`ConfigError` naming the problem if ``(x, mask)`` is not a valid padded batch."""
    if x.dim() != 3 or x.shape[-1] != N_FEATURES:
        raise ConfigError(
            f"expected features of shape (jets, particles, {N_FEATURES}), got {tuple(x.shape)}"
        )
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ConfigError(
            f"mask shape {tuple(mask.shape)} does not match features shape {tuple(x.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ConfigError(f"mask must be boolean, got dtype {mask.dtype}")
    finite = torch.isfinite(x).all(dim=-1) | ~mask
    if not bool(finite.all()):
        jet, particle = (int(i) for i in torch.nonzero(~finite)[0])
        raise ConfigError(
            f"features contain NaN or inf at jet {jet}, particle {particle} "
            f"({x[jet, particle].tolist()})"
        )


def estimate_jet_eta(
    log_pt: torch.Tensor, log_e: torch.Tensor, deta: torch.Tensor, mask: torch.Tensor,
    n_seeds: int = 3,
) -> torch.Tensor:
    """Recover the jet axis pseudorapidity from particle (log pT, log E, Δη).

    For a massless particle E/pT = cosh η, so each of the ``n_seeds`` hardest particles gives
    two candidates η_jet = ±arccosh(E/pT) − Δη. The candidate that best describes all particles
    (pT-weighted least squares in log(E/pT) = log cosh(η_jet + Δη)) wins. Massive hadrons
    bias E/pT only by m²/(2 E²), negligible for the hard seeds; near η_jet = 0 the two signs
    give nearly the same energies, so the choice there barely matters for energy updates.
    Jets without particles get 0.
    """
    log_ratio = torch.clamp(log_e - log_pt, min=0.0)
    weight = torch.where(mask, torch.exp(log_pt), 0.0)
    k = min(n_seeds, mask.shape[1])
    seed_key = torch.where(mask, log_pt, -math.inf)
    seed_key, seed_slots = torch.topk(seed_key, k, dim=1)
    seed_valid = torch.isfinite(seed_key)
    seed_abs_eta = torch.acosh(torch.exp(torch.gather(log_ratio, 1, seed_slots)))
    seed_deta = torch.gather(deta, 1, seed_slots)
    candidates = torch.cat((seed_abs_eta - seed_deta, -seed_abs_eta - seed_deta), dim=1)
    candidate_valid = torch.cat((seed_valid, seed_valid), dim=1)
    predicted = _log_cosh(candidates[:, :, None] + deta[:, None, :])
    residual = (weight[:, None, :] * (predicted - log_ratio[:, None, :]) ** 2).sum(dim=2)
    residual = torch.where(candidate_valid, residual, math.inf)
    best = torch.argmin(residual, dim=1, keepdim=True)
    eta = torch.gather(candidates, 1, best).squeeze(1)
    return torch.where(mask.any(dim=1), eta, 0.0)


def decode_features(
    x: torch.Tensor, mask: torch.Tensor, jet_eta: torch.Tensor | None = None
) -> JetBatch:
    """Padded features ``(N, P, 15)`` + mask → :class:`JetBatch` (float64, jet frame).

    The jet pT and energy come from log pT − log pT ratio and log E − log E ratio (averaged
    over the jet's particles, which all carry the same jet); ``jet_eta`` (``(N,)``) is
    estimated with :func:`estimate_jet_eta` when not given.
    """
    check_padded_batch(x, mask)
    values = x.to(torch.float64)
    valid = mask

    def feature(name: str) -> torch.Tensor:
        return torch.where(valid, values[..., FEATURE_INDEX[name]], 0.0)

    log_pt, log_e = feature("log_pt"), feature("log_e")
    count = valid.sum(dim=1).clamp(min=1)
    log_jet_pt = (log_pt - feature("log_pt_rel")).sum(dim=1) / count
    log_jet_e = (log_e - feature("log_e_rel")).sum(dim=1) / count
    deta, dphi = feature("deta"), feature("dphi")
    pt = torch.where(valid, torch.exp(log_pt), 0.0)
    energy = torch.where(valid, torch.exp(log_e), 0.0)
    if jet_eta is None:
        jet_eta = estimate_jet_eta(log_pt, log_e, deta, valid)
    else:
        jet_eta = torch.as_tensor(jet_eta, dtype=torch.float64, device=x.device).reshape(-1)
        if jet_eta.shape[0] != x.shape[0]:
            raise ConfigError(f"jet_eta has {jet_eta.shape[0]} entries for {x.shape[0]} jets")
    batch = JetBatch(
        pt=pt, deta=deta, dphi=dphi, energy=energy, mask=valid,
        carried=values[..., _CARRIED_INDEX] * valid[..., None],
        jet_eta=jet_eta, remainder=torch.zeros(x.shape[0], 4, dtype=torch.float64, device=x.device),
        capacity=x.shape[1],
    )
    jet_pt, jet_e = torch.exp(log_jet_pt), torch.exp(log_jet_e)
    jet = torch.stack(
        (jet_pt, torch.zeros_like(jet_pt), jet_pt * torch.sinh(jet_eta), jet_e), dim=-1
    )
    return replace(batch, remainder=jet - batch.four_momenta().sum(dim=1))


def encode_features(batch: JetBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`JetBatch` → padded ``(x, mask)``: pT-sorted, derived features recomputed, padding 0."""
    batch = batch.sorted_by_pt()
    jet = batch.jet_four_momentum()
    tiny = torch.finfo(torch.float64).tiny
    log_jet_pt = torch.log(torch.hypot(jet[:, 0], jet[:, 1]).clamp(min=tiny))
    log_jet_e = torch.log(jet[:, 3].clamp(min=tiny))
    valid = batch.mask
    log_pt = torch.log(torch.where(valid, batch.pt, 1.0))
    log_e = torch.log(torch.where(valid, batch.energy, 1.0))
    dphi = wrap_phi(batch.dphi)
    columns = {
        "log_pt": log_pt,
        "log_pt_rel": log_pt - log_jet_pt[:, None],
        "deta": batch.deta,
        "dphi": dphi,
        "log_e": log_e,
        "log_e_rel": log_e - log_jet_e[:, None],
        "delta_r": torch.hypot(batch.deta, dphi),
    }
    for position, name in enumerate(CARRIED_FEATURES):
        columns[name] = batch.carried[..., position]
    x = torch.stack([columns[name] for name in FEATURE_INDEX], dim=-1)
    x = torch.where(valid[..., None], x, 0.0)
    return x.to(dtype), valid.clone()
