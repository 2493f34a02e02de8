"""The hook deciding how the positive partner of a jet is made for contrastive pretraining.

A *partner function* takes a pair batch from :class:`~rs3l_coffea.training.dataset.JetStream`
(``mode="pairs"``: keys ``x``, ``mask``, ``x_partner``, ``mask_partner``, ``variant``, ``label``)
and a ``torch.Generator`` (seeded per step by the trainer, so augmentations are reproducible
and resume exactly) and returns the two views ``(x_a, mask_a, x_b, mask_b)``:

- ``resim``: anchor = nominal jet, partner = its re-simulated counterpart (RS3L);
- ``symmetry``: anchor = nominal jet, partner = a symmetry-augmented copy of the same jet (JetCLR);
- ``resim+symmetry``: anchor = nominal jet, partner = the augmented re-simulated counterpart.

Symmetry transforms come from ``rs3l_coffea.augment.build_augmentation(names, **params)``,
which returns ``f(x, mask, generator) -> (x, mask)``; any callable of that signature can be
passed to :func:`make_partner_fn` instead. A two-view recipe (an object with a ``views``
method, e.g. the ``jetclr`` preset) transforms the anchor as well: JetCLR rotates and
translates both views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

Views = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
PartnerFn = Callable[[Mapping[str, torch.Tensor], torch.Generator], Views]
Augmentation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def resim_partner(batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> Views:
    """Nominal jet and its re-simulated counterpart, unchanged."""
    return batch["x"], batch["mask"], batch["x_partner"], batch["mask_partner"]


def make_partner_fn(
    kind: str,
    augmentation: Augmentation | None = None,
    augmentation_names: Sequence[str] = (),
    augmentation_params: Mapping[str, Any] | None = None,
) -> PartnerFn:
    """Partner function for ``kind`` in ``resim``, ``symmetry``, ``resim+symmetry``.

    For the symmetry kinds give either ``augmentation`` (a callable) or ``augmentation_names``
    (built with ``rs3l_coffea.augment.build_augmentation``).
    """
    from rs3l_coffea.errors import ConfigError

    if kind == "resim":
        return resim_partner
    if kind not in ("symmetry", "resim+symmetry"):
        raise ConfigError(
            f"config key data.partner: invalid value {kind!r}; valid choices: "
            "['resim', 'symmetry', 'resim+symmetry']"
        )
    if augmentation is None:
        if not augmentation_names:
            raise ConfigError(
                f"config key data.symmetry_augmentations: partner {kind!r} needs at least one augmentation"
            )
        try:
            from rs3l_coffea.augment import build_augmentation
        except ImportError as error:
            raise ConfigError(
                f"partner {kind!r} needs rs3l_coffea.augment.build_augmentation, which is not available"
            ) from error
        augmentation = build_augmentation(list(augmentation_names), **dict(augmentation_params or {}))
    transform = augmentation
    two_views = getattr(augmentation, "views", None)

    if kind == "symmetry":

        def symmetry_partner(batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> Views:
            if two_views is not None:
                return two_views(batch["x"].clone(), batch["mask"].clone(), generator)
            x_b, mask_b = transform(batch["x"].clone(), batch["mask"].clone(), generator)
            return batch["x"], batch["mask"], x_b, mask_b

        return symmetry_partner

    def resim_symmetry_partner(batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> Views:
        if two_views is not None:
            return two_views(
                batch["x"].clone(), batch["mask"].clone(), generator,
                x_partner=batch["x_partner"].clone(), mask_partner=batch["mask_partner"].clone(),
            )
        x_b, mask_b = transform(batch["x_partner"].clone(), batch["mask_partner"].clone(), generator)
        return batch["x"], batch["mask"], x_b, mask_b

    return resim_symmetry_partner
