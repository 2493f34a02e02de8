"""Readers: jets and uniform constituents from Delphes, PFNano and NanoAOD v15 files.

Layout: :mod:`~rs3l_coffea.io.files` (opening: one :func:`open_tree`, tree selection, source
detection, NanoEvents), :mod:`~rs3l_coffea.io.sources` (per-format column tables: a new format
of a known layout is new data, not new code; uniform candidates from columns passed by name),
:mod:`~rs3l_coffea.io.jets` (reclustering, stored-jet association, constituent gathering) and
:mod:`~rs3l_coffea.io.readers` (the entry points below; full contract in its docstring).

Public API:

* :func:`load_jets` -- open a file and return ``(jets, constituents)``.
* :func:`jets_from_events` -- the same from already-opened NanoEvents (eager, virtual or
  dask): the function coffea processors call.
* :func:`open_events` -- open a file with the right schema (:class:`FlatDelphesSchema`,
  ``PFNanoAODSchema`` or ``NanoAODSchema``).
* :func:`gen_particles_from_events` -- generator particles for truth labelling.
* :func:`needed_branches` -- branch filter so coffea builds only the needed columns.
* :func:`recluster` -- anti-kT reclustering of uniform candidates with fastjet.
* :func:`select_tree` -- the TTree of a requested source in a file holding several.
* :func:`association_name` -- ``<Jets>PFCands`` / ``<Jets>PFCand`` for a jet collection.
* :func:`open_tree` -- open a ROOT file and one TTree, with errors naming the file.
"""

from __future__ import annotations

from rs3l_coffea.io.files import OpenTree, open_tree
from rs3l_coffea.io.readers import (
    DEFAULT_RECLUSTER_MIN_PT,
    DEFAULT_RECLUSTER_RADIUS,
    MAX_ABS_CHARGE,
    SOURCES,
    MissingImpactParametersWarning,
    association_name,
    detect_source,
    gen_particles_from_events,
    jets_from_events,
    load_jets,
    needed_branches,
    open_events,
    recluster,
    select_tree,
    source_from_branches,
)


def __getattr__(name: str):
    # The schema subclass imports coffea: keep it lazy so `import rs3l_coffea.io` stays light.
    if name == "FlatDelphesSchema":
        from rs3l_coffea.io.schemas import FlatDelphesSchema

        return FlatDelphesSchema
    raise AttributeError(f"module 'rs3l_coffea.io' has no attribute {name!r}")


__all__ = [
    "DEFAULT_RECLUSTER_MIN_PT",
    "DEFAULT_RECLUSTER_RADIUS",
    "MAX_ABS_CHARGE",
    "SOURCES",
    "FlatDelphesSchema",
    "MissingImpactParametersWarning",
    "OpenTree",
    "association_name",
    "detect_source",
    "gen_particles_from_events",
    "jets_from_events",
    "load_jets",
    "needed_branches",
    "open_events",
    "open_tree",
    "recluster",
    "select_tree",
    "source_from_branches",
]
