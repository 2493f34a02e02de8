"""JetCLR symmetry augmentations on padded jet batches.

Each augmentation maps a padded batch ``(x, mask)`` (torch tensors or numpy arrays, features
in :data:`rs3l_coffea.features.names.FEATURE_NAMES` order) to a new one of the same shape,
type and dtype, drawing its random numbers from the generator passed in. Internally they act
on particle kinematics (:class:`~rs3l_coffea.augment.kinematics.JetBatch`, float64) so that
every derived feature is recomputed consistently; see ``docs/augmentations.md`` for the
physics of each one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from rs3l_coffea.augment._random import GeneratorLike, RandomSource
from rs3l_coffea.augment.kinematics import JetBatch, decode_features, encode_features
from rs3l_coffea.errors import ConfigError

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _as_tensor(values: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values)
    raise ConfigError(f"{what} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}")


class Augmentation(ABC):
    """A random transformation of jets, applied batch-wise.

    Call it as ``x_aug, mask_aug = augmentation(x, mask, generator)``. ``x`` is ``(N, P, 15)``
    float features, ``mask`` ``(N, P)`` bool; numpy in → numpy out, torch in → torch out
    (same dtype and device). ``jet_eta`` (``(N,)``, optional) is the absolute pseudorapidity
    of each jet axis; without it it is estimated from the features (needed only to update
    energies when pseudorapidities change).
    """

    name: ClassVar[str] = ""
    """Registry name (``rotate``, ``translate``, ...)."""

    def __call__(
        self,
        x: ArrayT,
        mask: ArrayT,
        generator: GeneratorLike = None,
        *,
        jet_eta: torch.Tensor | np.ndarray | None = None,
    ) -> tuple[ArrayT, ArrayT]:
        was_numpy = isinstance(x, np.ndarray)
        x_tensor = _as_tensor(x, "x")
        mask_tensor = _as_tensor(mask, "mask")
        if not torch.is_floating_point(x_tensor):
            raise ConfigError(f"features must be floating point, got dtype {x_tensor.dtype}")
        if isinstance(jet_eta, np.ndarray):
            jet_eta = torch.from_numpy(jet_eta)
        batch = decode_features(x_tensor, mask_tensor, jet_eta)
        batch = self.apply(batch, RandomSource(generator, x_tensor.device))
        x_out, mask_out = encode_features(batch, x_tensor.dtype)
        if was_numpy:
            return x_out.numpy(), mask_out.numpy()
        return x_out, mask_out

    @abstractmethod
    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        """Transform particle kinematics; must keep padded slots zero and masks meaningful."""

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({params})"


class Compose(Augmentation):
    """Several augmentations applied in order (one decode/encode round trip for all)."""

    name = "compose"

    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        self.augmentations = list(augmentations)

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        for augmentation in self.augmentations:
            batch = augmentation.apply(batch, random)
        return batch

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"


class Identity(Augmentation):
    """No change (the features are still re-encoded, i.e. sorted and re-derived)."""

    name = "none"

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        return batch


def _check_range(owner: str, param: str, value: Any, low: float, high: float,
                 *, low_open: bool = False, high_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if not math.isfinite(number) or below or above:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{owner}: {param} must be a number in {interval}, got {value!r}")
    return number


class Rotate(Augmentation):
    """Rotate all constituents of each jet about the jet axis in the (Δη, Δφ) plane.

    One angle per jet, uniform in ``[0, 2π)`` (``max_angle`` narrows it to
    ``[-max_angle, max_angle)``). Pairwise ΔR between constituents and ΔR to the axis are
    unchanged; the jet mass is unchanged in the narrow-jet (small-angle) approximation.
    pT is kept; energies follow the new η.
    """

    name = "rotate"

    def __init__(self, max_angle: float | None = None) -> None:
        self.max_angle = (
            None if max_angle is None
            else _check_range("rotate", "max_angle", max_angle, 0.0, math.pi)
        )

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        n_jets = batch.pt.shape[0]
        if self.max_angle is None:
            angle = random.angle((n_jets,))
        else:
            angle = random.uniform((n_jets,), -self.max_angle, self.max_angle)
        cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        return batch.with_angles(
            cos * batch.deta - sin * batch.dphi, sin * batch.deta + cos * batch.dphi
        )


class Translate(Augmentation):
    """Shift all constituents of each jet by one (δη, δφ) per jet.

    Two ranges for the shift (one of the two is used):

    * ``max_shift`` (the default, 1.0 when ``width`` is not given): δη and δφ each uniform in
      ``[-max_shift, max_shift]``, the same for every jet; Δφ is wrapped to ``[-π, π)``.
    * ``width`` (JetCLR's ``translate_jets``): per jet, δη uniform in ``± width × (max Δη − min Δη)``
      and δφ in ``± width × (max Δφ − min Δφ)``, the extents of that jet's own constituents; the
      δφ range is clipped so that every shifted Δφ stays inside ``[-π, π]`` (no wrapping
      needed). A jet's extent is taken over its constituents and its axis (Δη = Δφ = 0), which
      is what JetCLR's peak-to-peak over zero-padded slots gives for axis-centred jets.

    Δη and Δφ stay relative to the original jet axis, so they gain a constant offset per jet
    (ΔR to the axis is recomputed). Pairwise separations and the narrow-jet mass are
    unchanged. pT is kept; energies follow the new η.
    """

    name = "translate"
    DEFAULT_MAX_SHIFT: ClassVar[float] = 1.0

    def __init__(self, max_shift: float | None = None, width: float | None = None) -> None:
        if max_shift is not None and width is not None:
            raise ConfigError(
                f"translate: give either max_shift (a fixed range) or width (JetCLR's per-jet "
                f"range), not both; got max_shift={max_shift!r}, width={width!r}"
            )
        self.width = None if width is None else _check_range("translate", "width", width, 0.0, 10.0)
        self.max_shift = (
            None if self.width is not None
            else _check_range(
                "translate", "max_shift",
                self.DEFAULT_MAX_SHIFT if max_shift is None else max_shift, 0.0, math.pi,
            )
        )

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        n_jets = batch.pt.shape[0]
        if self.width is None:
            shift = random.uniform((n_jets, 2), -self.max_shift, self.max_shift)
            return batch.with_angles(batch.deta + shift[:, :1], batch.dphi + shift[:, 1:])
        low_eta, high_eta, low_phi, high_phi = jetclr_translation_bounds(
            batch.deta, batch.dphi, batch.mask, self.width
        )
        unit = random.uniform((n_jets, 2))
        shift_eta = low_eta + (high_eta - low_eta) * unit[:, 0]
        shift_phi = low_phi + (high_phi - low_phi) * unit[:, 1]
        return batch.with_angles(batch.deta + shift_eta[:, None], batch.dphi + shift_phi[:, None])


def jetclr_translation_bounds(
    deta: torch.Tensor, dphi: torch.Tensor, mask: torch.Tensor, width: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-jet ``(low_eta, high_eta, low_phi, high_phi)`` of JetCLR's translation (``(N,)`` each).

    Extents and the Δφ clip use the constituents and the axis (0), see :class:`Translate`.
    Jets without particles get an empty range (no shift).
    """
    zero = torch.zeros((), dtype=deta.dtype, device=deta.device)
    inf = torch.tensor(math.inf, dtype=deta.dtype, device=deta.device)
    eta_max = torch.clamp(torch.where(mask, deta, -inf).amax(dim=1), min=zero)
    eta_min = torch.clamp(torch.where(mask, deta, inf).amin(dim=1), max=zero)
    phi_max = torch.clamp(torch.where(mask, dphi, -inf).amax(dim=1), min=zero)
    phi_min = torch.clamp(torch.where(mask, dphi, inf).amin(dim=1), max=zero)
    eta_range = width * (eta_max - eta_min)
    phi_range = width * (phi_max - phi_min)
    low_phi = torch.maximum(-phi_range, -math.pi - phi_min)
    high_phi = torch.minimum(phi_range, math.pi - phi_max)
    return -eta_range, eta_range, low_phi, high_phi


class Smear(Augmentation):
    """Soft (collinear-safe) smearing: η and φ of each constituent get Gaussian noise.

    The width is ``lambda_soft / max(pT, pt_floor)`` (GeV), so a 100 GeV particle moves by
    ~0.001 and a 1 GeV particle by ~0.1 for the default Λ_soft = 100 MeV: soft radiation is
    reshuffled, hard structure kept (JetCLR's "distortion"). pT is kept; energies follow η.
    """

    name = "smear"

    def __init__(self, lambda_soft: float = 0.1, pt_floor: float = 0.1) -> None:
        self.lambda_soft = _check_range("smear", "lambda_soft", lambda_soft, 0.0, 10.0)
        self.pt_floor = _check_range("smear", "pt_floor", pt_floor, 0.0, 1000.0, low_open=True)

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        width = self.lambda_soft / torch.clamp(batch.pt, min=self.pt_floor)
        noise = random.normal((*batch.pt.shape, 2)) * width[..., None]
        return batch.with_angles(batch.deta + noise[..., 0], batch.dphi + noise[..., 1])


class CollinearSplit(Augmentation):
    """Split constituents into two collinear particles sharing their pT and energy.

    Each split particle keeps its direction (Δη, Δφ, ΔR) and its carried features (charge,
    impact parameters, type flags, copied to both halves); pT and E are shared as
    ``(z, 1 − z)`` with ``z`` uniform in ``[min_fraction, 1 − min_fraction]`` per split (or fixed
    to ``fraction`` when given), so the
    jet four-momentum is conserved exactly. A jet with n particles and capacity P (the padded
    length) gets ``min(n, P − n, max_splits)`` splits: only free slots are used. Which particles
    are split: ``choice="random"`` (uniform among the jet's particles, as JetCLR) or
    ``"hardest"`` (the highest-pT ones). The result is re-sorted by pT.
    """

    name = "split"
    CHOICES: ClassVar[tuple[str, ...]] = ("random", "hardest")

    def __init__(
        self,
        max_splits: int | None = None,
        choice: str = "random",
        min_fraction: float = 0.0,
        fraction: float | None = None,
    ) -> None:
        if max_splits is not None and (
            isinstance(max_splits, bool) or not isinstance(max_splits, int | np.integer)
            or max_splits < 0
        ):
            raise ConfigError(
                f"split: max_splits must be a non-negative integer or None, got {max_splits!r}"
            )
        if choice not in self.CHOICES:
            raise ConfigError(f"split: choice must be one of {', '.join(self.CHOICES)}, got {choice!r}")
        self.max_splits = None if max_splits is None else int(max_splits)
        self.choice = choice
        self.min_fraction = _check_range("split", "min_fraction", min_fraction, 0.0, 0.5)
        self.fraction = (
            None if fraction is None
            else _check_range("split", "fraction", fraction, 0.0, 1.0, low_open=True, high_open=True)
        )

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        n_jets, width = batch.pt.shape
        n_valid = batch.n_particles
        n_split = torch.minimum(n_valid, torch.clamp(batch.capacity - n_valid, min=0))
        if self.max_splits is not None:
            n_split = torch.clamp(n_split, max=self.max_splits)
        # Rank the particles of each jet by the selection key; the top n_split are split.
        if self.choice == "random":
            key = random.uniform((n_jets, width))
        else:
            key = batch.pt.clone()
        key = torch.where(batch.mask, key, -1.0)
        order = torch.argsort(key, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(width, device=order.device).expand(n_jets, width))
        selected = batch.mask & (rank < n_split[:, None])

        if self.fraction is None:
            fraction = random.uniform((n_jets, width), self.min_fraction, 1.0 - self.min_fraction)
        else:
            fraction = torch.full_like(batch.pt, self.fraction)
        # Guard the half-open interval: z = 0 would leave a zero-pT particle (log pT = -inf).
        fraction = torch.clamp(fraction, min=1e-6, max=1.0 - 1e-6)

        jet_index, slot = torch.nonzero(selected, as_tuple=True)
        destination = n_valid[jet_index] + rank[jet_index, slot]
        new_width = max(width, int((n_valid + n_split).max()) if n_jets else width)

        def grow(values: torch.Tensor) -> torch.Tensor:
            if new_width == width:
                return values.clone()
            pad = torch.zeros(
                (n_jets, new_width - width, *values.shape[2:]), dtype=values.dtype,
                device=values.device,
            )
            return torch.cat((values, pad), dim=1)

        keep = torch.where(selected, fraction, 1.0)
        pt, energy = grow(batch.pt * keep), grow(batch.energy * keep)
        pt[jet_index, destination] = batch.pt[jet_index, slot] * (1.0 - fraction[jet_index, slot])
        energy[jet_index, destination] = (
            batch.energy[jet_index, slot] * (1.0 - fraction[jet_index, slot])
        )
        deta, dphi, mask, carried = (grow(v) for v in (batch.deta, batch.dphi, batch.mask, batch.carried))
        deta[jet_index, destination] = batch.deta[jet_index, slot]
        dphi[jet_index, destination] = batch.dphi[jet_index, slot]
        carried[jet_index, destination] = batch.carried[jet_index, slot]
        mask[jet_index, destination] = True
        return replace(batch, pt=pt, energy=energy, deta=deta, dphi=dphi, mask=mask, carried=carried)


class Dropout(Augmentation):
    """Drop each constituent independently with probability ``p`` (never all of a jet).

    If every particle of a jet would be dropped, its hardest particle is kept. The jet
    four-momentum loses the dropped particles (like an inefficiency), so the pT and E ratios
    of the survivors grow.
    """

    name = "dropout"

    def __init__(self, p: float = 0.1) -> None:
        self.p = _check_range("dropout", "p", p, 0.0, 1.0, high_open=True)

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        drop = (random.uniform(tuple(batch.pt.shape)) < self.p) & batch.mask
        survivors = batch.mask & ~drop
        emptied = batch.mask.any(dim=1) & ~survivors.any(dim=1)
        hardest = torch.argmax(torch.where(batch.mask, batch.pt, -1.0), dim=1)
        rescue = torch.zeros_like(survivors)
        rescue[torch.arange(batch.pt.shape[0], device=rescue.device), hardest] = True
        survivors = survivors | (rescue & emptied[:, None])

        def zero_dropped(values: torch.Tensor) -> torch.Tensor:
            keep = survivors if values.dim() == 2 else survivors[..., None]
            return torch.where(keep, values, 0.0)

        return replace(
            batch,
            pt=zero_dropped(batch.pt), deta=zero_dropped(batch.deta), dphi=zero_dropped(batch.dphi),
            energy=zero_dropped(batch.energy), carried=zero_dropped(batch.carried), mask=survivors,
        )
