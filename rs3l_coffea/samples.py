"""The small re-simulated sample shipped with the package (``rs3l_coffea/data/samples``).

Two hard processes (``zh_bb``: H -> b b-bar jets, ``zj``: quark/gluon jets), 40 hard events
each, every one showered in five variants (``nominal``, ``seed``, ``fsr_up``, ``fsr_down``,
``vincia``) by ``rs3l generate`` and written in the Delphes layout with JSON provenance
sidecars. Event *i* of every variant file of a process is the same hard event. The files are
package data, so they exist after a plain ``pip install`` (no download); the exact command that
regenerates them is in ``rs3l_coffea/data/samples/README.md``.

>>> from rs3l_coffea.samples import bundled_fileset
>>> fileset = bundled_fileset(variants=("nominal", "fsr_up"))   # doctest: +SKIP
>>> sorted(fileset)                                              # doctest: +SKIP
['zh_bb_fsr_up', 'zh_bb_nominal', 'zj_fsr_up', 'zj_nominal']

The sample is for demonstrations, examples and tests: ~20 selected jets per process and
variant are far too few for physics conclusions (scale up with ``rs3l generate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rs3l_coffea.errors import ConfigError, InputFileError

BUNDLED_PROCESSES: tuple[str, ...] = ("zh_bb", "zj")
BUNDLED_VARIANTS: tuple[str, ...] = ("nominal", "seed", "fsr_up", "fsr_down", "vincia")
BUNDLED_EVENTS_PER_FILE = 40
TREE_NAME = "Delphes"


def bundled_sample_dir() -> Path:
    """Directory holding the bundled ROOT files and their ``.json`` sidecars."""
    directory = Path(__file__).resolve().parent / "data" / "samples"
    if not directory.is_dir():
        raise InputFileError(
            f"the bundled sample directory {directory} is missing: the package was installed "
            "without its data files (reinstall rs3l-coffea)"
        )
    return directory


def bundled_file(process: str, variant: str) -> Path:
    """Path of the bundled ROOT file of one process and variant (checked to exist)."""
    _check_choice("bundled process", process, BUNDLED_PROCESSES)
    _check_choice("bundled variant", variant, BUNDLED_VARIANTS)
    path = bundled_sample_dir() / f"{process}_{variant}_00000.root"
    if not path.is_file():
        raise InputFileError(f"bundled sample file {path} is missing (incomplete installation?)")
    return path


def bundled_files(
    processes: Sequence[str] = BUNDLED_PROCESSES, variants: Sequence[str] = BUNDLED_VARIANTS
) -> dict[tuple[str, str], Path]:
    """``{(process, variant): path}`` for the requested processes and variants."""
    return {(p, v): bundled_file(p, v) for p in processes for v in variants}


def bundled_fileset(
    processes: Sequence[str] = BUNDLED_PROCESSES,
    variants: Sequence[str] = BUNDLED_VARIANTS,
    *,
    dataset_per_variant: bool = False,
) -> dict[str, dict[str, Any]]:
    """A coffea fileset of the bundled sample, files given as ``{path: "Delphes"}``.

    Default: one dataset per process (``"zh_bb"``, ``"zj"``) holding all its variant files,
    metadata ``{"process": ...}``. :class:`rs3l_coffea.processors.VariantProcessor` then reads
    each event's variant from ``Event.VariantCode``, so its histograms get a ``dataset`` axis
    with the processes and a ``variant`` axis with the variants, which is what
    :func:`rs3l_coffea.evaluation.wasserstein_table` compares.

    With ``dataset_per_variant`` every file is its own dataset ``"<process>_<variant>"`` with
    metadata ``{"process": ..., "variant": ...}`` (useful to run variants separately).
    """
    files = bundled_files(processes, variants)
    fileset: dict[str, dict[str, Any]] = {}
    for (process, variant), path in files.items():
        if dataset_per_variant:
            fileset[f"{process}_{variant}"] = {
                "files": {str(path): TREE_NAME},
                "metadata": {"process": process, "variant": variant},
            }
        else:
            entry = fileset.setdefault(
                process, {"files": {}, "metadata": {"process": process}}
            )
            entry["files"][str(path)] = TREE_NAME
    return fileset


def coffea_sample(name: str) -> Path:
    """Path of one of coffea's small real test files (``"pfnano.root"``, ``"delphes.root"``,
    ``"nano_tt_v15.root"``, ``"nano_dy.root"``, ``"bad_delphes.root"``), from any folder.

    The files are not ours to ship: they come from coffea's source distribution on the package
    index, fetched once with ``pip download`` (so your index and proxy settings apply) into
    ``~/.cache/rs3l-coffea`` (``$RS3L_TESTDATA`` overrides; see :mod:`rs3l_coffea.testing`).
    Later calls read the cache offline.

    >>> from rs3l_coffea.samples import coffea_sample
    >>> coffea_sample("pfnano.root").name                            # doctest: +SKIP
    'pfnano.root'
    """
    from rs3l_coffea.testing import KNOWN_SAMPLES, sample_path

    _check_choice("coffea sample", name, KNOWN_SAMPLES)
    return sample_path(name)


def _check_choice(kind: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


__all__ = [
    "BUNDLED_EVENTS_PER_FILE",
    "BUNDLED_PROCESSES",
    "BUNDLED_VARIANTS",
    "TREE_NAME",
    "bundled_file",
    "bundled_files",
    "bundled_fileset",
    "bundled_sample_dir",
    "coffea_sample",
]
