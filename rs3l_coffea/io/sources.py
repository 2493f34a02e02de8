"""Column tables of the supported file formats, and the uniform candidates built from them.

In the spirit of coffea's NanoEvents schemas, a file format is *data*: a :class:`SourceFormat`
names the tree, the branches that identify the format, the candidate collections with the
branch behind every uniform field (:class:`CandidateTable`), the stored-jet columns, the
generator record and the unit conventions. A format that follows an existing layout (Delphes
``Collection.Field`` branches with TRefArray constituents, or NanoAOD ``Collection_field``
branches with a ``<Jets><Candidates>`` index table) is added by adding a table to
:data:`FORMATS`, not code.

Columns travel between the two reading phases by *name*: phase 1 (:func:`candidate_columns`,
on NanoEvents of any mode) returns ``{"<collection>.<field>": column}`` with uniform field
names, phase 2 (:func:`build_candidates`, plain awkward on one partition) reads them back by
the same names. Missing optional branches travel as ``None``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import awkward as ak
import numpy as np

from rs3l_coffea.errors import InputFileError
from rs3l_coffea.kinematics import energy_from_pt_eta_mass


class MissingImpactParametersWarning(UserWarning):
    """The candidates have no d0/dz branches: every candidate gets d0 = dz = 0."""


MAX_ABS_CHARGE = 2  # PF candidates and Delphes tracks carry +-1; 2 leaves room, 1e10 does not
PFNANO_NO_TRACK = -1.0  # PFNano's d0/dz (cm) for candidates without track details
DELPHES_NEUTRAL_HADRON_PDG = 130  # EFlowNeutralHadron has no PID; K0L is CMS PF's convention
INT32_MAX = 2**31 - 1
CM_TO_MM = 10.0


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class CandidateTable:
    """One candidate collection: the file branch behind each uniform field.

    ``columns`` maps a uniform field (``pt, eta, phi, mass, charge, pdg_id, d0, dz, uid,
    puppi_weight``) to the branch names tried in order (the first present wins). Fields in
    ``optional`` may be absent (they then travel as ``None``). A table with ``pdg_id`` set
    holds massless neutral towers: ``pt`` is their transverse energy, ``E = ET cosh(eta)``,
    charge and impact parameters are 0 and every candidate gets that PDG id.
    """

    collection: str
    columns: Mapping[str, tuple[str, ...]]
    optional: frozenset[str] = frozenset()
    pdg_id: int | None = None

    def key(self, field: str) -> str:
        """The name a column of this table travels under between the phases."""
        return f"{self.collection}.{field}"


@dataclasses.dataclass(frozen=True)
class GenTable:
    """Generator-record collection and the branch behind each uniform field."""

    collection: str
    columns: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """Everything the readers know about one file format (see the module docstring).

    Attributes:
        name: ``"delphes"``, ``"pfnano"``, ``"nanoaod"``.
        tree: the TTree holding the events.
        layout: ``"delphes"`` (``Collection.Field`` branches, ``Collection_size`` counters,
            stored jets reference constituents through a TRefArray) or ``"nanoaod"``
            (``Collection_field`` branches, ``nCollection`` counters, a ``<Jets><Candidates>``
            table with ``jetIdx`` and a candidate index).
        schema: coffea NanoEvents schema class name.
        branch_prefixes, branches: a tree holds this format when a top-level branch starts
            with one of ``branch_prefixes`` or is one of ``branches``.
        candidates: candidate tables, concatenated in this order.
        jet_columns: uniform jet field -> branch of a stored jet collection.
        default_jets: stored collection read by default; ``None`` means recluster.
        index_fields: candidate-index field names of the association table (nanoaod layout).
        length_to_mm: factor from the stored d0/dz unit to mm.
        no_track_placeholder: d0 = dz value the format writes for candidates without track
            details; such candidates and all neutral ones get d0 = dz = 0. ``None``: stored
            as measured.
        extra_collections: further collections to read (event header).
        gen: generator record.
    """

    name: str
    tree: str
    layout: Literal["delphes", "nanoaod"]
    schema: str
    branch_prefixes: tuple[str, ...]
    branches: tuple[str, ...]
    candidates: tuple[CandidateTable, ...]
    jet_columns: Mapping[str, str]
    default_jets: str | None
    gen: GenTable
    index_fields: tuple[str, ...] = ()
    length_to_mm: float = 1.0
    no_track_placeholder: float | None = None
    extra_collections: tuple[str, ...] = ()
    event_id_branches: frozenset[str] = frozenset()

    def branch(self, collection: str, field: str) -> str:
        """The file's name of ``collection``'s branch ``field`` (for messages)."""
        return f"{collection}.{field}" if self.layout == "delphes" else f"{collection}_{field}"

    @property
    def candidate_collections(self) -> tuple[str, ...]:
        return tuple(table.collection for table in self.candidates)

    @property
    def puppi_weights(self) -> bool:
        return any("puppi_weight" in table.columns for table in self.candidates)

    def association(self, jets: str) -> str:
        """The candidate-index table of jet collection ``jets`` (nanoaod layout)."""
        return f"{jets}{self.candidates[0].collection}"


_TOWER = {"pt": ("ET",), "eta": ("Eta",), "phi": ("Phi",), "uid": ("fUniqueID",)}
_NANO_CANDIDATE_COLUMNS = {
    "pt": ("pt",), "eta": ("eta",), "phi": ("phi",), "mass": ("mass",), "pdg_id": ("pdgId",),
    # CMSSW's NanoAOD PF-candidate table calls the transverse impact parameter dxy.
    "charge": ("charge",), "d0": ("d0", "dxy"), "dz": ("dz",), "puppi_weight": ("puppiWeight",),
}
_NANO_OPTIONAL = frozenset({"charge", "d0", "dz"})  # NanoAOD v15 PFCand has none of them
_NANO_JET_COLUMNS = {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass"}
_NANO_GEN = GenTable(
    "GenPart",
    _frozen({"pt": "pt", "eta": "eta", "phi": "phi", "pdg_id": "pdgId", "status": "status",
             "mother": "genPartIdxMother"}),
)
_NANO_INDEX_FIELDS = ("pFCandsIdx", "pfCandIdx", "candIdx", "pFCandIdx")
_NANO_EVENT_IDS = frozenset({"run", "luminosityBlock", "event"})

_PFNANO = SourceFormat(
    name="pfnano",
    tree="Events",
    layout="nanoaod",
    schema="PFNanoAODSchema",
    branch_prefixes=(),
    branches=("nPFCands",),
    candidates=(CandidateTable("PFCands", _frozen(_NANO_CANDIDATE_COLUMNS), _NANO_OPTIONAL),),
    jet_columns=_frozen(_NANO_JET_COLUMNS),
    default_jets="FatJet",
    gen=_NANO_GEN,
    index_fields=_NANO_INDEX_FIELDS,
    length_to_mm=CM_TO_MM,
    no_track_placeholder=PFNANO_NO_TRACK,
    event_id_branches=_NANO_EVENT_IDS,
)

FORMATS: Mapping[str, SourceFormat] = _frozen({
    "delphes": SourceFormat(
        name="delphes",
        tree="Delphes",
        layout="delphes",
        schema="FlatDelphesSchema",
        branch_prefixes=("EFlowTrack", "EFlowPhoton"),
        branches=(),
        candidates=(
            CandidateTable(
                "EFlowTrack",
                _frozen({"pt": ("PT",), "eta": ("Eta",), "phi": ("Phi",), "mass": ("Mass",),
                         "charge": ("Charge",), "pdg_id": ("PID",), "d0": ("D0",), "dz": ("DZ",),
                         "uid": ("fUniqueID",)}),
                # Impact parameters are optional in our generator output; Delphes always writes them.
                optional=frozenset({"d0", "dz"}),
            ),
            CandidateTable("EFlowPhoton", _frozen(_TOWER), pdg_id=22),
            CandidateTable("EFlowNeutralHadron", _frozen(_TOWER), pdg_id=DELPHES_NEUTRAL_HADRON_PDG),
        ),
        jet_columns=_frozen({"pt": "PT", "eta": "Eta", "phi": "Phi", "mass": "Mass"}),
        default_jets=None,
        gen=GenTable(
            "Particle",
            _frozen({"pt": "PT", "eta": "Eta", "phi": "Phi", "pdg_id": "PID", "status": "Status",
                     "mother": "M1"}),
        ),
        extra_collections=("Event",),
    ),
    "pfnano": _PFNANO,
    # NanoAOD v15: PFNano's candidate columns under another table name and schema.
    "nanoaod": dataclasses.replace(
        _PFNANO,
        name="nanoaod",
        schema="NanoAODSchema",
        branches=("nPFCand",),
        candidates=(CandidateTable("PFCand", _frozen(_NANO_CANDIDATE_COLUMNS), _NANO_OPTIONAL),),
    ),
})
"""The supported formats by name (detection tries them in this order)."""
SOURCES: tuple[str, ...] = ("auto", *FORMATS)

DEFAULT_NANO_JETS = ("FatJet", "Jet")  # always read for nanoaod-layout files (cheap, handy)
_warned_missing_impact: set[str] = set()


@dataclasses.dataclass(frozen=True)
class ReadContext:
    """What phase 2 needs for error messages and options (picklable for dask workers)."""

    where: str = ""
    entry_offset: int = 0
    partition_note: str = ""
    puppi: bool = False


# --------------------------------------------------------------------------------------------
# phase 1: columns from NanoEvents (eager, virtual or dask alike)
# --------------------------------------------------------------------------------------------
def collection(events: Any, name: str, where: str, purpose: str) -> Any:
    """``events[name]``, or an :class:`InputFileError` naming the collection and the file."""
    if name not in events.fields:
        raise InputFileError(
            f"collection {name!r} not found{where} (needed for {purpose}); "
            f"collections read: {', '.join(sorted(f for f in events.fields if '.' not in f))}"
        )
    try:
        return events[name]
    except ValueError as error:  # coffea/vector behaviours refuse a collection lacking a coordinate
        raise InputFileError(
            f"collection {name!r}{where} cannot be built (a kinematic branch is missing?): {error}"
        ) from error


def required_fields(coll: Any, name: str, wanted: Sequence[str], where: str) -> dict[str, Any]:
    """``{field: coll[field]}``, or an :class:`InputFileError` listing every missing branch."""
    available = set(coll.fields)
    missing = [f for f in wanted if f not in available]
    if missing:
        raise InputFileError(f"branch(es) {', '.join(f'{name}.{f}' for f in missing)} missing{where}")
    return {f: coll[f] for f in wanted}


def candidate_columns(
    events: Any, fmt: SourceFormat, context: ReadContext, *, with_uid: bool = False
) -> tuple[dict[str, Any], str]:
    """Phase 1: ``({"<collection>.<uniform field>": column or None}, impact)`` for every
    candidate table of ``fmt``; ``impact`` is ``"stored"`` or ``"absent"`` (d0/dz branches)."""
    columns: dict[str, Any] = {}
    impact = "stored"
    for table in fmt.candidates:
        coll = collection(events, table.collection, context.where, f"{fmt.name} candidates")
        wanted = [
            field for field in table.columns
            if (field != "uid" or with_uid) and (field != "puppi_weight" or context.puppi)
        ]
        required = []
        for field in wanted:
            present = next((b for b in table.columns[field] if b in coll.fields), None)
            if present is not None:
                columns[table.key(field)] = coll[present]
            elif field in table.optional:
                columns[table.key(field)] = None
            else:
                required.append(table.columns[field][0])
        if required:  # raises naming every missing branch
            required_fields(coll, table.collection, required, context.where)
        if "d0" in table.columns and (
            columns[table.key("d0")] is None or columns[table.key("dz")] is None
        ):
            impact = "absent"
            d0_names, dz_name = table.columns["d0"], table.columns["dz"][0]
            d0_text = fmt.branch(table.collection, d0_names[0]) + "".join(
                f" (or _{name})" for name in d0_names[1:]
            )
            _warn_missing_impact_parameters(
                f"{d0_text}/{fmt.branch(table.collection, dz_name)}", fmt.name, context.where
            )
    return columns, impact


def _warn_missing_impact_parameters(branches: str, source: str, where: str) -> None:
    if source in _warned_missing_impact:
        return
    _warned_missing_impact.add(source)
    warnings.warn(
        f"{branches} not stored{where}: every {source} candidate gets d0 = dz = 0 "
        "(tanh_d0 = tanh_dz = 0), as for neutral particles; the jets carry "
        "rs3l_impact_parameters='absent' (said once per source and process)",
        MissingImpactParametersWarning,
        stacklevel=4,  # the caller of jets_from_events
    )


# --------------------------------------------------------------------------------------------
# phase 2: uniform candidates from the named columns (plain awkward on one partition)
# --------------------------------------------------------------------------------------------
def _energy(pt: Any, eta: Any, mass: Any) -> Any:
    # Sentinel candidates (eta = 999.9) overflow here; they are dropped by the quality filter.
    with np.errstate(over="ignore", invalid="ignore"):
        return energy_from_pt_eta_mass(pt, eta, mass)


def uniform(
    pt: Any, eta: Any, phi: Any, energy: Any, charge: Any, pdg_id: Any, d0: Any, dz: Any
) -> ak.Array:
    """Candidate records with the uniform fields and dtypes of :mod:`rs3l_coffea.io`."""
    return ak.zip(
        {
            "pt": ak.values_astype(pt, np.float64),
            "eta": ak.values_astype(eta, np.float64),
            "phi": ak.values_astype(phi, np.float64),
            "energy": ak.values_astype(energy, np.float64),
            "charge": ak.values_astype(charge, np.int32),
            "pdg_id": ak.values_astype(pdg_id, np.int32),
            "d0": ak.values_astype(d0, np.float64),
            "dz": ak.values_astype(dz, np.float64),
        },
        with_name=None,
    )


def counts(array: Any) -> np.ndarray:
    """Integer numpy copy of a flat awkward array (an empty one may come back as float)."""
    return np.asarray(ak.to_numpy(array), dtype=np.int64)


def _first_bad(values: Any, bad: np.ndarray, context: ReadContext) -> tuple[int, int, int]:
    """(flat index, entry, candidate) of the first bad value of events x candidates ``values``."""
    first = int(np.flatnonzero(bad)[0])
    per_event = counts(ak.num(values, axis=1))
    event = int(np.searchsorted(np.cumsum(per_event), first, side="right"))
    candidate = first - int(np.sum(per_event[:event]))
    return first, context.entry_offset + event, candidate


def checked_integers(
    values: Any, branch: str, max_abs: int, context: ReadContext, what: str
) -> ak.Array:
    """``values`` (events x candidates) cast to int32 after checking every value is a finite
    integer with ``|value| <= max_abs``; else an :class:`InputFileError` naming the entry."""
    flat = np.asarray(ak.to_numpy(ak.flatten(values, axis=None)))
    if flat.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(flat) | (flat != np.round(flat)) | (np.abs(flat) > max_abs)
    elif flat.dtype.kind in "iu":
        bad = np.abs(flat.astype(np.int64)) > max_abs
    elif flat.dtype.kind == "b":
        bad = np.zeros(len(flat), dtype=bool)
    else:
        raise InputFileError(
            f"branch {branch}{context.where} has dtype {flat.dtype}, expected an integer or float"
        )
    if np.any(bad):
        first, entry, candidate = _first_bad(values, bad, context)
        raise InputFileError(
            f"branch {branch}{context.where}: value {flat[first].item()!r} at entry "
            f"{entry}{context.partition_note} (candidate {candidate}) is "
            f"not {what} ({int(np.sum(bad))} bad value(s) in this chunk)"
        )
    return ak.values_astype(values, np.int32)


def _plain(column: Any) -> Any:
    return None if column is None else ak.without_parameters(column)


def _charge_from_pdg(pdg: Any) -> Any:
    # NanoAOD v15 PFCand has no charge branch: PF pdg ids are +-11, +-13, +-211, 22, 130, 1, 2.
    signed = ak.values_astype(pdg, np.int64)
    abs_pdg = abs(signed)
    sign = ak.where(signed > 0, 1, -1)
    return ak.where((abs_pdg == 11) | (abs_pdg == 13), -sign, ak.where(abs_pdg == 211, sign, 0))


def _puppi_scaled(
    pt: Any, energy: Any, weight: Any, branch: str, context: ReadContext
) -> tuple[Any, Any]:
    weight = ak.values_astype(weight, np.float64)
    flat = np.asarray(ak.to_numpy(ak.flatten(weight, axis=None)))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flat) | (flat < 0) | (flat > 1)
    if np.any(bad):
        first, entry, _ = _first_bad(weight, bad, context)
        raise InputFileError(
            f"branch {branch}{context.where}: value {flat[first].item()!r} at entry "
            f"{entry}{context.partition_note} is not a PUPPI weight in [0, 1]"
        )
    # Scaling the four-momentum by w scales pT, mass and E alike; weight-0 candidates get
    # pT = 0 and are dropped by the quality filter after the jet association is resolved.
    return pt * weight, energy * weight


def _table_candidates(
    columns: Mapping[str, Any], table: CandidateTable, fmt: SourceFormat, context: ReadContext
) -> ak.Array:
    def column(field: str) -> Any:
        return _plain(columns.get(table.key(field)))

    pt, eta, phi = column("pt"), column("eta"), column("phi")
    if table.pdg_id is not None:
        zero = ak.zeros_like(pt)
        return uniform(pt, eta, phi, _energy(pt, eta, zero), zero, zero + table.pdg_id, zero, zero)

    branch = {field: fmt.branch(table.collection, names[0]) for field, names in table.columns.items()}
    pdg = checked_integers(column("pdg_id"), branch["pdg_id"], INT32_MAX, context, "an int32 PDG id")
    charge = column("charge")
    if charge is None:
        charge = _charge_from_pdg(pdg)
    else:
        charge = checked_integers(
            charge, branch["charge"], MAX_ABS_CHARGE, context,
            f"an integer charge in [-{MAX_ABS_CHARGE}, {MAX_ABS_CHARGE}]",
        )
    d0, dz = column("d0"), column("dz")
    if d0 is None or dz is None:
        d0 = dz = ak.zeros_like(ak.values_astype(pt, np.float64))
    elif fmt.no_track_placeholder is not None:
        # The "no track details" placeholder and any neutral candidate -> the training
        # convention, 0; the rest converted to mm.
        d0, dz = ak.values_astype(d0, np.float64), ak.values_astype(dz, np.float64)
        placeholder = fmt.no_track_placeholder
        no_track = (charge == 0) | ((d0 == placeholder) & (dz == placeholder))
        d0 = ak.where(no_track, 0.0, d0 * fmt.length_to_mm)
        dz = ak.where(no_track, 0.0, dz * fmt.length_to_mm)
    elif fmt.length_to_mm != 1.0:
        d0, dz = d0 * fmt.length_to_mm, dz * fmt.length_to_mm
    energy = _energy(pt, eta, column("mass"))
    weight = column("puppi_weight")
    if weight is not None:
        pt, energy = _puppi_scaled(pt, energy, weight, branch["puppi_weight"], context)
    return uniform(pt, eta, phi, energy, charge, pdg, d0, dz)


def build_candidates(
    columns: Mapping[str, Any], fmt: SourceFormat, context: ReadContext, *, with_uid: bool = False
) -> tuple[ak.Array, Any]:
    """Phase 2: events x candidates in the uniform layout (tables concatenated in order) and,
    with ``with_uid``, their ``uid`` column (Delphes TRef ids), else ``None``."""
    parts = [_table_candidates(columns, table, fmt, context) for table in fmt.candidates]
    cands = parts[0] if len(parts) == 1 else ak.concatenate(parts, axis=1)
    if not with_uid:
        return cands, None
    uids = [columns[table.key("uid")] for table in fmt.candidates]
    return cands, uids[0] if len(uids) == 1 else ak.concatenate(uids, axis=1)
