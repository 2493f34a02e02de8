"""Processes, variants, seeds and the validated generation configuration (no heavy imports)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rs3l_coffea.detector.params import DetectorParams
from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.variants import VARIANT_CODES
from rs3l_coffea.variants import VARIANT_NAMES as VARIANT_NAMES  # re-exported

BEAM_ENERGY = 6500.0  # GeV per proton: 13 TeV

_COMMON_HARD = (
    "Beams:eCM = 13000.",
    "PhaseSpace:pTHatMin = 400.",
    "PhaseSpace:pTHatMax = 600.",
)
_Z_TO_NUNU = ("23:onMode = off", "23:onIfAny = 12 14 16", "23:mMin = 70.", "23:mMax = 110.")
_W_TO_QQ = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5", "24:mMin = 60.", "24:mMax = 100.")


@dataclass(frozen=True)
class ProcessSpec:
    """A hard process: its Pythia settings and which particle defines the jet of interest."""

    settings: tuple[str, ...]
    target_ids: tuple[int, ...]  # |PDG id| of the hard-record particle the |eta| window applies to
    description: str


PROCESSES: dict[str, ProcessSpec] = {
    "zh_bb": ProcessSpec(
        (*_COMMON_HARD, "HiggsSM:ffbar2HZ = on", "25:onMode = off", "25:onIfMatch = 5 -5", *_Z_TO_NUNU),
        (25,),
        "ZH, H->bb, Z->nunu: boosted H->bb signal jet",
    ),
    "zj": ProcessSpec(
        (*_COMMON_HARD, "WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2", *_Z_TO_NUNU),
        (1, 2, 3, 4, 5, 21),
        "Z(->nunu)+jet: QCD quark/gluon jet",
    ),
    "wz_qq": ProcessSpec(
        (*_COMMON_HARD, "WeakDoubleBoson:ffbar2ZW = on", *_Z_TO_NUNU, *_W_TO_QQ),
        (24,),
        "WZ, W->qq, Z->nunu: boosted W->qq jet (out-of-domain signal)",
    ),
    "wj_qq": ProcessSpec(
        (*_COMMON_HARD, "WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", *_W_TO_QQ),
        (24,),
        "W+jet, W->qq: boosted W->qq jet recoiling against a QCD jet",
    ),
}

# Alternative string-fragmentation parameters (a hadronization stand-in for Herwig's cluster model).
ALT_HADRONIZATION: tuple[str, ...] = (
    "StringZ:aLund = 0.6",
    "StringZ:bLund = 0.9",
    "StringPT:sigma = 0.36",
)

# Variant name -> extra Pythia settings. The names and their codes (stored in
# Event.VariantCode) are the one list of rs3l_coffea.variants; 3 is the published RS3L
# "Herwig" slot, filled by our closest stand-in.
_VARIANT_SETTINGS: dict[str, tuple[str, ...]] = {
    "nominal": (),
    "seed": (),
    # "up" = more radiation: the FSR alpha_s scale mu_R^2 is multiplied by renormMultFac, so
    # 0.5 (mu_R / sqrt2) raises alpha_s and the emission rate; 2.0 (mu_R * sqrt2) lowers them.
    "fsr_up": ("TimeShower:renormMultFac = 0.5",),
    "fsr_down": ("TimeShower:renormMultFac = 2.0",),
    "vincia_althad": ("PartonShowers:model = 2", *ALT_HADRONIZATION),
    "vincia": ("PartonShowers:model = 2",),
    "rehadronize": (),
}
# Variant name -> (code stored in Event.VariantCode, extra Pythia settings).
VARIANTS: dict[str, tuple[int, tuple[str, ...]]] = {
    name: (code, _VARIANT_SETTINGS[name]) for name, code in VARIANT_CODES.items()
}

# Random streams derived from (seed, chunk index, stream): one per purpose, never shared.
STREAM_HARD = 1
STREAM_SHOWER = 100  # + variant code + 1
STREAM_HADRONIZATION = 200  # + variant code + 1 (only rehadronize uses its own)
STREAM_DETECTOR = 300  # + variant code + 1

PYTHIA_SEED_MAX = 900_000_000  # Pythia accepts seeds 1 .. 900,000,000

# Plans beyond these are refused before any work (a mistyped --chunk-size must not end in a
# MemoryError or a full disk hours later). Chunk numbers are written with five digits, and
# every chunk costs one Pythia initialisation per variant (~0.2 s) plus two files.
MAX_CHUNKS = 100_000
# A lower bound on the output size: generated Delphes-layout files measured 9 kB per event and
# variant (zh_bb, ISR on, 1M showers; /work/shared/NOTES.md) and 10.7-12.8 kB in the 40-event
# files of rs3l_coffea/data/samples (ls -l and the sidecars' n_events_written).
MIN_BYTES_PER_EVENT = 5_000


def derive_seed(seed: int, chunk_index: int, stream: int) -> int:
    """A Pythia-valid seed (1..9e8) that depends only on (seed, chunk_index, stream)."""
    state = np.random.SeedSequence([seed, chunk_index, stream]).generate_state(1, np.uint64)[0]
    return int(state % np.uint64(PYTHIA_SEED_MAX - 1)) + 1


@dataclass(frozen=True)
class GenerationConfig:
    """Everything that defines a generated sample; ``validate()`` runs in ``__post_init__``.

    ``variants`` are written as separate files per chunk; ``chunk_size`` events per file.
    ``isr``/``mpi`` apply to every variant (default ISR on, MPI off, see docs/simulation.md).
    """

    process: str
    n_events: int
    out_dir: Path
    variants: tuple[str, ...] = ("nominal", "seed", "fsr_up", "fsr_down")
    seed: int = 1
    chunk_size: int = 5000
    eta_max: float | None = None
    isr: bool = True
    mpi: bool = False
    batch_size: int = 500
    detector: DetectorParams = field(default_factory=DetectorParams)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "variants", tuple(self.variants))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming a bad value and the valid choices."""
        if self.process not in PROCESSES:
            raise ConfigError(
                f"unknown process {self.process!r}; valid processes: {', '.join(PROCESSES)}"
            )
        if not self.variants:
            raise ConfigError(f"no variants requested; valid variants: {', '.join(VARIANTS)}")
        for variant in self.variants:
            if variant not in VARIANTS:
                raise ConfigError(
                    f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}"
                )
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants listed twice in {list(self.variants)}")
        if "rehadronize" in self.variants and "nominal" not in self.variants:
            raise ConfigError("variant 'rehadronize' re-hadronizes the nominal shower: add 'nominal'")
        for name in ("n_events", "chunk_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.eta_max is not None and not (self.eta_max > 0):
            raise ConfigError(f"eta_max must be positive (or None for no window), got {self.eta_max!r}")
        if not isinstance(self.detector, DetectorParams):
            raise ConfigError(f"detector must be a DetectorParams, got {type(self.detector).__name__}")
        if self.n_chunks > MAX_CHUNKS:
            smallest = -(-self.n_events // MAX_CHUNKS)
            raise ConfigError(
                f"n_events (--events) {self.n_events:,} in chunks of chunk_size (--chunk-size) "
                f"{self.chunk_size:,} makes {self.n_chunks:,} chunk files per variant; at most "
                f"{MAX_CHUNKS:,} are allowed (each costs a Pythia initialisation per variant): "
                f"use a chunk size of at least {smallest:,}"
            )

    @property
    def n_chunks(self) -> int:
        """Number of chunk files per variant."""
        return -(-self.n_events // self.chunk_size)

    def chunk_events(self, chunk_index: int) -> tuple[int, int]:
        """(first global hard-event id, number of events) of a chunk."""
        if not 0 <= chunk_index < self.n_chunks:
            raise ConfigError(
                f"chunk_index {chunk_index} out of range: this config has {self.n_chunks} chunks"
            )
        first = chunk_index * self.chunk_size
        return first, min(self.chunk_size, self.n_events - first)

    def output_path(self, variant: str, chunk_index: int) -> Path:
        """``out_dir/<process>_<variant>_<chunk:05d>.root``."""
        return self.out_dir / f"{self.process}_{variant}_{chunk_index:05d}.root"

    def check_output_dir(self) -> None:
        """Create ``out_dir`` and prove it writable; :class:`InputFileError` otherwise."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.out_dir, prefix=".rs3l-write-test-"):
                pass
        except OSError as error:
            raise InputFileError(
                f"output directory {str(self.out_dir)!r} is not writable: {error.strerror or error}"
            ) from error
        if not os.access(self.out_dir, os.W_OK):
            raise InputFileError(f"output directory {str(self.out_dir)!r} is not writable")

    def estimated_bytes(self, n_events: int | None = None) -> int:
        """A lower bound on the disk space of ``n_events`` (default: all) in every variant."""
        events = self.n_events if n_events is None else n_events
        return events * len(self.variants) * MIN_BYTES_PER_EVENT

    def check_disk_space(self, n_events: int | None = None) -> None:
        """Refuse a plan whose output (``n_events`` still to generate) cannot fit on the disk
        of ``out_dir``: :class:`ConfigError` naming both sizes and the options."""
        need = self.estimated_bytes(n_events)
        free = shutil.disk_usage(self.out_dir).free
        if need > free:
            events = self.n_events if n_events is None else n_events
            raise ConfigError(
                f"{events:,} events (--events) x {len(self.variants)} variants (--variants) need at "
                f"least {need / 1e9:,.1f} GB ({MIN_BYTES_PER_EVENT / 1e3:.0f} kB per event and "
                f"variant), but {str(self.out_dir)!r} (--out) has {free / 1e9:,.1f} GB free"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (for provenance)."""
        out = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        out["out_dir"] = str(self.out_dir)
        out["variants"] = list(self.variants)
        out["detector"] = self.detector.as_dict()
        return out
