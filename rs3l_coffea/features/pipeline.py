"""File -> features pipeline and the parquet layout written by ``rs3l features``.

Parquet layout (one row per selected jet, jets in file and event order):

* ``file`` (string), ``event`` (int64, entry number in the file), ``jet`` (int64, index of the
  jet in its event as returned by the reader, before selection)
* ``pt, eta, phi, mass, msd, n2, n2_groomed`` (float64), ``n_constituents`` (int64),
  ``valid``, ``n2_groomed_valid`` (bool): see :func:`~rs3l_coffea.features.jet_observables`
* ``impact_parameters`` (bool): True where the file stored d0/dz for the candidates, False
  where the reader set them to 0 (e.g. NanoAOD v15; see :mod:`rs3l_coffea.io`)
* ``label`` (int64, :class:`~rs3l_coffea.features.JetLabel`)
* ``hard_event_id`` (int64) and ``variant_code`` (int64): ``Event.HardEventID`` and
  ``Event.VariantCode`` of our generated files (jets of re-simulated variants of the same hard
  event share ``hard_event_id``); ``-1`` and :data:`VARIANT_UNKNOWN` for other files
* ``features``: fixed-size list ``max_particles`` x fixed-size list 15 of float32
  (:data:`FEATURE_NAMES` order, stored in the file metadata ``rs3l.feature_names``)
* ``mask``: fixed-size list ``max_particles`` of bool

:func:`read_features_parquet` returns these as numpy arrays (``features`` as
``(n, max_particles, 15)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.atomic import atomic_path
from rs3l_coffea.errors import InputFileError
from rs3l_coffea.features.builder import DEFAULT_MAX_PARTICLES, build_features
from rs3l_coffea.features.names import FEATURE_NAMES, N_FEATURES
from rs3l_coffea.features.observables import jet_kinematics, jet_observables
from rs3l_coffea.features.selection import JetSelection
from rs3l_coffea.features.truth import truth_labels

_SCALAR_COLUMNS = (
    "pt", "eta", "phi", "mass", "msd", "n2", "n2_groomed", "n_constituents", "valid",
    "n2_groomed_valid", "impact_parameters",
)
# Columns added after the first release: files written before lack them and read without them.
_OPTIONAL_COLUMNS = frozenset({"n2_groomed", "n2_groomed_valid", "impact_parameters"})
_EVENT_COLUMNS = ("hard_event_id", "variant_code")
VARIANT_UNKNOWN = -100  # variant codes of the generator start at -1 (nominal)
#: ``jet_filter(jets, hard_event_id) -> events x jets bool`` of :func:`features_from_file`.
JetFilter = Callable[[ak.Array, np.ndarray], ak.Array]


def features_from_file(
    path: str | os.PathLike[str],
    *,
    source: str = "auto",
    jets: str | None = None,
    recluster_radius: float | None = None,
    max_particles: int = DEFAULT_MAX_PARTICLES,
    selection: JetSelection | None = None,
    puppi: bool = False,
    observables: str = "all",
    truth: bool = True,
    jet_filter: JetFilter | None = None,
) -> dict[str, np.ndarray]:
    """Read a file, select jets and return features, mask, observables and labels (numpy).

    ``puppi``: PUPPI-weighted candidates (PFNano/NanoAOD, see :func:`rs3l_coffea.io.jets_from_events`).

    Work is done for the selected jets only, and only what is asked for (the ntuple builder
    needs neither substructure nor, for re-simulated partners, truth labels):

    * ``observables="all"``: every column of :func:`~rs3l_coffea.features.jet_observables`;
      ``"kinematics"``: only ``pt, eta, phi, mass, n_constituents`` (no soft drop or N2, which
      cost about half of the ntupling time; the other columns are then absent, not zero).
    * ``truth=False``: no ``label`` column (no generator-record matching).
    * ``jet_filter(jets, hard_event_id)``: a further events x jets boolean mask ANDed with
      ``selection`` (``hard_event_id`` per event, as in the output column).
    """
    if observables not in ("all", "kinematics"):
        raise ValueError(f"observables must be 'all' or 'kinematics', got {observables!r}")
    from rs3l_coffea.io import gen_particles_from_events, jets_from_events, open_events

    selection = selection or JetSelection.permissive()
    events, source, origin = open_events(
        path, source=source, jets=None if recluster_radius is not None else jets
    )
    jet_array, constituents = jets_from_events(
        events,
        source=source,
        jets=jets,
        recluster_radius=recluster_radius,
        origin=origin,
        puppi=puppi,
    )
    stored = ak.parameters(jet_array).get("rs3l_impact_parameters") == "stored"
    n_events = len(jet_array)
    hard_event_id, variant_code = _event_ids(events, n_events)
    keep = selection.mask(jet_array, constituents)
    if jet_filter is not None:
        keep = keep & jet_filter(jet_array, hard_event_id)
    jet_index = ak.local_index(jet_array, axis=1)
    event_index = ak.broadcast_arrays(np.arange(n_events), jet_index)[0]
    jet_array, constituents = jet_array[keep], constituents[keep]
    x, mask = build_features(jet_array, constituents, max_particles=max_particles)
    if observables == "all":
        result: dict[str, np.ndarray] = dict(jet_observables(jet_array, constituents))
    else:
        result = jet_kinematics(jet_array, constituents)
    result["impact_parameters"] = np.full(len(x), stored, dtype=bool)
    if truth:
        # Each jet's label depends on that jet alone (rs3l_coffea.features.truth): label the kept ones.
        result["label"] = truth_labels(jet_array, gen_particles_from_events(events, source))
    result.update(
        features=x,
        mask=mask,
        event=np.asarray(ak.to_numpy(ak.flatten(event_index[keep])), dtype=np.int64),
        jet=np.asarray(ak.to_numpy(ak.flatten(jet_index[keep])), dtype=np.int64),
        file=np.full(len(x), origin, dtype=object),
    )
    result["hard_event_id"] = hard_event_id[result["event"]]
    result["variant_code"] = variant_code[result["event"]]
    return result


def _event_ids(events: Any, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-event ``(HardEventID, VariantCode)`` of generated files, else -1 / VARIANT_UNKNOWN."""
    hard_event_id = np.full(n_events, -1, dtype=np.int64)
    variant_code = np.full(n_events, VARIANT_UNKNOWN, dtype=np.int64)
    if "Event" in events.fields:
        event = events["Event"]
        for name, target in (("HardEventID", hard_event_id), ("VariantCode", variant_code)):
            if name in event.fields:
                values = event[name]
                if values.ndim > 1:  # a non-flattened one-entry collection
                    values = ak.firsts(values)
                target[:] = np.asarray(ak.to_numpy(ak.fill_none(values, target[0])), dtype=np.int64)
    return hard_event_id, variant_code


def concatenate_results(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-file results column by column."""
    if not results:
        raise ValueError("no results to concatenate")
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def write_features_parquet(path: str | os.PathLike[str], result: dict[str, np.ndarray]) -> None:
    """Write a result of :func:`features_from_file` atomically as parquet (layout above)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.ascontiguousarray(result["features"], dtype=np.float32)
    mask = np.ascontiguousarray(result["mask"], dtype=bool)
    n, max_particles = mask.shape
    particle_type = pa.list_(pa.float32(), N_FEATURES)
    features = pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), N_FEATURES), max_particles
    )
    assert features.type == pa.list_(particle_type, max_particles)
    columns: dict[str, Any] = {
        "file": pa.array(result["file"].astype(str), pa.string()),
        "event": pa.array(result["event"], pa.int64()),
        "jet": pa.array(result["jet"], pa.int64()),
    }
    for name in _SCALAR_COLUMNS:
        columns[name] = pa.array(result[name])
    columns["label"] = pa.array(result["label"], pa.int64())
    for name in _EVENT_COLUMNS:
        columns[name] = pa.array(result[name], pa.int64())
    columns["features"] = features
    columns["mask"] = pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1)), max_particles)
    table = pa.table(columns).replace_schema_metadata(
        {"rs3l.feature_names": json.dumps(list(FEATURE_NAMES)), "rs3l.n_jets": str(n)}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_features_parquet(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a file written by :func:`write_features_parquet` back into numpy arrays."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise InputFileError(f"cannot read {path} as parquet: {error}") from error
    metadata = table.schema.metadata or {}
    if b"rs3l.feature_names" not in metadata:
        raise InputFileError(
            f"{path} is not an rs3l features parquet (no 'rs3l.feature_names' metadata; "
            "write it with `rs3l features` / write_features_parquet)"
        )
    names = json.loads(metadata[b"rs3l.feature_names"])
    if tuple(names) != FEATURE_NAMES:
        raise ValueError(f"{path}: feature order {names} differs from FEATURE_NAMES")
    n = table.num_rows
    features = table.column("features").combine_chunks()
    max_particles = features.type.list_size
    present = set(table.column_names)
    out = {
        name: table.column(name).to_numpy()
        for name in ("file", "event", "jet", *_SCALAR_COLUMNS, "label", *_EVENT_COLUMNS)
        if name in present or name not in _OPTIONAL_COLUMNS
    }
    out["features"] = (
        features.flatten().flatten().to_numpy().reshape(n, max_particles, N_FEATURES)
    )
    mask = table.column("mask").combine_chunks()
    out["mask"] = mask.flatten().to_numpy(zero_copy_only=False).reshape(n, max_particles)
    return out
