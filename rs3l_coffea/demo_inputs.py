"""Compact per-jet inputs of ``rs3l demo``: selected generated jets with their constituents.

``rs3l_coffea/data/samples/demo_jets.npz`` (:data:`COMPACT_INPUTS`) holds the first 1,000
selected jets (``JetSelection.generated``: pT > 450 GeV, m > 10 GeV, |eta| < 1.5) of each
process (``zh_bb``, ``zj``) and shower variant (``nominal``, ``seed``, ``fsr_up``,
``fsr_down``, ``vincia``) of 2 x 2,400 hard events from ``rs3l generate``, as read by
:func:`rs3l_coffea.io.jets_from_events` (anti-kT R = 0.8 reclustering of the Delphes-layout
candidates) with generator truth labels. Constituents are stored relative to their jet in
eta/phi and as float16 (relative precision ~1e-3) to stay at ~4.4 MB; the tagger's outputs on
them differ from full precision at that level. Plain arrays in ``np.savez_compressed`` with a
JSON provenance string, read with ``allow_pickle=False``.

Regenerate (needs ``pythia8mc``: ``pip install -e ".[gen]"``)::

    python -m rs3l_coffea.demo_inputs build-inputs --work-dir /tmp/rs3l-demo-gen
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.atomic import atomic_path
from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.kinematics import delta_phi, wrap_phi
from rs3l_coffea.samples import BUNDLED_PROCESSES, BUNDLED_VARIANTS, bundled_sample_dir

COMPACT_INPUTS = "demo_jets.npz"
"""File name of the compact per-jet inputs in the bundled sample directory."""
COMPACT_EVENTS = 2400
COMPACT_SEEDS = {"zh_bb": 21, "zj": 22}
COMPACT_JETS_PER_VARIANT = 1000
"""Selected jets kept per process and variant in :data:`COMPACT_INPUTS`."""

# --------------------------------------------------------------------------------------------
_JET_FIELDS = ("pt", "eta", "phi", "mass")
# Constituents relative to their jet in eta/phi (float16 keeps ~1e-3 rad there), the rest as
# float16 (relative precision 1e-3) and small integers: ~470 bytes per jet after zlib.
_CONSTITUENT_FIELDS = ("pt", "deta", "dphi", "energy", "charge", "pdg_id", "d0", "dz")


def compact_inputs_path() -> Path:
    """Path of the bundled compact per-jet inputs (:data:`COMPACT_INPUTS`)."""
    path = bundled_sample_dir() / COMPACT_INPUTS
    if not path.is_file():
        raise InputFileError(f"compact demo inputs {path} are missing (incomplete installation?)")
    return path


def write_compact_inputs(
    root_files: Mapping[tuple[str, str], str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    jets_per_variant: int = COMPACT_JETS_PER_VARIANT,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Selected jets (``JetSelection.generated``) of generated Delphes-layout files as one npz.

    ``root_files`` maps ``(process, variant)`` to a file of ``rs3l generate``; the first
    ``jets_per_variant`` selected jets of each are kept (fewer selected jets is an error).
    """
    from rs3l_coffea.features import JetSelection, truth_labels
    from rs3l_coffea.io import gen_particles_from_events, jets_from_events, open_events

    columns: dict[str, list[np.ndarray]] = {}
    names = {"process": sorted({p for p, _ in root_files}), "variant": []}
    names["variant"] = [v for v in BUNDLED_VARIANTS if any(v == w for _, w in root_files)]
    for (process, variant), path in root_files.items():
        events, source, origin = open_events(path, mode="eager")
        jets, constituents = jets_from_events(events, source=source, origin=origin)
        truth = truth_labels(jets, gen_particles_from_events(events, source))
        selected = np.asarray(ak.to_numpy(ak.flatten(JetSelection.generated().mask(jets, constituents))))
        keep = np.flatnonzero(selected)[:jets_per_variant]
        if keep.size < jets_per_variant:
            raise InputFileError(
                f"{origin}: {keep.size} selected jets, need {jets_per_variant}: generate more events"
            )
        event_of_jet = np.repeat(np.arange(len(jets)), ak.to_numpy(ak.num(jets, axis=1)))
        flat_jets = ak.flatten(jets)[keep]
        flat_constituents = ak.flatten(constituents, axis=1)[keep]
        per_jet = {
            "process": np.full(keep.size, names["process"].index(process), dtype=np.int8),
            "variant": np.full(keep.size, names["variant"].index(variant), dtype=np.int8),
            "entry": event_of_jet[keep].astype(np.int32),
            "truth": truth[keep].astype(np.int8),
            "n_constituents": ak.to_numpy(ak.num(flat_constituents, axis=1)).astype(np.int16),
        }
        for field in _JET_FIELDS:
            per_jet[f"jet_{field}"] = ak.to_numpy(flat_jets[field]).astype(np.float32)
        relative = {
            "deta": flat_constituents.eta - flat_jets.eta,
            "dphi": delta_phi(flat_constituents.phi, flat_jets.phi),
        }
        for field in _CONSTITUENT_FIELDS:
            values = relative[field] if field in relative else flat_constituents[field]
            dtype = {"charge": np.int8, "pdg_id": np.int16}.get(field, np.float16)
            per_jet[f"c_{field}"] = ak.to_numpy(ak.flatten(values)).astype(dtype)
        for key, value in per_jet.items():
            columns.setdefault(key, []).append(value)
    arrays = {key: np.concatenate(parts) for key, parts in columns.items()}
    arrays["process_names"] = np.array(names["process"], dtype=str)
    arrays["variant_names"] = np.array(names["variant"], dtype=str)
    arrays["provenance"] = np.array(json.dumps(dict(provenance or {}), sort_keys=True))
    target = Path(out)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        # Plain arrays only (the readers load with allow_pickle=False); naming the flag also
        # tells the type checker that **arrays does not supply it.
        np.savez_compressed(handle, allow_pickle=False, **arrays)
    return target


def build_compact_inputs(
    work_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    events: int = COMPACT_EVENTS,
    jets_per_variant: int = COMPACT_JETS_PER_VARIANT,
) -> Path:
    """Generate both processes in all five variants into ``work_dir`` and write the npz.

    This is the one command behind :data:`COMPACT_INPUTS` (see the samples README); it needs
    ``pythia8mc`` (``pip install -e ".[gen]"``). The generator is reproducible array for array.
    """
    from rs3l_coffea.generation import GenerationConfig, generate

    root_files: dict[tuple[str, str], Path] = {}
    settings = []
    for process in BUNDLED_PROCESSES:
        config = GenerationConfig(
            process=process, n_events=events, out_dir=Path(work_dir), variants=BUNDLED_VARIANTS,
            seed=COMPACT_SEEDS[process], chunk_size=events, eta_max=1.5,
        )
        paths = generate(config)
        for variant in BUNDLED_VARIANTS:
            (match,) = [p for p in paths if Path(p).name == f"{process}_{variant}_00000.root"]
            root_files[(process, variant)] = Path(match)
        settings.append({"process": process, "events": events, "seed": COMPACT_SEEDS[process]})
    provenance = {
        "command": "python -m rs3l_coffea.demo_inputs build-inputs --work-dir DIR",
        "generation": settings,
        "variants": list(BUNDLED_VARIANTS),
        "eta_max": 1.5,
        "selection": "JetSelection.generated (pt > 450 GeV, m > 10 GeV, |eta| < 1.5)",
        "jets_per_variant": jets_per_variant,
    }
    target = Path(out) if out is not None else bundled_sample_dir() / COMPACT_INPUTS
    return write_compact_inputs(
        root_files, target, jets_per_variant=jets_per_variant, provenance=provenance
    )


@dataclasses.dataclass
class CompactJets:
    """One process and variant of the compact inputs, one jet per pseudo-event."""

    jets: ak.Array
    constituents: ak.Array
    truth: np.ndarray
    entry: np.ndarray


def load_compact_inputs(
    path: str | os.PathLike[str] | None = None,
    processes: Sequence[str] = BUNDLED_PROCESSES,
    variants: Sequence[str] = BUNDLED_VARIANTS,
    jets_per_variant: int | None = None,
) -> dict[tuple[str, str], CompactJets]:
    """Read :data:`COMPACT_INPUTS` back into the readers' uniform ``(jets, constituents)``.

    Jets are events x jets with one jet per event; constituents carry ``pt, eta, phi, energy,
    charge, pdg_id, d0, dz`` as :func:`~rs3l_coffea.io.jets_from_events` gives them (float64).
    """
    source = Path(path) if path is not None else compact_inputs_path()
    try:
        with np.load(source, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, KeyError) as error:
        raise InputFileError(f"cannot read compact demo inputs {source}: {error}") from error
    process_names = arrays["process_names"].tolist()
    variant_names = arrays["variant_names"].tolist()
    for kind, wanted, valid in (("process", processes, process_names),
                                ("variant", variants, variant_names)):
        unknown = [w for w in wanted if w not in valid]
        if unknown:
            raise ConfigError(f"{source}: no {kind} {unknown}; valid: {', '.join(valid)}")
    offsets = np.concatenate([[0], np.cumsum(arrays["n_constituents"].astype(np.int64))])
    out: dict[tuple[str, str], CompactJets] = {}
    for process in processes:
        for variant in variants:
            rows = np.flatnonzero(
                (arrays["process"] == process_names.index(process))
                & (arrays["variant"] == variant_names.index(variant))
            )[:jets_per_variant]
            particles = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows])
            counts = arrays["n_constituents"][rows].astype(np.int64)
            jet = {f: arrays[f"jet_{f}"][rows].astype(np.float64) for f in _JET_FIELDS}
            flat = {f: arrays[f"c_{f}"][particles] for f in _CONSTITUENT_FIELDS}
            jet_eta, jet_phi = np.repeat(jet["eta"], counts), np.repeat(jet["phi"], counts)
            phi = jet_phi + flat["dphi"].astype(np.float64)
            constituents = {
                "pt": flat["pt"].astype(np.float64),
                "eta": jet_eta + flat["deta"].astype(np.float64),
                "phi": wrap_phi(phi),
                "energy": flat["energy"].astype(np.float64),
                "charge": flat["charge"].astype(np.int32),
                "pdg_id": flat["pdg_id"].astype(np.int32),
                "d0": flat["d0"].astype(np.float64),
                "dz": flat["dz"].astype(np.float64),
            }
            one = np.ones(len(rows), dtype=np.int64)
            jets = ak.unflatten(ak.zip(jet), one)
            per_jet = ak.unflatten(ak.zip(constituents), counts)
            out[(process, variant)] = CompactJets(
                jets=jets,
                constituents=ak.unflatten(per_jet, one),
                truth=arrays["truth"][rows].astype(np.int64),
                entry=arrays["entry"][rows].astype(np.int64),
            )
    return out


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m rs3l_coffea.demo_inputs build-inputs --work-dir DIR [--out FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m rs3l_coffea.demo_inputs",
        description="Regenerate the compact per-jet inputs of rs3l demo (needs pythia8mc).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-inputs", help="generate and compact the demo's jets")
    build.add_argument("--work-dir", required=True, help="folder for the generated ROOT files")
    build.add_argument("--out", default=None, help=f"npz to write (default: the bundled {COMPACT_INPUTS})")
    build.add_argument("--events", type=int, default=COMPACT_EVENTS)
    build.add_argument("--jets-per-variant", type=int, default=COMPACT_JETS_PER_VARIANT)
    args = parser.parse_args(argv)
    path = build_compact_inputs(
        args.work_dir, args.out, events=args.events, jets_per_variant=args.jets_per_variant
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
