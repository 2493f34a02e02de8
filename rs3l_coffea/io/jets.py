"""Jets and their constituents: reclustering, stored-jet association, constituent gathering.

Phase 1 (:func:`stored_jet_columns`, on NanoEvents of any mode) collects the stored-jet and
association columns by name; phase 2 (the builders, plain awkward on one partition) turns
the named columns (:mod:`rs3l_coffea.io.sources`) into ``{"jet": ..., "constituents": ...}``
records. :class:`ByName` carries the named columns through ``dask_awkward.map_partitions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea._awkward import is_typetracer, typetracer_result
from rs3l_coffea.errors import InputFileError, MissingConstituentsError
from rs3l_coffea.io.sources import (
    ReadContext,
    SourceFormat,
    build_candidates,
    collection,
    counts,
    required_fields,
)
from rs3l_coffea.kinematics import four_momenta, good_particle_records

DEFAULT_RECLUSTER_RADIUS = 0.8
DEFAULT_RECLUSTER_MIN_PT = 20.0
_DELPHES_UID_MASK = 0xFFFFFF
_JET_FIELDS = ("pt", "eta", "phi", "mass")


# --------------------------------------------------------------------------------------------
# phase 1: stored-jet and association columns
# --------------------------------------------------------------------------------------------
def stored_jet_columns(
    events: Any, fmt: SourceFormat, jets: str, context: ReadContext
) -> tuple[dict[str, Any], str]:
    """``({"jet.<field>": ..., "jet.refs" | "assoc.candidate_index", "assoc.jet_index"}, tables)``
    for the stored jet collection ``jets``; ``tables`` names the tables used (for the jets'
    ``rs3l_constituents`` parameter)."""
    where = context.where
    coll = collection(events, jets, where, "stored jets")
    if fmt.layout == "delphes":
        found = required_fields(coll, jets, [*fmt.jet_columns.values(), "Constituents"], where)
        columns = {f"jet.{field}": found[branch] for field, branch in fmt.jet_columns.items()}
        columns["jet.refs"] = found["Constituents"]["refs"]
        return columns, f"{jets}.Constituents -> " + "+".join(fmt.candidate_collections)

    found = required_fields(coll, jets, list(fmt.jet_columns.values()), where)
    columns = {f"jet.{field}": found[branch] for field, branch in fmt.jet_columns.items()}
    cand_name = fmt.candidates[0].collection
    assoc_name = fmt.association(jets)
    if assoc_name not in events.fields:
        tables = sorted(
            f for f in events.fields if f.endswith(cand_name) and f != cand_name and "." not in f
        )
        raise MissingConstituentsError(
            f"{assoc_name!r} not found{where}: jets {jets!r} need a candidate-index table named "
            f"<jets>{cand_name} (fields jetIdx and a candidate index); tables of that kind in "
            f"the file: {', '.join(tables) or 'none'}. Recluster instead (--recluster-radius R on the "
            "command line, recluster_radius=R in Python)"
        )
    assoc = collection(events, assoc_name, where, f"{jets} constituents")
    index_field = next((f for f in fmt.index_fields if f in assoc.fields), None)
    if index_field is None:
        raise InputFileError(
            f"{assoc_name}{where} has no candidate-index branch (looked for "
            f"{', '.join(f'{assoc_name}_{f}' for f in fmt.index_fields)}; fields: "
            f"{', '.join(assoc.fields)})"
        )
    found = required_fields(assoc, assoc_name, [index_field, "jetIdx"], where)
    columns["assoc.candidate_index"] = found[index_field]
    columns["assoc.jet_index"] = found["jetIdx"]
    return columns, f"{assoc_name}.{index_field} -> {cand_name}"


# --------------------------------------------------------------------------------------------
# transport through map_partitions
# --------------------------------------------------------------------------------------------
class ByName:
    """Call ``builder(columns)`` with the named columns handed over positionally.

    ``dask_awkward.map_partitions`` takes positional collections; this wrapper pairs them
    with their names again, so no code counts positions. On typetracers (dask graph
    construction) it runs the builder on length-zero stand-ins (fastjet cannot run on
    typetracers) and returns a typetracer of the result's form.
    """

    def __init__(self, builder: Callable[[dict[str, Any]], ak.Array], names: Sequence[str]) -> None:
        self.builder, self.names = builder, tuple(names)

    def _call(self, *values: Any) -> ak.Array:
        return self.builder(dict(zip(self.names, values, strict=True)))

    def __call__(self, *values: Any) -> ak.Array:
        if is_typetracer(*values):
            return typetracer_result(self._call, *values)
        return self._call(*values)


# --------------------------------------------------------------------------------------------
# phase 2: builders
# --------------------------------------------------------------------------------------------
def _combine(jets: ak.Array, constituents: ak.Array) -> ak.Array:
    return ak.zip({"jet": jets, "constituents": constituents}, depth_limit=2, with_name=None)


def _jet_record(columns: Mapping[str, Any]) -> ak.Array:
    return ak.zip(
        {
            field: ak.values_astype(ak.without_parameters(columns[field]), np.float64)
            for field in _JET_FIELDS
        },
        with_name=None,
    )


def _stored_jet_record(columns: Mapping[str, Any]) -> ak.Array:
    return _jet_record({field: columns[f"jet.{field}"] for field in _JET_FIELDS})


class ReclusterBuilder:
    """Cluster all good candidates of each event with anti-kT (one fastjet call per partition)."""

    def __init__(self, fmt: SourceFormat, radius: float, min_pt: float, context: ReadContext) -> None:
        self.fmt, self.radius, self.min_pt, self.context = fmt, radius, min_pt, context

    def __call__(self, columns: dict[str, Any]) -> ak.Array:
        cands, _ = build_candidates(columns, self.fmt, self.context)
        jets, constituents = recluster(cands, self.radius, self.min_pt)
        return _combine(jets, constituents)


def recluster(
    candidates: ak.Array, radius: float = DEFAULT_RECLUSTER_RADIUS, min_pt: float = 0.0
) -> tuple[ak.Array, ak.Array]:
    """Anti-kT jets of ``candidates`` (events x particles, uniform fields) with fastjet.

    Returns ``(jets, constituents)``: jets sorted by pT descending with ``pt, eta, phi, mass``
    from fastjet's four-momenta (E-scheme), constituents the matching candidate records.
    Unusable candidates (:func:`rs3l_coffea.kinematics.good_particles`: non-finite values,
    pT <= 0, E <= 0 or |eta| >= 10) are dropped first (fastjet segfaults on Delphes'
    pT = 0, eta = 999.9 tracks).
    """
    import vector

    from rs3l_coffea._fastjet import import_fastjet

    fastjet = import_fastjet()  # banner off: it would go to standard output

    vector.register_awkward()
    candidates = candidates[good_particle_records(candidates)]
    momenta = four_momenta(candidates)
    sequence = fastjet.ClusterSequence(
        momenta, fastjet.JetDefinition(fastjet.antikt_algorithm, float(radius))
    )
    raw_jets = sequence.inclusive_jets(min_pt)
    index = sequence.constituent_index(min_pt)
    order = ak.argsort(raw_jets.pt, axis=1, ascending=False)
    raw_jets, index = raw_jets[order], index[order]
    jets = _jet_record({field: getattr(raw_jets, field) for field in _JET_FIELDS})  # vector properties
    # Guard against fastjet's tiny negative m^2 for near-massless jets: mass is >= 0.
    jets = ak.with_field(jets, ak.where(np.isfinite(jets.mass), jets.mass, 0.0), "mass")
    constituents = gather_per_jet(candidates, index)
    return jets, constituents


def gather_per_jet(candidates: ak.Array, index: ak.Array) -> ak.Array:
    """``candidates[event][index[event][jet]]`` for events x jets x k indices, vectorised."""
    n_cands = counts(ak.num(candidates, axis=1))
    offsets = np.concatenate([[0], np.cumsum(n_cands)]).astype(np.int64)
    jets_per_event = counts(ak.num(index, axis=1))
    per_jet = counts(ak.flatten(ak.num(index, axis=2)))
    event_of_jet = np.repeat(np.arange(len(jets_per_event), dtype=np.int64), jets_per_event)
    flat_index = counts(ak.flatten(index, axis=None))
    event_of_particle = np.repeat(event_of_jet, per_jet)
    flat = ak.flatten(candidates)[offsets[event_of_particle] + flat_index]
    return ak.unflatten(ak.unflatten(flat, per_jet), jets_per_event)


class DelphesStoredBuilder:
    """Resolve a stored Delphes jet collection's TRefArray ``Constituents`` (eager/virtual)."""

    def __init__(self, fmt: SourceFormat, name: str, context: ReadContext) -> None:
        self.fmt, self.name, self.context = fmt, name, context

    def __call__(self, columns: dict[str, Any]) -> ak.Array:
        cands, uid = build_candidates(columns, self.fmt, self.context, with_uid=True)
        n_events = len(cands)
        # One global key per candidate: (event << 24) | (fUniqueID & 0xFFFFFF). TRef ids are
        # unique within an event across all collections, so a sorted join resolves every ref.
        event_of_cand = np.repeat(np.arange(n_events, dtype=np.int64), counts(ak.num(cands)))
        cand_keys = (event_of_cand << 24) | (
            ak.to_numpy(ak.flatten(uid)).astype(np.int64) & _DELPHES_UID_MASK
        )
        order = np.argsort(cand_keys, kind="stable")
        sorted_keys = cand_keys[order]

        refs = ak.without_parameters(columns["jet.refs"])
        jets_per_event = counts(ak.num(refs, axis=1))
        refs_per_jet = counts(ak.flatten(ak.num(refs, axis=2)))
        event_of_jet = np.repeat(np.arange(n_events, dtype=np.int64), jets_per_event)
        event_of_ref = np.repeat(event_of_jet, refs_per_jet)
        ref_keys = (event_of_ref << 24) | (
            ak.to_numpy(ak.flatten(refs, axis=None)).astype(np.int64) & _DELPHES_UID_MASK
        )
        position = np.searchsorted(sorted_keys, ref_keys)
        position = np.minimum(position, max(len(sorted_keys) - 1, 0))
        matched = (
            sorted_keys[position] == ref_keys if len(sorted_keys) else np.zeros(0, dtype=bool)
        )
        if len(ref_keys) and not np.all(matched):
            bad_event = int(event_of_ref[~matched][0])
            raise InputFileError(
                f"{int(np.sum(~matched))} constituent reference(s) of {self.name} do not point to "
                f"{'/'.join(self.fmt.candidate_collections)} (first in event {bad_event}); use a "
                "particle-flow jet collection or recluster (--recluster-radius R on the command line, recluster_radius=R in Python)"
            )
        flat = ak.flatten(cands)[order[position]] if len(ref_keys) else ak.flatten(cands)[:0]
        constituents = ak.unflatten(ak.unflatten(flat, refs_per_jet), jets_per_event)
        constituents = constituents[good_particle_records(constituents)]
        return _combine(_stored_jet_record(columns), constituents)


class NanoStoredBuilder:
    """Group a (Fat)JetPFCand(s) association by ``jetIdx`` and gather the candidates."""

    def __init__(self, fmt: SourceFormat, name: str, context: ReadContext) -> None:
        self.fmt, self.name, self.context = fmt, name, context

    def __call__(self, columns: dict[str, Any]) -> ak.Array:
        cands, _ = build_candidates(columns, self.fmt, self.context)
        jets = _stored_jet_record(columns)
        jet_idx, cand_idx = columns["assoc.jet_index"], columns["assoc.candidate_index"]
        n_events = len(jets)
        jets_per_event = counts(ak.num(jets))
        cands_per_event = counts(ak.num(cands))
        assoc_per_event = counts(ak.num(jet_idx))
        event_of_assoc = np.repeat(np.arange(n_events), assoc_per_event)
        flat_jet = counts(ak.flatten(jet_idx))
        flat_cand = counts(ak.flatten(cand_idx))
        bad = (flat_jet < 0) | (flat_jet >= jets_per_event[event_of_assoc])
        bad |= (flat_cand < 0) | (flat_cand >= cands_per_event[event_of_assoc])
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            raise InputFileError(
                f"{self.name} constituent association{self.context.where} has an out-of-range "
                f"index in event {int(event_of_assoc[first])} (jetIdx={flat_jet[first]}, "
                f"candidate index={flat_cand[first]})"
            )
        jet_offsets = np.concatenate([[0], np.cumsum(jets_per_event)])
        cand_offsets = np.concatenate([[0], np.cumsum(cands_per_event)])
        global_jet = jet_offsets[event_of_assoc] + flat_jet
        order = np.argsort(global_jet, kind="stable")
        per_jet = np.bincount(global_jet, minlength=int(jet_offsets[-1]))
        flat = ak.flatten(cands)[(cand_offsets[event_of_assoc] + flat_cand)[order]]
        constituents = ak.unflatten(ak.unflatten(flat, per_jet), jets_per_event)
        constituents = constituents[good_particle_records(constituents)]
        return _combine(jets, constituents)
