"""Two-view augmentation recipes: different transformations for the anchor and the partner.

JetCLR (bmdillon/JetCLR, ``scripts/run_jetclr.py``) does not augment only the positive
partner: both views of a jet are rotated and translated, and the partner is in addition split
and smeared. :class:`TwoViewAugmentation` expresses such a recipe as three chains::

    common  = shared(x)            # drawn once per jet
    anchor  = anchor_chain(common)
    partner = partner_chain(common)

:data:`PRESETS` holds named recipes (``jetclr``). Calling a two-view augmentation like any
other (``aug(x, mask, generator)``) returns the partner view only; :meth:`TwoViewAugmentation.views`
returns both, and :func:`rs3l_coffea.training.partners.make_partner_fn` uses it when present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rs3l_coffea.augment._random import GeneratorLike, RandomSource
from rs3l_coffea.augment.kinematics import JetBatch, decode_features, encode_features
from rs3l_coffea.augment.symmetry import (
    Augmentation,
    CollinearSplit,
    Compose,
    Identity,
    Rotate,
    Smear,
    Translate,
    _as_tensor,
)
from rs3l_coffea.errors import ConfigError

ArrayLike = torch.Tensor | np.ndarray


def _chain(augmentations: Sequence[Augmentation]) -> Augmentation:
    if not augmentations:
        return Identity()
    return augmentations[0] if len(augmentations) == 1 else Compose(augmentations)


class TwoViewAugmentation(Augmentation):
    """``shared`` once per jet, then ``anchor`` for the first view and ``partner`` for the second.

    ``aug(x, mask, generator)`` gives the partner view (``partner(shared(x))``), so a two-view
    recipe also works where a single transform is expected. :meth:`views` gives both views.
    """

    name = "two_view"

    def __init__(
        self,
        shared: Sequence[Augmentation],
        anchor: Sequence[Augmentation],
        partner: Sequence[Augmentation],
        label: str = "two_view",
    ) -> None:
        self.shared = _chain(list(shared))
        self.anchor = _chain(list(anchor))
        self.partner = _chain(list(partner))
        self.label = label

    def apply(self, batch: JetBatch, random: RandomSource) -> JetBatch:
        return self.partner.apply(self.shared.apply(batch, random), random)

    def views(
        self,
        x: ArrayLike,
        mask: ArrayLike,
        generator: GeneratorLike = None,
        *,
        x_partner: ArrayLike | None = None,
        mask_partner: ArrayLike | None = None,
        jet_eta: ArrayLike | None = None,
    ) -> tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]:
        """``(x_anchor, mask_anchor, x_partner, mask_partner)``.

        Without ``x_partner`` both views come from ``x`` through one shared draw (JetCLR:
        ``anchor(shared(x))`` and ``partner(shared(x))``). With ``x_partner`` (a re-simulated
        counterpart) the anchor view is ``anchor(shared(x))`` and the partner view
        ``partner(shared(x_partner))`` with its own shared draw. Random numbers are drawn in
        the order shared, anchor, partner (then the partner's shared draw when it has its own).
        """
        if (x_partner is None) != (mask_partner is None):
            raise ConfigError("views: give both x_partner and mask_partner, or neither")
        was_numpy = isinstance(x, np.ndarray)
        x_tensor, mask_tensor = _as_tensor(x, "x"), _as_tensor(mask, "mask")
        if not torch.is_floating_point(x_tensor):
            raise ConfigError(f"features must be floating point, got dtype {x_tensor.dtype}")
        if isinstance(jet_eta, np.ndarray):
            jet_eta = torch.from_numpy(jet_eta)
        random = RandomSource(generator, x_tensor.device)
        common = self.shared.apply(decode_features(x_tensor, mask_tensor, jet_eta), random)
        anchor = self.anchor.apply(common, random)
        if x_partner is None:
            partner = self.partner.apply(common, random)
        else:
            xp, mp = _as_tensor(x_partner, "x_partner"), _as_tensor(mask_partner, "mask_partner")
            partner_common = self.shared.apply(decode_features(xp, mp, None), random)
            partner = self.partner.apply(partner_common, random)
        out = (*encode_features(anchor, x_tensor.dtype), *encode_features(partner, x_tensor.dtype))
        if was_numpy:
            return tuple(t.numpy() for t in out)  # type: ignore[return-value]
        return out

    def __repr__(self) -> str:
        return (
            f"TwoViewAugmentation({self.label!r}, shared={self.shared!r}, anchor={self.anchor!r}, "
            f"partner={self.partner!r})"
        )


def jetclr_recipe() -> TwoViewAugmentation:
    """JetCLR's training augmentations (``run_jetclr.py`` with its default ``extargs.py``).

    ``x_i = rotate(x)``; ``x_j = rotate(x_i)``, split, split, smear (``distort_jets``,
    strength 0.1 GeV, pT floor 0.1 GeV), translate (``translate_jets``, width 1.0); ``x_i`` is
    translated too. Splits share pT and E (ours, four-momentum conserving; JetCLR splits pT).
    """
    return TwoViewAugmentation(
        shared=[Rotate()],
        anchor=[Translate(width=1.0)],
        partner=[
            Rotate(),
            CollinearSplit(),
            CollinearSplit(),
            Smear(lambda_soft=0.1, pt_floor=0.1),
            Translate(width=1.0),
        ],
        label="jetclr",
    )


PRESETS: dict[str, Callable[[], TwoViewAugmentation]] = {"jetclr": jetclr_recipe}
"""Named two-view recipes (a spec that names one must name nothing else)."""
