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

Unusable candidates (:func:`rs3l_coffea.kinematics.good_particles`: a non-finite value,
pT <= 0, E <= 0 or |eta| >= 10; Delphes writes tracks with pT = 0 and eta = 999.9 and fastjet
segfaults on them) are removed before anything else.

The integration point for coffea processors is :func:`jets_from_events`, which works on
already-opened NanoEvents (eager, virtual, or ``mode="dask"`` through ``map_partitions``);
:func:`load_jets` opens a file and calls it.

Module map: :mod:`rs3l_coffea.io.files` opens files (one ``open_tree``), picks the tree and
detects the source; :mod:`rs3l_coffea.io.sources` holds the per-format column tables and
builds uniform candidates from columns passed by name; :mod:`rs3l_coffea.io.jets` reclusters
and gathers constituents; this module ties them together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea._awkward import is_dask
from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.io.files import (
    detect_source,
    needed_branches,
    open_events,
    read_errors_name_the_file,
    select_tree,
    source_from_branches,
)
from rs3l_coffea.io.jets import (
    DEFAULT_RECLUSTER_MIN_PT,
    DEFAULT_RECLUSTER_RADIUS,
    ByName,
    DelphesStoredBuilder,
    NanoStoredBuilder,
    ReclusterBuilder,
    recluster,
    stored_jet_columns,
)
from rs3l_coffea.io.sources import (
    FORMATS,
    MAX_ABS_CHARGE,
    SOURCES,
    MissingImpactParametersWarning,
    ReadContext,
    candidate_columns,
)

__all__ = [
    "DEFAULT_RECLUSTER_MIN_PT",
    "DEFAULT_RECLUSTER_RADIUS",
    "MAX_ABS_CHARGE",
    "SOURCES",
    "MissingImpactParametersWarning",
    "association_name",
    "detect_source",
    "gen_particles_from_events",
    "jets_from_events",
    "load_jets",
    "needed_branches",
    "open_events",
    "recluster",
    "select_tree",
    "source_from_branches",
]


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
    fmt = FORMATS[source]
    if jets is None and recluster_radius is None:
        if fmt.default_jets is None:
            recluster_radius = DEFAULT_RECLUSTER_RADIUS
        else:
            jets = fmt.default_jets
    if puppi and not fmt.puppi_weights:
        raise ConfigError(
            "puppi=True needs PFNano/NanoAOD candidates with a puppiWeight branch; Delphes "
            "EFlow candidates carry no PUPPI weights"
        )

    where = f" in {origin}" if origin else ""
    dask = is_dask(events)
    context = ReadContext(
        where=where,
        entry_offset=_entry_offset(events, entry_offset),
        partition_note=" of the dask partition" if dask else "",
        puppi=puppi,
    )
    # Virtual arrays read baskets lazily: a truncated or corrupt file fails in here, not at open.
    with read_errors_name_the_file(where):
        builder: Callable[[dict[str, Any]], ak.Array]
        if recluster_radius is not None:
            columns, impact = candidate_columns(events, fmt, context)
            builder = ReclusterBuilder(fmt, recluster_radius, recluster_min_pt, context)
            label = f"antikt:{recluster_radius:g}"
            tables = "+".join(fmt.candidate_collections)
        else:
            assert jets is not None
            if fmt.layout == "delphes" and dask:
                raise InputFileError(
                    f"stored Delphes jet collection {jets!r}{where} cannot be read under "
                    "mode='dask': coffea resolves TRefArray (Constituents) branches wrongly after the "
                    "first partition. Use recluster_radius=... (e.g. 0.8) or eager/virtual mode."
                )
            columns, tables = stored_jet_columns(events, fmt, jets, context)
            delphes = fmt.layout == "delphes"
            cand_columns, impact = candidate_columns(events, fmt, context, with_uid=delphes)
            columns.update(cand_columns)
            builder = (DelphesStoredBuilder if delphes else NanoStoredBuilder)(fmt, jets, context)
            label = jets
        by_name = ByName(builder, list(columns))
        if dask:
            import dask_awkward as dak

            combined = dak.map_partitions(by_name, *columns.values(), label="rs3l-jets-from-events")
        else:
            combined = by_name(*columns.values())
    jet_array = combined["jet"]
    constituents = combined["constituents"]
    if dask:
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


def association_name(source: str, jets: str) -> str:
    """The candidate-index table of jet collection ``jets``: ``<jets>PFCands`` (PFNano) or
    ``<jets>PFCand`` (NanoAOD v15), e.g. ``FatJetAK15PFCands``."""
    return FORMATS[source].association(jets)


def gen_particles_from_events(events: Any, source: str = "auto") -> ak.Array | None:
    """Generator particles in a uniform layout, or ``None`` when the events have none.

    Fields: ``pt, eta, phi`` (float64), ``pdg_id, status, mother`` (int64; ``mother`` is the
    event-local index of the first mother, -1 if none). Delphes ``Particle`` and NanoAOD
    ``GenPart`` are supported; Pythia status codes are kept as stored (absolute values).
    """
    if source == "auto":
        source = detect_source(events)
    table = FORMATS[source].gen
    if table.collection not in events.fields:
        return None
    gen = events[table.collection]
    names = table.columns
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
