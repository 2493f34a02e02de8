"""JetCLR symmetry augmentations for RS3L positive pairs.

Rotations about the jet axis, η-φ translations (fixed range or JetCLR's per-jet width),
soft (collinear-safe) smearing, collinear splitting and constituent dropout, and two-view
recipes (the ``jetclr`` preset: both views rotated and translated, the partner split twice and
smeared, in JetCLR's order), vectorised over padded ``(x, mask)`` batches (torch or
numpy, seeded by the generator passed in) and over awkward jets + constituents. Every
derived feature is recomputed from the changed kinematics. Physics and conventions:
``docs/augmentations.md``.

>>> aug = build_augmentation("rotate,translate,smear,split")
>>> x_aug, mask_aug = aug(x, mask, torch.Generator().manual_seed(1))  # doctest: +SKIP
"""

from __future__ import annotations

from rs3l_coffea.augment.constituents import augment_constituents, augmented_features
from rs3l_coffea.augment.kinematics import (
    CARRIED_FEATURES,
    KINEMATIC_FEATURES,
    JetBatch,
    decode_features,
    encode_features,
    estimate_jet_eta,
)
from rs3l_coffea.augment.registry import (
    AUGMENTATIONS,
    build_augmentation,
    parse_spec,
    partition_spec,
    training_overrides,
    training_settings,
)
from rs3l_coffea.augment.symmetry import (
    Augmentation,
    CollinearSplit,
    Compose,
    Dropout,
    Identity,
    Rotate,
    Smear,
    Translate,
    jetclr_translation_bounds,
)
from rs3l_coffea.augment.views import PRESETS, TwoViewAugmentation, jetclr_recipe

__all__ = [
    "AUGMENTATIONS",
    "CARRIED_FEATURES",
    "KINEMATIC_FEATURES",
    "PRESETS",
    "Augmentation",
    "CollinearSplit",
    "Compose",
    "Dropout",
    "Identity",
    "JetBatch",
    "Rotate",
    "Smear",
    "Translate",
    "TwoViewAugmentation",
    "augment_constituents",
    "augmented_features",
    "build_augmentation",
    "decode_features",
    "encode_features",
    "estimate_jet_eta",
    "jetclr_recipe",
    "jetclr_translation_bounds",
    "parse_spec",
    "partition_spec",
    "training_overrides",
    "training_settings",
]
