"""Jets and their constituents from Delphes, PFNano and NanoAOD files, in one uniform layout.

Every reader returns ``(jets, constituents)``:

* ``jets``: events x jets records with fields ``pt, eta, phi, mass`` (float64, GeV), sorted
  as in the file (stored jets) or by pT descending (reclustered jets). The outer list carries
  the parameters ``rs3l_source`` (``"delphes"``, ``"pfnano"``, ``"nanoaod"``) and
  ``rs3l_jets`` (the stored collection name, or ``"antikt:R"`` for reclustered jets).
* ``constituents``: events x jets x particles records with the uniform fields
  ``pt, eta, phi, energy`` (float64, GeV), ``charge`` (int32, units of e), ``pdg_id`` (int32),
  ``d0, dz`` (float64, **mm**; PFNano/NanoAOD store cm (``d0`` or ``dxy``, ``dz``) and are
  converted, NanoAOD v15 ``PFCand`` has no impact parameters and gets 0).

Impact-parameter convention ("no track" -> 0). The models are trained on Delphes and on our
built-in detector, where neutral candidates (towers) carry ``d0 = dz = 0``. PFNano writes
``d0 = dz = -1`` (cm) as a placeholder for every candidate without track details (all neutrals
and low-pT / forward charged candidates, recognisable by ``d0Err = dzErr = -1``); taken at face
value that is -10 mm, ``tanh = -1``, the most displaced value a feature can have. The reader
maps it to 0: PFNano/NanoAOD candidates with ``charge == 0`` or with ``d0 == dz == -1`` exactly
get ``d0 = dz = 0``; every other charged candidate keeps its stored value (converted to mm).
Delphes ``EFlowTrack.D0/DZ`` are stored as measured (no placeholder; towers get 0). Files
without impact-parameter branches (NanoAOD v15, some PFNano productions, truth-level
generator files) get 0 for every candidate; a :class:`MissingImpactParametersWarning` says
so once per source and the jets carry the parameter ``rs3l_impact_parameters = "absent"``
(``"stored"`` otherwise).

Integer fields are validated before the int32 cast: a charge that is not finite, not an
integer or outside ``[-MAX_ABS_CHARGE, MAX_ABS_CHARGE]`` (and a pdgId that is not a finite
int32 integer) raises :class:`InputFileError` naming the file, branch and entry (a float
charge of NaN or 1e10 would otherwise become -2147483648).

Jets carry the parameter ``rs3l_constituents`` naming the tables used, e.g.
``"FatJetAK15PFCands.pFCandsIdx -> PFCands"``.

Candidates with non-finite kinematics, pT <= 0 or |eta| >= 10 (Delphes writes tracks with
pT = 0 and eta = 999.9; fastjet segfaults on them) are removed before anything else.

The integration point for coffea processors is :func:`jets_from_events`, which works on
already-opened NanoEvents (eager, virtual, or ``mode="dask"`` through ``map_partitions``);
:func:`load_jets` opens a file and calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.errors import ConfigError, InputFileError, MissingConstituentsError


class MissingImpactParametersWarning(UserWarning):
    """The candidates have no d0/dz branches: every candidate gets d0 = dz = 0."""


SOURCES: tuple[str, ...] = ("auto", "delphes", "pfnano", "nanoaod")
DEFAULT_RECLUSTER_RADIUS = 0.8
DEFAULT_RECLUSTER_MIN_PT = 20.0
MAX_ABS_ETA = 10.0
DELPHES_NEUTRAL_HADRON_PDG = 130  # EFlowNeutralHadron has no PID; K0L is CMS PF's convention
_DELPHES_UID_MASK = 0xFFFFFF
_DELPHES_CANDIDATES = ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")
_CM_TO_MM = 10.0
_CONSTITUENT_FIELDS = ("pt", "eta", "phi", "energy", "charge", "pdg_id", "d0", "dz")
MAX_ABS_CHARGE = 2  # PF candidates and Delphes tracks carry +-1; 2 leaves room, 1e10 does not
PFNANO_NO_TRACK = -1.0  # PFNano's d0/dz (cm) for candidates without track details
_INT32_MAX = 2**31 - 1

# Candidate collection and the association's candidate-index field per source. The association
# of a jet collection ``<Jets>`` is ``<Jets>PFCands`` (PFNano) / ``<Jets>PFCand`` (NanoAOD v15)
# with fields ``jetIdx`` and the candidate index; any jet collection following that pattern
# works (FatJet, Jet, FatJetAK15, ...).
_NANO_CANDIDATES = {"pfnano": "PFCands", "nanoaod": "PFCand"}
_NANO_INDEX_FIELDS = ("pFCandsIdx", "pfCandIdx", "candIdx", "pFCandIdx")
_DEFAULT_NANO_JETS = ("FatJet", "Jet")
_warned_missing_impact: set[str] = set()


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def source_from_branches(branches: Iterable[str], origin: str, tree: str) -> str:
    """The source (``delphes``, ``pfnano`` or ``nanoaod``) from a TTree's top-level branch names.

    Raises :class:`MissingConstituentsError` naming ``origin`` when there are no candidates.
    """
    names = set(branches)
    if any(name.startswith(("EFlowTrack", "EFlowPhoton")) for name in names):
        return "delphes"
    if "nPFCands" in names:
        return "pfnano"
    if "nPFCand" in names:
        return "nanoaod"
    raise MissingConstituentsError(
        f"{origin}: tree {tree!r} has no particle candidates (EFlowTrack, PFCands or "
        "PFCand branches): RS3L needs jet constituents (PFNano or Delphes files), "
        "so this file cannot be used"
    )


def detect_source(events: Any, origin: str | None = None) -> str:
    """Guess the source (``delphes``, ``pfnano`` or ``nanoaod``) from the NanoEvents fields.

    Raises :class:`MissingConstituentsError` when the events have jets but no candidates.
    """
    fields = set(events.fields)
    if "EFlowTrack" in fields or "EFlowPhoton" in fields:
        return "delphes"
    if "PFCands" in fields:
        return "pfnano"
    if "PFCand" in fields:
        return "nanoaod"
    where = f" in {origin}" if origin else ""
    raise MissingConstituentsError(
        f"no particle candidates{where} (looked for EFlowTrack/EFlowPhoton, PFCands, PFCand): "
        "RS3L needs jet constituents, so files without PF candidates (plain NanoAOD) cannot be used"
    )


def jets_from_events(
    events: Any,
    *,
    source: str = "auto",
    jets: str | None = None,
    recluster_radius: float | None = None,
    recluster_min_pt: float = DEFAULT_RECLUSTER_MIN_PT,
    origin: str | None = None,
    puppi: bool = False,
    entry_offset: int | None = None,
) -> tuple[Any, Any]:
    """Jets and uniform constituents from already-opened NanoEvents (coffea integration point).

    Args:
        events: NanoEvents from ``NanoEventsFactory.from_root`` (``mode="eager"``, ``"virtual"``
            or ``"dask"``), e.g. the ``events`` argument of a coffea processor's ``process``.
            Delphes files need :class:`~rs3l_coffea.io.schemas.FlatDelphesSchema` (or
            ``DelphesSchema``), PFNano ``PFNanoAODSchema``, NanoAOD v15 ``NanoAODSchema``.
        source: ``"auto"`` (from the fields), ``"delphes"``, ``"pfnano"`` or ``"nanoaod"``.
        jets: stored jet collection to use. Defaults: Delphes -> recluster (stored Delphes jets
            reference constituents through TRefArrays, see below), PFNano/NanoAOD -> ``"FatJet"``.
        recluster_radius: if given, ignore stored jets and cluster all candidates of each event
            with anti-kT of this radius (fastjet). Delphes default: 0.8.
        recluster_min_pt: minimum pT (GeV) of reclustered jets.
        origin: file name used in error messages.
        puppi: PFNano/NanoAOD only: scale each candidate's four-momentum by its ``puppiWeight``
            and drop candidates of weight 0 (CMS's PUPPI jets are built that way). Off by
            default: the models are trained on unweighted Delphes-style candidates without
            pileup. Weights must be finite and in ``[0, 1]``.
        entry_offset: entry number of the first event (for error messages); defaults to
            ``events.metadata["entrystart"]`` when coffea provides it, else 0.

    Returns:
        ``(jets, constituents)`` as described in the module docstring. With dask input both are
        dask-awkward arrays (built with one ``map_partitions`` call; compute them together).

    Raises:
        MissingConstituentsError: no candidates in the events.
        InputFileError: a needed collection/branch is missing or an index is out of range;
            ``mode="dask"`` with a stored Delphes jet collection (coffea resolves TRefArray
            branches wrongly after the first dask partition; recluster instead).
        ConfigError: unknown ``source`` or bad ``recluster_radius``.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    if recluster_radius is not None and not (0.0 < recluster_radius <= 3.0):
        raise ConfigError(f"recluster_radius must be in (0, 3], got {recluster_radius!r}")
    if source == "auto":
        source = detect_source(events, origin)
    if source == "delphes" and jets is None and recluster_radius is None:
        recluster_radius = DEFAULT_RECLUSTER_RADIUS
    if source in ("pfnano", "nanoaod") and jets is None and recluster_radius is None:
        jets = "FatJet"
    if puppi and source == "delphes":
        raise ConfigError(
            "puppi=True needs PFNano/NanoAOD candidates with a puppiWeight branch; Delphes "
            "EFlow candidates carry no PUPPI weights"
        )

    where = f" in {origin}" if origin else ""
    is_dask = _is_dask(events)
    context = _ReadContext(
        where=where,
        entry_offset=_entry_offset(events, entry_offset),
        partition_note=" of the dask partition" if is_dask else "",
        puppi=puppi,
    )
    # Virtual arrays read baskets lazily: a truncated or corrupt file fails in here, not at open.
    with _read_errors_name_the_file(where):
        if recluster_radius is not None:
            inputs, impact = _candidate_inputs(events, source, context)
            builder: Callable[..., ak.Array] = _ReclusterBuilder(
                source, recluster_radius, recluster_min_pt, context
            )
            label = f"antikt:{recluster_radius:g}"
            tables = "+".join(_DELPHES_CANDIDATES) if source == "delphes" else _NANO_CANDIDATES[source]
        elif source == "delphes":
            if is_dask:
                raise InputFileError(
                    f"stored Delphes jet collection {jets!r}{where} cannot be read under "
                    "mode='dask': coffea resolves TRefArray (Constituents) branches wrongly after the "
                    "first partition. Use recluster_radius=... (e.g. 0.8) or eager/virtual mode."
                )
            inputs, impact = _delphes_stored_inputs(events, jets, context)
            builder = _DelphesStoredBuilder(jets, context)
            label = jets
            tables = f"{jets}.Constituents -> " + "+".join(_DELPHES_CANDIDATES)
        else:
            inputs, impact, tables = _nano_stored_inputs(events, source, jets, context)
            builder = _NanoStoredBuilder(source, jets, context)
            label = jets

        if is_dask:
            import dask_awkward as dak

            combined = dak.map_partitions(
                _TypetracerSafe(builder), *inputs, label="rs3l-jets-from-events"
            )
        else:
            combined = builder(*inputs)
    jet_array = combined["jet"]
    constituents = combined["constituents"]
    if is_dask:
        import dask_awkward as dak

        with_parameter: Callable[..., Any] = dak.with_parameter
    else:
        with_parameter = ak.with_parameter
    jet_array = with_parameter(jet_array, "rs3l_source", source)
    jet_array = with_parameter(jet_array, "rs3l_jets", label)
    jet_array = with_parameter(jet_array, "rs3l_constituents", tables)
    jet_array = with_parameter(jet_array, "rs3l_impact_parameters", impact)
    jet_array = with_parameter(jet_array, "rs3l_puppi", bool(puppi))
    return jet_array, constituents


def _entry_offset(events: Any, entry_offset: int | None) -> int:
    if entry_offset is not None:
        return int(entry_offset)
    metadata = getattr(events, "metadata", None)
    if isinstance(metadata, dict) and isinstance(metadata.get("entrystart"), int):
        return int(metadata["entrystart"])
    return 0


@dataclasses.dataclass(frozen=True)
class _ReadContext:
    """What the builders need for error messages and options (picklable for dask workers)."""

    where: str = ""
    entry_offset: int = 0
    partition_note: str = ""
    puppi: bool = False


@contextlib.contextmanager
def _read_errors_name_the_file(where: str) -> Iterator[None]:
    """Turn uproot's I/O and decoding errors while reading baskets into an InputFileError.

    Decompressors raise their own types (``zlib.error``, ``lzma.LZMAError``, uproot's
    ``ValueError`` for a bad LZ4 checksum): any exception raised from inside uproot counts.
    """
    import lzma
    import zlib

    from uproot.deserialization import DeserializationError

    try:
        yield
    except InputFileError:
        raise
    except Exception as error:
        reading = isinstance(error, (OSError, DeserializationError, zlib.error, lzma.LZMAError))
        if not (reading or _raised_inside_uproot(error)):
            raise
        raise InputFileError(f"cannot read the events{where} (truncated or corrupt file?): {error}") from error


def _raised_inside_uproot(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if f"{os.sep}uproot{os.sep}" in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False


def load_jets(
    path: str | os.PathLike[str],
    *,
    source: str = "auto",
    jets: str | None = None,
    recluster_radius: float | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    tree: str | None = None,
    mode: str = "virtual",
    recluster_min_pt: float = DEFAULT_RECLUSTER_MIN_PT,
    puppi: bool = False,
) -> tuple[ak.Array, ak.Array]:
    """Open a ROOT file and return ``(jets, constituents)`` (see :func:`jets_from_events`).

    ``tree`` defaults to the tree of the requested source (:func:`select_tree`); ``mode`` is
    ``"virtual"`` (default) or ``"eager"``. A tree with zero entries gives empty arrays.
    """
    events, source, origin = open_events(
        path,
        source=source,
        entry_start=entry_start,
        entry_stop=entry_stop,
        tree=tree,
        mode=mode,
        jets=None if recluster_radius is not None else jets,  # reclustering ignores stored jets
    )
    return jets_from_events(
        events,
        source=source,
        jets=jets,
        recluster_radius=recluster_radius,
        recluster_min_pt=recluster_min_pt,
        origin=origin,
        puppi=puppi,
        entry_offset=entry_start if entry_start is not None and entry_start >= 0 else None,
    )


def select_tree(trees: Sequence[str], source: str, origin: str) -> str:
    """The TTree to read for ``source`` among a file's ``trees``.

    ``delphes`` -> ``Delphes``; ``pfnano`` / ``nanoaod`` -> ``Events`` (so a file holding both a
    Delphes and an Events tree gives each source its own tree); ``auto`` -> ``Delphes`` if
    present, else ``Events``. Raises :class:`InputFileError` naming ``origin`` and the trees found
    when the wanted tree is absent.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    wanted = {"delphes": ("Delphes",), "pfnano": ("Events",), "nanoaod": ("Events",)}.get(
        source, ("Delphes", "Events")
    )
    for name in wanted:
        if name in trees:
            return name
    raise InputFileError(
        f"{origin} has no {' or '.join(repr(w) for w in wanted)} TTree "
        f"(trees found: {', '.join(trees) or 'none'}) for source {source!r}; pass tree=..."
    )


def open_events(
    path: str | os.PathLike[str],
    *,
    source: str = "auto",
    entry_start: int | None = None,
    entry_stop: int | None = None,
    tree: str | None = None,
    mode: str = "virtual",
    jets: str | None = None,
    all_branches: bool = False,
) -> tuple[Any, str, str]:
    """Open ``path`` as NanoEvents with the schema for its source.

    Unless ``all_branches``, only the branches RS3L needs are put into the event form
    (candidates, their jet associations, ``FatJet``/``Jet`` or the stored jet collection
    ``jets``, generator particles, event ids): Delphes files have hundreds of branches and
    building the form for all of them dominates the time on small files.

    Returns ``(events, source, origin)``. Raises :class:`InputFileError` naming the file when it
    is missing, empty, unreadable or lacks the tree, :class:`MissingConstituentsError` when
    the tree has no candidates.
    """
    import uproot

    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    if mode not in ("virtual", "eager"):
        raise ConfigError(f"mode must be 'virtual' or 'eager' for load_jets, got {mode!r}")
    origin = str(path)
    if not os.path.isfile(origin):
        raise InputFileError(f"input file {origin} does not exist")
    if os.path.getsize(origin) == 0:
        raise InputFileError(f"input file {origin} is empty (0 bytes), not a ROOT file")
    try:
        handle = uproot.open(origin)
    except Exception as error:  # uproot raises several unrelated types on corrupt files
        raise InputFileError(f"cannot open {origin} as a ROOT file: {error}") from error
    # The handle stays open: virtual NanoEvents read from it lazily (and the TTree metadata,
    # slow to parse for Delphes' ~1800 branches, is parsed once and cached by uproot).
    trees = [k.split(";")[0] for k, c in handle.classnames().items() if c == "TTree"]
    if tree is None:
        tree = select_tree(trees, source, origin)
    if tree not in trees:
        raise InputFileError(
            f"{origin} has no TTree {tree!r} (trees found: {', '.join(trees) or 'none'})"
        )
    try:  # the TTree metadata can sit past the end of a truncated file
        branches = set(handle[tree].keys())
        n_entries = handle[tree].num_entries
    except Exception as error:
        raise InputFileError(f"cannot read TTree {tree!r} of {origin}: {error}") from error
    found = source_from_branches(branches, origin, tree)
    if source == "auto":
        source = found
    elif found != source:
        raise InputFileError(
            f"{origin}: tree {tree!r} holds {found} candidates, not {source} ones "
            f"(trees found: {', '.join(trees)}); pass source={found!r} or the right tree=..."
        )

    if jets is not None:
        file_collections = _collections_in(branches, source)
        if jets not in file_collections:
            raise InputFileError(
                f"jet collection {jets!r} not found in {origin} (tree {tree!r}); collections in "
                f"the file: {', '.join(sorted(file_collections))}"
            )
        if source in _NANO_CANDIDATES and association_name(source, jets) not in file_collections:
            cand_name = _NANO_CANDIDATES[source]
            tables = sorted(
                c for c in file_collections if c.endswith(cand_name) and c != cand_name
            )
            raise MissingConstituentsError(
                f"{association_name(source, jets)!r} not found in {origin}: jets {jets!r} need a "
                f"candidate-index table named <jets>{cand_name} (fields jetIdx and a candidate "
                f"index); such tables in the file: {', '.join(tables) or 'none'}. Pick the jets "
                "of one of them or recluster (recluster_radius=0.8)"
            )

    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory, PFNanoAODSchema

    from rs3l_coffea.io.schemas import FlatDelphesSchema

    schema = {"delphes": FlatDelphesSchema, "pfnano": PFNanoAODSchema, "nanoaod": NanoAODSchema}[
        source
    ]
    if n_entries == 0:
        entry_start, entry_stop = None, None
    options = {} if all_branches else {"filter_name": needed_branches(source, jets)}
    try:
        with warnings.catch_warnings():
            if not all_branches:
                # We read only the branches RS3L needs on purpose, so coffea's notes about
                # cross-references into collections we did not read are expected noise.
                warnings.filterwarnings(
                    "ignore", message="Missing cross-reference", category=RuntimeWarning
                )
            events = NanoEventsFactory.from_root(
                handle,
                treepath=tree,
                schemaclass=schema,
                mode=mode,
                entry_start=entry_start,
                entry_stop=entry_stop,
                iteritems_options=options,
            ).events()
    except Exception as error:
        raise InputFileError(
            f"cannot read tree {tree!r} of {origin} with {schema.__name__}: {error}"
        ) from error
    return events, source, origin


def _collections_in(branches: set[str], source: str) -> set[str]:
    """Collection names present in a tree, from its branch names."""
    if source == "delphes":
        return {b.split("/")[0].split(".")[0].removesuffix("_size") for b in branches}
    return {b[1:].split("_")[0] for b in branches if b.startswith("n")}


_EVENT_ID_BRANCHES = frozenset({"run", "luminosityBlock", "event"})


def needed_branches(source: str, jets: str | None = None) -> Callable[[str], bool]:
    """Branch-name predicate keeping only the collections RS3L reads from ``source`` files.

    Pass it to coffea to skip building the form of unused branches, e.g.
    ``NanoEventsFactory.from_root(..., iteritems_options={"filter_name": needed_branches("delphes")})``
    (virtual/eager) or ``uproot_options={"filter_name": ...}`` (``mode="dask"``).
    """
    if source not in ("delphes", "pfnano", "nanoaod"):
        raise ConfigError(f"needed_branches needs a concrete source, got {source!r}")
    if source == "delphes":
        wanted = {"EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron", "Particle", "Event"}
        if jets:
            wanted.add(jets)

        def keep_delphes(name: str) -> bool:
            collection = name.split("/")[0].split(".")[0]
            return collection.removesuffix("_size") in wanted

        return keep_delphes

    wanted = {"GenPart", _NANO_CANDIDATES[source]}
    for jet_name in (*_DEFAULT_NANO_JETS, *([jets] if jets else [])):
        wanted |= {jet_name, association_name(source, jet_name)}

    def keep_nano(name: str) -> bool:
        collection = name.split("_")[0]
        if name in _EVENT_ID_BRANCHES or collection in wanted:
            return True
        return collection.startswith("n") and collection[1:] in wanted

    return keep_nano


# Generator-record collection and its field names per file family (PFNano uses NanoAOD's GenPart).
_GEN_BRANCHES: dict[str, tuple[str, dict[str, str]]] = {
    "delphes": (
        "Particle",
        {"pt": "PT", "eta": "Eta", "phi": "Phi", "pdg_id": "PID", "status": "Status", "mother": "M1"},
    ),
    "nanoaod": (
        "GenPart",
        {"pt": "pt", "eta": "eta", "phi": "phi", "pdg_id": "pdgId", "status": "status",
         "mother": "genPartIdxMother"},
    ),
}


def gen_particles_from_events(events: Any, source: str = "auto") -> ak.Array | None:
    """Generator particles in a uniform layout, or ``None`` when the events have none.

    Fields: ``pt, eta, phi`` (float64), ``pdg_id, status, mother`` (int64; ``mother`` is the
    event-local index of the first mother, -1 if none). Delphes ``Particle`` and NanoAOD
    ``GenPart`` are supported; Pythia status codes are kept as stored (absolute values).
    """
    if source == "auto":
        source = detect_source(events)
    collection, names = _GEN_BRANCHES["delphes" if source == "delphes" else "nanoaod"]
    if collection not in events.fields:
        return None
    gen = events[collection]
    return ak.zip(
        {
            "pt": ak.values_astype(gen[names["pt"]], np.float64),
            "eta": ak.values_astype(gen[names["eta"]], np.float64),
            "phi": ak.values_astype(gen[names["phi"]], np.float64),
            "pdg_id": ak.values_astype(gen[names["pdg_id"]], np.int64),
            "status": ak.values_astype(abs(gen[names["status"]]), np.int64),
            "mother": ak.values_astype(gen[names["mother"]], np.int64),
        },
        with_name=None,
    )


# --------------------------------------------------------------------------------------------
# field access (phase 1: works the same on eager, virtual and dask NanoEvents)
# --------------------------------------------------------------------------------------------
def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask_awkward")


def _collection(events: Any, name: str, where: str, purpose: str) -> Any:
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


def _fields(collection: Any, name: str, wanted: Sequence[str], where: str) -> list[Any]:
    available = set(collection.fields)
    missing = [f for f in wanted if f not in available]
    if missing:
        raise InputFileError(
            f"branch(es) {', '.join(f'{name}.{f}' for f in missing)} missing{where}"
        )
    return [collection[f] for f in wanted]


def _delphes_candidate_columns(
    events: Any, where: str, with_uid: bool
) -> tuple[list[Any], str]:
    track = _collection(events, "EFlowTrack", where, "Delphes candidates")
    columns = _fields(track, "EFlowTrack", ["PT", "Eta", "Phi", "Mass", "Charge", "PID"], where)
    # Impact parameters are optional in our generator output; Delphes always writes them.
    for optional in ("D0", "DZ"):
        columns.append(track[optional] if optional in track.fields else None)
    impact = "stored" if columns[-1] is not None and columns[-2] is not None else "absent"
    if impact == "absent":
        _warn_missing_impact_parameters("EFlowTrack.D0/EFlowTrack.DZ", "delphes", where)
    if with_uid:
        columns += _fields(track, "EFlowTrack", ["fUniqueID"], where)
    for name in ("EFlowPhoton", "EFlowNeutralHadron"):
        coll = _collection(events, name, where, "Delphes candidates")
        columns += _fields(coll, name, ["ET", "Eta", "Phi"], where)
        if with_uid:
            columns += _fields(coll, name, ["fUniqueID"], where)
    return columns, impact


def _candidate_inputs(events: Any, source: str, context: _ReadContext) -> tuple[list[Any], str]:
    if source == "delphes":
        return _delphes_candidate_columns(events, context.where, with_uid=False)
    name = _NANO_CANDIDATES[source]
    cands = _collection(events, name, context.where, "PF candidates")
    return _nano_candidate_columns(cands, name, source, context)


def _warn_missing_impact_parameters(branches: str, source: str, where: str) -> None:
    if source in _warned_missing_impact:
        return
    _warned_missing_impact.add(source)
    warnings.warn(
        f"{branches} not stored{where}: every {source} candidate gets d0 = dz = 0 "
        "(tanh_d0 = tanh_dz = 0), as for neutral particles; the jets carry "
        "rs3l_impact_parameters='absent' (said once per source and process)",
        MissingImpactParametersWarning,
        stacklevel=5,  # the caller of jets_from_events
    )


def _nano_candidate_columns(
    cands: Any, name: str, source: str, context: _ReadContext
) -> tuple[list[Any], str]:
    columns = _fields(cands, name, ["pt", "eta", "phi", "mass", "pdgId"], context.where)
    # Missing optional branches travel as None (NanoAOD v15 PFCand has no charge/d0/dz).
    # CMSSW's NanoAOD PF-candidate table calls the transverse impact parameter dxy.
    columns.append(cands["charge"] if "charge" in cands.fields else None)
    transverse = next((f for f in ("d0", "dxy") if f in cands.fields), None)
    columns.append(cands[transverse] if transverse else None)
    columns.append(cands["dz"] if "dz" in cands.fields else None)
    if context.puppi:
        columns += _fields(cands, name, ["puppiWeight"], context.where)
    else:
        columns.append(None)
    impact = "stored" if columns[6] is not None and columns[7] is not None else "absent"
    if impact == "absent":
        _warn_missing_impact_parameters(f"{name}_d0 (or _dxy)/{name}_dz", source, context.where)
    return columns, impact


def _delphes_stored_inputs(events: Any, jets: str, context: _ReadContext) -> tuple[list[Any], str]:
    coll = _collection(events, jets, context.where, "stored jets")
    jet_columns = _fields(coll, jets, ["PT", "Eta", "Phi", "Mass", "Constituents"], context.where)
    jet_columns[-1] = jet_columns[-1]["refs"]
    columns, impact = _delphes_candidate_columns(events, context.where, with_uid=True)
    return jet_columns + columns, impact


def association_name(source: str, jets: str) -> str:
    """The candidate-index table of jet collection ``jets``: ``<jets>PFCands`` (PFNano) or
    ``<jets>PFCand`` (NanoAOD v15), e.g. ``FatJetAK15PFCands``."""
    return f"{jets}{_NANO_CANDIDATES[source]}"


def _nano_stored_inputs(
    events: Any, source: str, jets: str, context: _ReadContext
) -> tuple[list[Any], str, str]:
    where = context.where
    cand_name = _NANO_CANDIDATES[source]
    assoc_name = association_name(source, jets)
    coll = _collection(events, jets, where, "stored jets")
    jet_columns = _fields(coll, jets, ["pt", "eta", "phi", "mass"], where)
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
    assoc = _collection(events, assoc_name, where, f"{jets} constituents")
    index_field = next((f for f in _NANO_INDEX_FIELDS if f in assoc.fields), None)
    if index_field is None:
        raise InputFileError(
            f"{assoc_name}{where} has no candidate-index branch (looked for "
            f"{', '.join(f'{assoc_name}_{f}' for f in _NANO_INDEX_FIELDS)}; fields: "
            f"{', '.join(assoc.fields)})"
        )
    assoc_columns = _fields(assoc, assoc_name, [index_field, "jetIdx"], where)
    cands = _collection(events, cand_name, where, "PF candidates")
    cand_columns, impact = _nano_candidate_columns(cands, cand_name, source, context)
    tables = f"{assoc_name}.{index_field} -> {cand_name}"
    return jet_columns + assoc_columns + cand_columns, impact, tables


# --------------------------------------------------------------------------------------------
# builders (phase 2: plain awkward on one partition)
# --------------------------------------------------------------------------------------------
def _energy(pt: Any, eta: Any, mass: Any) -> Any:
    # Sentinel candidates (eta = 999.9) overflow here; they are dropped by _good right after.
    with np.errstate(over="ignore", invalid="ignore"):
        p = pt * np.cosh(eta)
        return np.sqrt(p * p + mass * mass)


def _uniform(pt, eta, phi, energy, charge, pdg_id, d0, dz) -> ak.Array:
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


def _checked_integers(
    values: Any, branch: str, max_abs: int, context: _ReadContext, what: str
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
        first = int(np.flatnonzero(bad)[0])
        counts = _counts(ak.num(values, axis=1))
        event = int(np.searchsorted(np.cumsum(counts), first, side="right"))
        candidate = first - int(np.sum(counts[:event]))
        raise InputFileError(
            f"branch {branch}{context.where}: value {flat[first].item()!r} at entry "
            f"{context.entry_offset + event}{context.partition_note} (candidate {candidate}) is "
            f"not {what} ({int(np.sum(bad))} bad value(s) in this chunk)"
        )
    return ak.values_astype(values, np.int32)


def _delphes_candidates(
    columns: Sequence[Any], with_uid: bool, context: _ReadContext
) -> tuple[ak.Array, Any]:
    """Events x candidates (tracks, then photons, then neutral hadrons), and their uids."""
    step = 1 if with_uid else 0
    pt, eta, phi, mass, charge, pid, d0, dz = (_plain(c) for c in columns[:8])
    charge = _checked_integers(
        charge, "EFlowTrack.Charge", MAX_ABS_CHARGE, context,
        f"an integer charge in [-{MAX_ABS_CHARGE}, {MAX_ABS_CHARGE}]",
    )
    pid = _checked_integers(pid, "EFlowTrack.PID", _INT32_MAX, context, "an int32 PDG id")
    d0 = ak.zeros_like(pt) if d0 is None else d0
    dz = ak.zeros_like(pt) if dz is None else dz
    i = 8 + step
    tracks = _uniform(
        pt, eta, phi, _energy(pt, eta, mass), charge, pid, d0, dz
    )
    parts = [tracks]
    uids = [columns[8]] if with_uid else []
    for pdg in (22, DELPHES_NEUTRAL_HADRON_PDG):
        et, ceta, cphi = (ak.without_parameters(c) for c in columns[i : i + 3])
        zero = ak.zeros_like(et)
        # Delphes EFlow towers are massless: E = ET cosh(eta); no track, so d0 = dz = 0.
        parts.append(
            _uniform(et, ceta, cphi, _energy(et, ceta, zero), zero, zero + pdg, zero, zero)
        )
        if with_uid:
            uids.append(columns[i + 3])
        i += 3 + step
    cands = ak.concatenate(parts, axis=1)
    uid = ak.concatenate(uids, axis=1) if with_uid else None
    return cands, uid


def _nano_candidates(columns: Sequence[Any], source: str, context: _ReadContext) -> ak.Array:
    pt, eta, phi, mass, pdg, charge, d0, dz, weight = (_plain(c) for c in columns)
    name = _NANO_CANDIDATES[source]
    pdg = _checked_integers(pdg, f"{name}_pdgId", _INT32_MAX, context, "an int32 PDG id")
    if charge is None:
        # NanoAOD v15 PFCand has no charge branch: PF pdg ids are +-11, +-13, +-211, 22, 130, 1, 2.
        flat_pdg = ak.values_astype(pdg, np.int64)
        abs_pdg = abs(flat_pdg)
        sign = ak.where(flat_pdg > 0, 1, -1)
        charge = ak.where(
            (abs_pdg == 11) | (abs_pdg == 13), -sign, ak.where(abs_pdg == 211, sign, 0)
        )
    else:
        charge = _checked_integers(
            charge, f"{name}_charge", MAX_ABS_CHARGE, context,
            f"an integer charge in [-{MAX_ABS_CHARGE}, {MAX_ABS_CHARGE}]",
        )
    if d0 is None or dz is None:
        d0 = dz = ak.zeros_like(ak.values_astype(pt, np.float64))
    else:
        # NanoAOD stores cm. PFNano's "no track details" placeholder (-1 cm) and any neutral
        # candidate -> the training convention, 0.
        d0, dz = ak.values_astype(d0, np.float64), ak.values_astype(dz, np.float64)
        no_track = (charge == 0) | ((d0 == PFNANO_NO_TRACK) & (dz == PFNANO_NO_TRACK))
        d0 = ak.where(no_track, 0.0, d0 * _CM_TO_MM)
        dz = ak.where(no_track, 0.0, dz * _CM_TO_MM)
    energy = _energy(pt, eta, mass)
    if weight is not None:
        weight = ak.values_astype(weight, np.float64)
        flat = np.asarray(ak.to_numpy(ak.flatten(weight, axis=None)))
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(flat) | (flat < 0) | (flat > 1)
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            counts = _counts(ak.num(weight, axis=1))
            event = int(np.searchsorted(np.cumsum(counts), first, side="right"))
            raise InputFileError(
                f"branch {name}_puppiWeight{context.where}: value {flat[first].item()!r} at entry "
                f"{context.entry_offset + event}{context.partition_note} is not a PUPPI weight "
                "in [0, 1]"
            )
        # Scaling the four-momentum by w scales pT, mass and E alike; weight-0 candidates get
        # pT = 0 and are dropped by _good after the jet association is resolved.
        pt, energy = pt * weight, energy * weight
    return _uniform(pt, eta, phi, energy, charge, pdg, d0, dz)


def _plain(column: Any) -> Any:
    return None if column is None else ak.without_parameters(column)


def _good(cands: ak.Array) -> Any:
    finite = np.isfinite(cands.pt) & np.isfinite(cands.eta) & np.isfinite(cands.phi)
    finite = finite & np.isfinite(cands.energy) & np.isfinite(cands.d0) & np.isfinite(cands.dz)
    return finite & (cands.pt > 0) & (abs(cands.eta) < MAX_ABS_ETA)


def _combine(jets: ak.Array, constituents: ak.Array) -> ak.Array:
    return ak.zip({"jet": jets, "constituents": constituents}, depth_limit=2, with_name=None)


def _jet_record(pt, eta, phi, mass) -> ak.Array:
    return ak.zip(
        {
            "pt": ak.values_astype(ak.without_parameters(pt), np.float64),
            "eta": ak.values_astype(ak.without_parameters(eta), np.float64),
            "phi": ak.values_astype(ak.without_parameters(phi), np.float64),
            "mass": ak.values_astype(ak.without_parameters(mass), np.float64),
        },
        with_name=None,
    )


class _ReclusterBuilder:
    """Cluster all good candidates of each event with anti-kT (one fastjet call per partition)."""

    def __init__(self, source: str, radius: float, min_pt: float, context: _ReadContext) -> None:
        self.source, self.radius, self.min_pt, self.context = source, radius, min_pt, context

    def __call__(self, *columns: Any) -> ak.Array:
        if self.source == "delphes":
            cands, _ = _delphes_candidates(columns, with_uid=False, context=self.context)
        else:
            cands = _nano_candidates(columns, self.source, self.context)
        jets, constituents = recluster(cands, self.radius, self.min_pt)
        return _combine(jets, constituents)


def recluster(
    candidates: ak.Array, radius: float = DEFAULT_RECLUSTER_RADIUS, min_pt: float = 0.0
) -> tuple[ak.Array, ak.Array]:
    """Anti-kT jets of ``candidates`` (events x particles, uniform fields) with fastjet.

    Returns ``(jets, constituents)``: jets sorted by pT descending with ``pt, eta, phi, mass``
    from fastjet's four-momenta (E-scheme), constituents the matching candidate records.
    Candidates with non-finite kinematics, pT <= 0 or |eta| >= 10 are dropped first (fastjet
    segfaults on Delphes' pT = 0, eta = 999.9 tracks).
    """
    import vector

    from rs3l_coffea._fastjet import import_fastjet

    fastjet = import_fastjet()  # banner off: it would go to standard output

    vector.register_awkward()
    candidates = candidates[_good(candidates)]
    momenta = ak.zip(
        {
            "px": candidates.pt * np.cos(candidates.phi),
            "py": candidates.pt * np.sin(candidates.phi),
            "pz": candidates.pt * np.sinh(candidates.eta),
            "E": candidates.energy,
        },
        with_name="Momentum4D",
    )
    sequence = fastjet.ClusterSequence(
        momenta, fastjet.JetDefinition(fastjet.antikt_algorithm, float(radius))
    )
    raw_jets = sequence.inclusive_jets(min_pt)
    index = sequence.constituent_index(min_pt)
    order = ak.argsort(raw_jets.pt, axis=1, ascending=False)
    raw_jets, index = raw_jets[order], index[order]
    jets = _jet_record(raw_jets.pt, raw_jets.eta, raw_jets.phi, raw_jets.mass)
    # Guard against fastjet's tiny negative m^2 for near-massless jets: mass is >= 0.
    jets = ak.with_field(jets, ak.where(np.isfinite(jets.mass), jets.mass, 0.0), "mass")
    constituents = _gather_per_jet(candidates, index)
    return jets, constituents


def _gather_per_jet(candidates: ak.Array, index: ak.Array) -> ak.Array:
    """``candidates[event][index[event][jet]]`` for events x jets x k indices, vectorised."""
    n_cands = _counts(ak.num(candidates, axis=1))
    offsets = np.concatenate([[0], np.cumsum(n_cands)]).astype(np.int64)
    jets_per_event = _counts(ak.num(index, axis=1))
    per_jet = _counts(ak.flatten(ak.num(index, axis=2)))
    event_of_jet = np.repeat(np.arange(len(jets_per_event), dtype=np.int64), jets_per_event)
    flat_index = _counts(ak.flatten(index, axis=None))
    event_of_particle = np.repeat(event_of_jet, per_jet)
    flat = ak.flatten(candidates)[offsets[event_of_particle] + flat_index]
    return ak.unflatten(ak.unflatten(flat, per_jet), jets_per_event)


def _counts(array: Any) -> np.ndarray:
    """Integer numpy copy of a flat awkward array (an empty one may come back as float)."""
    return np.asarray(ak.to_numpy(array), dtype=np.int64)


class _DelphesStoredBuilder:
    """Resolve a stored Delphes jet collection's TRefArray ``Constituents`` (eager/virtual)."""

    def __init__(self, name: str, context: _ReadContext) -> None:
        self.name, self.context = name, context

    def __call__(self, pt, eta, phi, mass, refs, *cand_columns) -> ak.Array:
        cands, uid = _delphes_candidates(cand_columns, with_uid=True, context=self.context)
        n_events = len(cands)
        # One global key per candidate: (event << 24) | (fUniqueID & 0xFFFFFF). TRef ids are
        # unique within an event across all collections, so a sorted join resolves every ref.
        event_of_cand = np.repeat(np.arange(n_events, dtype=np.int64), _counts(ak.num(cands)))
        cand_keys = (event_of_cand << 24) | (
            ak.to_numpy(ak.flatten(uid)).astype(np.int64) & _DELPHES_UID_MASK
        )
        order = np.argsort(cand_keys, kind="stable")
        sorted_keys = cand_keys[order]

        refs = ak.without_parameters(refs)
        jets_per_event = _counts(ak.num(refs, axis=1))
        refs_per_jet = _counts(ak.flatten(ak.num(refs, axis=2)))
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
                f"EFlowTrack/EFlowPhoton/EFlowNeutralHadron (first in event {bad_event}); use a "
                "particle-flow jet collection or recluster (recluster_radius=0.8)"
            )
        flat = ak.flatten(cands)[order[position]] if len(ref_keys) else ak.flatten(cands)[:0]
        constituents = ak.unflatten(ak.unflatten(flat, refs_per_jet), jets_per_event)
        constituents = constituents[_good(constituents)]
        return _combine(_jet_record(pt, eta, phi, mass), constituents)


class _NanoStoredBuilder:
    """Group a (Fat)JetPFCand(s) association by ``jetIdx`` and gather the candidates."""

    def __init__(self, source: str, name: str, context: _ReadContext) -> None:
        self.source, self.name, self.context = source, name, context
        self.where = context.where

    def __call__(self, pt, eta, phi, mass, cand_idx, jet_idx, *cand_columns) -> ak.Array:
        cands = _nano_candidates(cand_columns, self.source, self.context)
        jets = _jet_record(pt, eta, phi, mass)
        n_events = len(jets)
        jets_per_event = ak.to_numpy(ak.num(jets)).astype(np.int64)
        cands_per_event = ak.to_numpy(ak.num(cands)).astype(np.int64)
        assoc_per_event = ak.to_numpy(ak.num(jet_idx)).astype(np.int64)
        event_of_assoc = np.repeat(np.arange(n_events), assoc_per_event)
        flat_jet = ak.to_numpy(ak.flatten(jet_idx)).astype(np.int64)
        flat_cand = ak.to_numpy(ak.flatten(cand_idx)).astype(np.int64)
        bad = (flat_jet < 0) | (flat_jet >= jets_per_event[event_of_assoc])
        bad |= (flat_cand < 0) | (flat_cand >= cands_per_event[event_of_assoc])
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            raise InputFileError(
                f"{self.name} constituent association{self.where} has an out-of-range index in "
                f"event {int(event_of_assoc[first])} (jetIdx={flat_jet[first]}, "
                f"candidate index={flat_cand[first]})"
            )
        jet_offsets = np.concatenate([[0], np.cumsum(jets_per_event)])
        cand_offsets = np.concatenate([[0], np.cumsum(cands_per_event)])
        global_jet = jet_offsets[event_of_assoc] + flat_jet
        order = np.argsort(global_jet, kind="stable")
        per_jet = np.bincount(global_jet, minlength=int(jet_offsets[-1]))
        flat = ak.flatten(cands)[(cand_offsets[event_of_assoc] + flat_cand)[order]]
        constituents = ak.unflatten(ak.unflatten(flat, per_jet), jets_per_event)
        constituents = constituents[_good(constituents)]
        return _combine(jets, constituents)


class _TypetracerSafe:
    """Wrap a builder for ``dask_awkward.map_partitions``.

    During graph construction dask-awkward calls the function on typetracers. fastjet cannot
    run on those, so we touch exactly the input columns, run the builder on length-zero
    concrete arrays and hand back a typetracer of the resulting form.
    """

    def __init__(self, builder: Callable[..., ak.Array]) -> None:
        self.builder = builder

    def __call__(self, *columns: Any) -> ak.Array:
        if any(c is not None and ak.backend(c) == "typetracer" for c in columns):
            concrete = [
                None if c is None else ak.typetracer.length_zero_if_typetracer(c)
                for c in columns
            ]
            result = self.builder(*concrete)
            return ak.Array(result.layout.to_typetracer(forget_length=True))
        return self.builder(*columns)
