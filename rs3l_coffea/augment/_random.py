"""One random-number interface over ``torch.Generator`` and ``numpy.random.Generator``.

The augmentations are written once, in torch (float64 internally). Whichever generator the
caller passes decides where the random numbers come from, so a fixed seed in either library
reproduces the output exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rs3l_coffea.errors import ConfigError

GeneratorLike = torch.Generator | np.random.Generator | None


class RandomSource:
    """Draw uniform and normal float64 tensors from a torch or numpy generator.

    ``None`` uses torch's global generator (not reproducible unless ``torch.manual_seed``
    was called): pass an explicit generator whenever reproducibility matters.
    """

    def __init__(self, generator: GeneratorLike, device: torch.device) -> None:
        if generator is not None and not isinstance(generator, torch.Generator | np.random.Generator):
            raise ConfigError(
                f"generator must be a torch.Generator, a numpy.random.Generator or None, "
                f"got {type(generator).__name__}"
            )
        self._generator = generator
        self._device = device

    def uniform(self, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Uniform draws in ``[low, high)``, float64, on the data's device."""
        if isinstance(self._generator, np.random.Generator):
            values = torch.from_numpy(self._generator.uniform(low, high, size=shape))
            return values.to(self._device)
        gen_device = self._generator.device if self._generator is not None else self._device
        unit = torch.rand(shape, generator=self._generator, dtype=torch.float64, device=gen_device)
        return (low + (high - low) * unit).to(self._device)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal draws, float64, on the data's device."""
        if isinstance(self._generator, np.random.Generator):
            return torch.from_numpy(self._generator.standard_normal(size=shape)).to(self._device)
        gen_device = self._generator.device if self._generator is not None else self._device
        values = torch.randn(shape, generator=self._generator, dtype=torch.float64, device=gen_device)
        return values.to(self._device)

    def angle(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Angles uniform in ``[0, 2π)``."""
        return self.uniform(shape, 0.0, 2.0 * math.pi)
