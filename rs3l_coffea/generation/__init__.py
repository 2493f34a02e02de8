"""Re-simulated Pythia8 samples for RS3L: one hard process, several shower/hadronization variants.

Public API (pythia8mc is imported only when generation actually runs)::

    from rs3l_coffea.generation import GenerationConfig, generate, generate_chunk
    config = GenerationConfig(process="zh_bb", n_events=1000, out_dir="out",
                              variants=("nominal", "seed", "fsr_up", "fsr_down"), seed=1)
    paths = generate(config, workers=2)          # or generate(config, client=dask_client)

See ``docs/simulation.md`` for the file layout and the physics settings.
"""

from rs3l_coffea.generation.config import (
    PROCESSES,
    VARIANT_NAMES,
    VARIANTS,
    GenerationConfig,
    derive_seed,
)
from rs3l_coffea.generation.run import ChunkTiming, generate, generate_chunk, sidecar_path
from rs3l_coffea.generation.writer import DelphesWriter, read_provenance

__all__ = [
    "PROCESSES",
    "VARIANTS",
    "VARIANT_NAMES",
    "ChunkTiming",
    "DelphesWriter",
    "GenerationConfig",
    "derive_seed",
    "generate",
    "generate_chunk",
    "read_provenance",
    "sidecar_path",
]
