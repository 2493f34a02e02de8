"""``rs3l ntuple``: re-simulated Delphes-layout files (or published RS3L h5 files) → training ntuples.

Input files from ``rs3l_coffea.generation`` carry ``Event.HardEventID`` and
``Event.VariantCode`` per event and a provenance record naming the process and chunk. Files
are grouped by (process, chunk); within a group the nominal file's jets pass the selection
and each variant file's jets (no kinematic selection: a shower variation may push the
counterpart of a selected jet just below a cut) are matched to them by hard-event id and ΔR
(:func:`~rs3l_coffea.training.ntuple.match_jets`). Features, jet kinematics and truth labels
come from :func:`rs3l_coffea.features.pipeline.features_from_file`, for the jets the rows need
only: no substructure (the ntuple stores none), no truth labels for partners, and of a variant
file only the jets within ΔR of a selected nominal jet of their hard event (:class:`NearJets`;
the others could not be matched).

Ntuple ``hard_event_id`` = ``(crc32(process) & 0xFFFF) << 40 | HardEventID``: unique across
processes (each process numbers its hard events from 0), stable across runs.

``label`` (the class index the trainer uses) comes from the jet's truth ``jettype``
(:class:`rs3l_coffea.features.JetLabel`): 1 for ``signal`` labels (default ``H_BB``),
0 for ``background`` labels (default every other known label), -1 otherwise (unused).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.training.ntuple import (
    DEFAULT_MAX_DELTA_R,
    JetTable,
    build_pair_rows,
    delta_r,
    read_published_h5,
    write_shards,
)
from rs3l_coffea.variants import VARIANT_CODES, VARIANT_NAMES

if TYPE_CHECKING:  # the features package imports fastjet; only the annotation is needed here
    from rs3l_coffea.features import JetSelection

EVENT_ID_BRANCH = "Event/Event.HardEventID"
VARIANT_BRANCH = "Event/Event.VariantCode"
PROCESS_SHIFT = 40


def process_event_offset(process: str) -> int:
    """The high bits that make hard-event ids of different processes distinct."""
    return (zlib.crc32(process.encode()) & 0xFFFF) << PROCESS_SHIFT


def class_labels(
    jettype: np.ndarray, signal: Sequence[str] = ("H_BB",), background: Sequence[str] | None = None
) -> np.ndarray:
    """Class index per jet from ``JetLabel`` codes: 1 signal, 0 background, -1 neither."""
    from rs3l_coffea.features import JetLabel

    def codes(names: Sequence[str], what: str) -> list[int]:
        out = []
        for name in names:
            if name not in JetLabel.__members__:
                raise ConfigError(f"unknown {what} label {name!r}; valid: {list(JetLabel.__members__)}")
            out.append(int(JetLabel[name]))
        return out

    signal_codes = codes(signal, "signal")
    if background is None:
        background_codes = [int(v) for v in JetLabel if v != JetLabel.UNKNOWN and int(v) not in signal_codes]
    else:
        background_codes = codes(background, "background")
    jettype = np.asarray(jettype)
    return np.where(
        np.isin(jettype, signal_codes), 1, np.where(np.isin(jettype, background_codes), 0, -1)
    ).astype(np.int32)


def _file_identity(path: Path) -> tuple[str, int, int]:
    """(process, chunk, variant code) of a generated file; checks it carries hard-event ids."""
    from rs3l_coffea.io import open_tree

    with open_tree(path, "Delphes", what="generated file") as opened:
        tree = opened.tree
        for branch in (EVENT_ID_BRANCH, VARIANT_BRANCH):
            if branch not in tree:
                raise InputFileError(
                    f"{path}: branch {branch!r} missing; rs3l ntuple needs files written by rs3l generate"
                )
        codes = np.unique(np.asarray(tree[VARIANT_BRANCH].array(library="ak")).reshape(-1))
        try:
            from rs3l_coffea.generation.writer import read_provenance

            provenance = read_provenance(path)
        except Exception as error:
            raise InputFileError(f"{path}: no readable rs3l_provenance record: {error}") from error
    if len(codes) != 1:
        raise InputFileError(f"{path}: expected one variant per file, found codes {codes.tolist()}")
    return str(provenance["process"]), int(provenance["chunk_index"]), int(codes[0])


def _jet_table(
    path: Path, offset: int, selection: JetSelection | None, recluster_radius: float,
    signal: Sequence[str], background: Sequence[str] | None, max_particles: int,
    near: NearJets | None = None,
) -> JetTable:
    """The jets of one generated file. ``near``: a partner file, whose jets are kept only where
    they can be matched (:class:`NearJets`) and get no truth label (the ntuple stores none)."""
    from rs3l_coffea.features.pipeline import features_from_file

    # The ntuple stores only pt/eta/phi/mass per jet: no soft drop or N2 (half the cost of a file).
    result = features_from_file(
        path, source="delphes", recluster_radius=recluster_radius, selection=selection,
        max_particles=max_particles, observables="kinematics", truth=near is None, jet_filter=near,
    )
    hard_event_id = np.asarray(result["hard_event_id"], np.int64) + offset
    return _table_from_features(result, hard_event_id, signal, background)


class NearJets:
    """Jet filter of a partner file: jets within ``ΔR < max_delta_r`` of a selected nominal jet of
    the same hard event. Every other jet has no candidate in :func:`match_jets`, so dropping it
    before its features are built leaves the pairs unchanged (same ΔR formula, same strict cut)."""

    def __init__(self, nominal: JetTable, offset: int, max_delta_r: float) -> None:
        order = np.argsort(nominal.hard_event_id, kind="stable")
        self.ids = nominal.hard_event_id[order] - offset  # the files' own Event.HardEventID
        self.eta = np.asarray(nominal.eta, np.float64)[order]
        self.phi = np.asarray(nominal.phi, np.float64)[order]
        self.max_delta_r = max_delta_r

    def __call__(self, jets: ak.Array, hard_event_id: np.ndarray) -> ak.Array:
        counts = np.asarray(ak.to_numpy(ak.num(jets, axis=1)), np.int64)
        jet_event_id = np.repeat(np.asarray(hard_event_id, np.int64), counts)
        eta = np.asarray(ak.to_numpy(ak.flatten(jets.eta)), np.float64)
        phi = np.asarray(ak.to_numpy(ak.flatten(jets.phi)), np.float64)
        lo = np.searchsorted(self.ids, jet_event_id, side="left")
        n = np.searchsorted(self.ids, jet_event_id, side="right") - lo
        jet = np.repeat(np.arange(len(eta)), n)
        candidate = np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        close = delta_r(eta[jet], phi[jet], self.eta[candidate], self.phi[candidate]) < self.max_delta_r
        near = np.zeros(len(eta), bool)
        near[jet[close]] = True
        return ak.unflatten(near, counts)


def _table_from_features(
    result: dict, hard_event_id: np.ndarray, signal: Sequence[str], background: Sequence[str] | None
) -> JetTable:
    """A :class:`JetTable` from :func:`features_from_file` output and the jets' hard-event ids
    (``UNKNOWN`` labels where the result has no ``label`` column)."""
    jettype = np.asarray(result["label"] if "label" in result else np.zeros(len(hard_event_id)), np.int32)
    return JetTable(
        hard_event_id=hard_event_id,
        jet_index=np.asarray(result["jet"], np.int32),
        pt=np.asarray(result["pt"], np.float32),
        eta=np.asarray(result["eta"], np.float64),
        phi=np.asarray(result["phi"], np.float64),
        mass=np.asarray(result["mass"], np.float32),
        features=result["features"],
        mask=result["mask"],
        label=class_labels(jettype, signal, background),
        jettype=jettype,
    )


def _generated_rows(
    files: Sequence[Path], selection: JetSelection | None, max_delta_r: float, recluster_radius: float,
    signal: Sequence[str], background: Sequence[str] | None, max_particles: int,
) -> Iterator[dict[str, np.ndarray]]:
    from rs3l_coffea.features import JetSelection

    groups: dict[tuple[str, int], dict[int, Path]] = defaultdict(dict)
    for path in files:
        process, chunk, code = _file_identity(path)
        if code in groups[process, chunk]:
            other = groups[process, chunk][code]
            raise InputFileError(f"{path} and {other} are both variant {code} of {process} chunk {chunk}")
        groups[process, chunk][code] = path
    every_jet = JetSelection(pt_min=0.0, abs_eta_max=5.0, min_constituents=1)
    for (process, chunk), members in sorted(groups.items()):
        nominal_code = VARIANT_CODES["nominal"]
        if nominal_code not in members:
            names = [str(p) for p in members.values()]
            raise InputFileError(f"no nominal file for {process} chunk {chunk} (have {names})")
        offset = process_event_offset(process)
        nominal = _jet_table(
            members[nominal_code], offset, selection, recluster_radius, signal, background, max_particles
        )
        if len(nominal) == 0:
            continue
        near = NearJets(nominal, offset, max_delta_r)
        variants = {}
        for code, path in members.items():
            if code == nominal_code:
                continue
            variants[VARIANT_NAMES[code]] = _jet_table(
                path, offset, every_jet, recluster_radius, signal, background, max_particles, near
            )
        yield build_pair_rows(nominal, variants, max_delta_r)


def build_ntuples(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    selection: str = "generated",
    shard_size: int = 10_000,
    max_delta_r: float = DEFAULT_MAX_DELTA_R,
    recluster_radius: float = 0.8,
    signal: Sequence[str] = ("H_BB",),
    background: Sequence[str] | None = None,
    max_particles: int = 100,
    unpaired: bool = False,
    source: str = "auto",
) -> list[Path]:
    """Write training ntuples from generated ROOT files or published RS3L ``.h5`` files.

    ``unpaired``: any file the readers support (Delphes, PFNano, NanoAOD v15; ``source``),
    every selected jet one row with ``variant = -1`` and no partner: for fine-tuning, or for
    pretraining with symmetry-augmented partners (``data.partner: symmetry``). Hard-event ids
    are then ``(crc32(file name) & 0xFFFF) << 40 | entry``.

    ``inputs`` are paths or globs. ``selection`` names a
    :meth:`rs3l_coffea.features.JetSelection.named` preset applied to nominal jets.
    Returns the shard paths; ``out_dir/ntuple.json`` describes them.
    """
    import glob

    files: list[Path] = []
    for pattern in inputs:
        matched = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
        if not matched:
            raise InputFileError(f"no input file matches {str(pattern)!r}")
        for name in matched:
            if not Path(name).is_file():
                raise InputFileError(f"input file {name} does not exist")
            files.append(Path(name))
    if not 0 < max_delta_r:
        raise ConfigError(f"max_delta_r must be > 0, got {max_delta_r}")
    h5_files = [f for f in files if f.suffix in (".h5", ".hdf5")]
    root_files = [f for f in files if f not in h5_files]
    if h5_files and root_files:
        raise InputFileError("mix of .h5 and ROOT inputs: convert them in separate rs3l ntuple runs")
    if h5_files:
        rows = _published_rows(h5_files)
    elif unpaired:
        from rs3l_coffea.features import JetSelection

        rows = _unpaired_rows(
            root_files, JetSelection.named(selection), source, signal, background, max_particles
        )
    else:
        from rs3l_coffea.features import JetSelection

        rows = _generated_rows(
            root_files, JetSelection.named(selection), max_delta_r, recluster_radius, signal, background,
            max_particles,
        )
    shards = write_shards(rows, out_dir, shard_size=shard_size, sources=[str(f) for f in files])
    if not shards:
        raise InputFileError(f"no jet passed the selection {selection!r} in {[str(f) for f in files]}")
    return shards


def _published_rows(files: Sequence[Path]) -> Iterator[dict[str, np.ndarray]]:
    offset = 0
    for path in files:
        rows = read_published_h5(path)
        rows["hard_event_id"] = rows["hard_event_id"] + offset  # keep pairs of different files apart
        offset += len(rows["hard_event_id"])
        yield rows


def _unpaired_rows(
    files: Sequence[Path], selection: JetSelection | None, source: str, signal: Sequence[str],
    background: Sequence[str] | None, max_particles: int,
) -> Iterator[dict[str, np.ndarray]]:
    from rs3l_coffea.features.pipeline import features_from_file

    for path in files:
        result = features_from_file(
            path, source=source, selection=selection, max_particles=max_particles, observables="kinematics"
        )
        hard_event_id = np.asarray(result["event"], np.int64) + process_event_offset(path.name)
        table = _table_from_features(result, hard_event_id, signal, background)
        if len(table):
            yield build_pair_rows(table, {})
