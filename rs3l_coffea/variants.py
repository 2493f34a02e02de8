"""Re-simulation variants: the one list of names and their codes.

The code is what ``rs3l_coffea.generation`` writes to ``Event.VariantCode`` and what the
ntuples store in ``variant``. Codes -1..2 follow the published RS3L ``vartype``; 3 was their
Herwig slot, here Vincia shower + alternative string fragmentation; 4 Vincia alone;
5 re-hadronization of the nominal shower. The Pythia settings of each variant live with the
generator (:data:`rs3l_coffea.generation.config.VARIANTS`), keyed by these names. This module
imports nothing heavy, so reading a configuration does not import the generation stack.
"""

from __future__ import annotations

from typing import Literal

VARIANT_CODES: dict[str, int] = {
    "nominal": -1,
    "seed": 0,
    "fsr_up": 1,
    "fsr_down": 2,
    "vincia_althad": 3,
    "vincia": 4,
    "rehadronize": 5,
}
VARIANT_NAMES: dict[int, str] = {code: name for name, code in VARIANT_CODES.items()}
NOMINAL = "nominal"
AUGMENTATION_VARIANTS: tuple[str, ...] = tuple(name for name in VARIANT_CODES if name != NOMINAL)
"""Every variant but the nominal one it is compared with."""

#: :data:`AUGMENTATION_VARIANTS` as a type (spelled out for type checkers; a test checks they agree).
AugmentationName = Literal["seed", "fsr_up", "fsr_down", "vincia_althad", "vincia", "rehadronize"]
