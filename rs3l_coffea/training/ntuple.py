"""Training ntuples: pairs of a nominal jet and its re-simulated counterpart, in sharded ROOT files.

Layout (TTree ``rs3l`` in ``<out>/shard_00000.root``, ``shard_00001.root``, ...; one row per pair):

============================  ===================  =====================================================
branch                        type                 meaning
============================  ===================  =====================================================
``features``                  float32[100][15]     nominal jet, particles sorted as built, zero-padded
``mask``                      bool[100]            real particle slots of ``features``
``partner_features``          float32[100][15]     matched re-simulated jet (zeros if ``variant == -1``)
``partner_mask``              bool[100]
``variant``                   int32                variant code of the partner (``VARIANT_CODES``);
                                                   -1: no counterpart was matched (the row still
                                                   carries the nominal jet for fine-tuning)
``pair_rank``                 int32                0 for the first row of a nominal jet, 1, 2, ... for
                                                   further partners: ``pair_rank == 0`` lists each
                                                   nominal jet exactly once
``hard_event_id``             int64                id of the shared hard process (defines splits)
``jet_index``                 int32                index of the nominal jet in its event
``label``                     int32                class index for training (-1: not used)
``jettype``                   int32                ``rs3l_coffea.features.JetLabel`` of the nominal jet
``jet_pt/eta/phi/mass``       float32              nominal jet observables (GeV)
``partner_pt/eta/phi/mass``   float32              partner jet observables
``pair_delta_r``              float32              ΔR(nominal, partner) of the match
============================  ===================  =====================================================

Matching: a nominal jet and a jet of a variant file are counterparts when they come from the
same hard event and lie within ``ΔR < max_delta_r`` (default 0.4, half the R = 0.8 jet radius:
the shower changes the axis by much less, and two R = 0.8 jets cannot both be this close).
Within an event the assignment is one-to-one, greedy in increasing ΔR.

A sidecar ``ntuple.json`` records the feature names, variant codes, rows per shard and sources.
The published RS3L h5 layout is read by :func:`read_published_h5`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.errors import InputFileError
from rs3l_coffea.features.names import FEATURE_NAMES, N_FEATURES
from rs3l_coffea.kinematics import delta_r
from rs3l_coffea.variants import VARIANT_CODES

TREE_NAME = "rs3l"
MAX_PARTICLES = 100
DEFAULT_MAX_DELTA_R = 0.4

JET_OBSERVABLES = ("pt", "eta", "phi", "mass")
_SCALARS: dict[str, type] = {
    "variant": np.int32,
    "pair_rank": np.int32,
    "hard_event_id": np.int64,
    "jet_index": np.int32,
    "label": np.int32,
    "jettype": np.int32,
    **{f"jet_{name}": np.float32 for name in JET_OBSERVABLES},
    **{f"partner_{name}": np.float32 for name in JET_OBSERVABLES},
    "pair_delta_r": np.float32,
}
ARRAY_BRANCHES = ("features", "mask", "partner_features", "partner_mask")
BRANCHES: tuple[str, ...] = (*ARRAY_BRANCHES, *_SCALARS)


def branch_types(n_features: int = N_FEATURES, max_particles: int = MAX_PARTICLES) -> dict:
    """uproot ``mktree`` types of the ntuple branches."""
    feature_type = np.dtype((np.float32, (max_particles, n_features)))
    mask_type = np.dtype((np.bool_, (max_particles,)))
    return {
        "features": feature_type,
        "mask": mask_type,
        "partner_features": feature_type,
        "partner_mask": mask_type,
        **{name: np.dtype(kind) for name, kind in _SCALARS.items()},
    }


@dataclass
class JetTable:
    """Flat per-jet arrays of one sample (one variant): what pairing and writing need."""

    hard_event_id: np.ndarray  # int64 (N,)
    jet_index: np.ndarray  # int32 (N,)
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    features: np.ndarray  # float32 (N, P, F)
    mask: np.ndarray  # bool (N, P)
    label: np.ndarray  # int32 (N,) class index
    jettype: np.ndarray | None = None  # int32 (N,) JetLabel; None: same as label

    def __len__(self) -> int:
        return len(self.hard_event_id)

    def take(self, index: np.ndarray) -> JetTable:
        return JetTable(
            **{  # type: ignore[arg-type]  # mypy cannot tie each field name to its own type here
                name: None if getattr(self, name) is None else getattr(self, name)[index]
                for name in self.__dataclass_fields__
            }
        )


def match_jets(
    nominal: JetTable, variant: JetTable, max_delta_r: float = DEFAULT_MAX_DELTA_R
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one match of nominal to variant jets of the same hard event with ΔR < ``max_delta_r``.

    Returns ``(nominal_index, variant_index, delta_r)``, sorted by nominal index.
    """
    order = np.argsort(variant.hard_event_id, kind="stable")
    sorted_ids = variant.hard_event_id[order]
    lo = np.searchsorted(sorted_ids, nominal.hard_event_id, side="left")
    hi = np.searchsorted(sorted_ids, nominal.hard_event_id, side="right")
    counts = hi - lo
    nominal_candidates = np.repeat(np.arange(len(nominal)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    variant_candidates = order[np.repeat(lo, counts) + offsets]
    distance = delta_r(
        nominal.eta[nominal_candidates],
        nominal.phi[nominal_candidates],
        variant.eta[variant_candidates],
        variant.phi[variant_candidates],
    )
    close = distance < max_delta_r
    nominal_candidates = nominal_candidates[close]
    variant_candidates = variant_candidates[close]
    distance = distance[close]
    # Greedy one-to-one in increasing ΔR; candidate lists are short (jets per event squared).
    used_nominal: set[int] = set()
    used_variant: set[int] = set()
    picked: list[int] = []
    for k in np.argsort(distance, kind="stable"):
        a, b = int(nominal_candidates[k]), int(variant_candidates[k])
        if a in used_nominal or b in used_variant:
            continue
        used_nominal.add(a)
        used_variant.add(b)
        picked.append(int(k))
    chosen = np.asarray(picked, dtype=np.int64)
    result_order = np.argsort(nominal_candidates[chosen], kind="stable")
    chosen = chosen[result_order]
    return nominal_candidates[chosen], variant_candidates[chosen], distance[chosen]


def build_pair_rows(
    nominal: JetTable,
    variants: Mapping[str, JetTable],
    max_delta_r: float = DEFAULT_MAX_DELTA_R,
) -> dict[str, np.ndarray]:
    """Pair every nominal jet with its counterpart in each variant; rows in the ntuple layout.

    Nominal jets without any counterpart get one row with ``variant = -1`` (kept for fine-tuning).
    Rows are ordered by nominal jet, then variant code.
    """
    pieces: list[dict[str, np.ndarray]] = []
    matched_any = np.zeros(len(nominal), dtype=bool)
    for name in sorted(variants, key=lambda n: VARIANT_CODES[n]):
        table = variants[name]
        a, b, dr = match_jets(nominal, table, max_delta_r)
        matched_any[a] = True
        pieces.append(_rows(nominal.take(a), table.take(b), VARIANT_CODES[name], dr, a))
    lonely = np.flatnonzero(~matched_any)
    if len(lonely):
        empty = nominal.take(lonely)
        partner = JetTable(
            hard_event_id=empty.hard_event_id,
            jet_index=empty.jet_index,
            pt=np.zeros(len(lonely), np.float32),
            eta=np.zeros(len(lonely), np.float32),
            phi=np.zeros(len(lonely), np.float32),
            mass=np.zeros(len(lonely), np.float32),
            features=np.zeros_like(empty.features),
            mask=np.zeros_like(empty.mask),
            label=empty.label,
            jettype=empty.jettype,
        )
        pieces.append(_rows(empty, partner, -1, np.full(len(lonely), np.nan), lonely))
    rows = {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]}
    nominal_row = rows.pop("_nominal_row")
    order = np.lexsort((rows["variant"], nominal_row))
    rows = {key: value[order] for key, value in rows.items()}
    nominal_row = nominal_row[order]
    first = np.r_[True, nominal_row[1:] != nominal_row[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    rows["pair_rank"] = (np.arange(len(first)) - start).astype(np.int32)
    return rows


def _rows(
    nominal: JetTable, partner: JetTable, code: int, dr: np.ndarray, nominal_row: np.ndarray
) -> dict[str, np.ndarray]:
    n = len(nominal)
    rows = {
        "features": nominal.features.astype(np.float32, copy=False),
        "mask": nominal.mask.astype(bool, copy=False),
        "partner_features": partner.features.astype(np.float32, copy=False),
        "partner_mask": partner.mask.astype(bool, copy=False),
        "variant": np.full(n, code, np.int32),
        "pair_rank": np.zeros(n, np.int32),
        "hard_event_id": nominal.hard_event_id.astype(np.int64),
        "jet_index": nominal.jet_index.astype(np.int32),
        "label": nominal.label.astype(np.int32),
        "jettype": (nominal.label if nominal.jettype is None else nominal.jettype).astype(np.int32),
        "pair_delta_r": np.asarray(dr, np.float32),
        "_nominal_row": np.asarray(nominal_row, np.int64),
    }
    for name in JET_OBSERVABLES:
        rows[f"jet_{name}"] = np.asarray(getattr(nominal, name), np.float32)
        rows[f"partner_{name}"] = np.asarray(getattr(partner, name), np.float32)
    return rows


def write_shards(
    rows: Mapping[str, np.ndarray] | Iterator[Mapping[str, np.ndarray]],
    out_dir: str | Path,
    shard_size: int = 10_000,
    sources: Sequence[str] = (),
) -> list[Path]:
    """Write rows (one mapping, or an iterator of mappings) into shards of ``shard_size`` rows.

    Every shard and the ``ntuple.json`` sidecar is written atomically. Returns the shard paths.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = iter([rows]) if isinstance(rows, Mapping) else iter(rows)
    pending: list[Mapping[str, np.ndarray]] = []
    pending_rows = 0
    shards: list[Path] = []
    counts: list[int] = []
    n_features = None

    def flush(final: bool) -> None:
        nonlocal pending, pending_rows, n_features
        while pending_rows >= shard_size or (final and pending_rows > 0):
            merged = {k: np.concatenate([p[k] for p in pending]) for k in BRANCHES}
            take = min(shard_size, pending_rows)
            shard = {k: v[:take] for k, v in merged.items()}
            rest = {k: v[take:] for k, v in merged.items()}
            n_features = shard["features"].shape[2]
            path = out_dir / f"shard_{len(shards):05d}.root"
            _write_one_shard(path, shard)
            shards.append(path)
            counts.append(take)
            pending = [rest] if len(rest["variant"]) else []
            pending_rows = len(rest["variant"])

    for chunk in chunks:
        missing = [k for k in BRANCHES if k not in chunk]
        if missing:
            raise ValueError(f"ntuple rows lack the branches {missing}")
        pending.append(chunk)
        pending_rows += len(chunk["variant"])
        flush(final=False)
    flush(final=True)
    meta = {
        "format": "rs3l-ntuple",
        "version": 1,
        "tree": TREE_NAME,
        "feature_names": list(FEATURE_NAMES) if n_features in (None, N_FEATURES) else None,
        "n_features": n_features,
        "variant_codes": VARIANT_CODES,
        "shards": [{"file": p.name, "rows": c} for p, c in zip(shards, counts, strict=True)],
        "sources": list(sources),
    }
    with atomic_open(out_dir / "ntuple.json") as handle:
        json.dump(meta, handle, indent=2)
    return shards


#: Rows per ROOT basket. A reader decompresses whole baskets, so a shard written as one basket
#: (20,000 rows x 2 feature branches = 240 MB of floats) made every 1,000-row read of the training
#: stream decompress 20x the rows it used: zlib then took ~80 % of a pretraining step's thread
#: time (py-spy on the at-scale study). 500 rows are ~3 MB per feature basket.
BASKET_ROWS = 500


def _write_one_shard(path: Path, shard: Mapping[str, np.ndarray]) -> None:
    import uproot

    features = shard["features"]
    types = branch_types(n_features=features.shape[2], max_particles=features.shape[1])
    arrays = {k: np.ascontiguousarray(shard[k], dtype=types[k].base) for k in BRANCHES}
    with atomic_path(path) as tmp, uproot.recreate(tmp) as handle:
        tree = handle.mktree(TREE_NAME, types, title="rs3l-coffea training pairs")
        for start in range(0, max(len(features), 1), BASKET_ROWS):  # one basket per extend call
            tree.extend({k: v[start : start + BASKET_ROWS] for k, v in arrays.items()})


def largest_basket_rows(path: str | Path) -> int:
    """The most rows in one basket of the shard's ``features`` branch."""
    from rs3l_coffea.io import open_tree

    with open_tree(path, TREE_NAME, what="ntuple shard") as opened:
        offsets = np.asarray(opened.tree["features"].entry_offsets)
    return int(np.diff(offsets).max()) if len(offsets) > 1 else 0


def rebasket_shard(path: str | Path) -> bool:
    """Rewrite a shard with :data:`BASKET_ROWS`-row baskets, same rows and values (atomic).

    For ntuples written before the writer used small baskets; returns False (and leaves the
    file alone) when its baskets are small already.
    """
    import uproot

    path = Path(path)
    if largest_basket_rows(path) <= BASKET_ROWS:
        return False
    with uproot.open(path) as handle:
        rows = handle[TREE_NAME].arrays(list(BRANCHES), library="np")
    _write_one_shard(path, rows)
    return True


# --- the published RS3L h5 layout -------------------------------------------------------------

PUBLISHED_VARTYPE_TO_OURS = {-1: -1, 0: 0, 1: 1, 2: 2, 3: 3}


def _published_to_our_features(features: np.ndarray, mask: np.ndarray, path: Path) -> np.ndarray:
    """The published files store E / E_jet linearly where ours hold its log (docs/published.md)."""
    import torch

    from rs3l_coffea.nn.published import from_published_features

    try:
        converted = from_published_features(torch.from_numpy(features), torch.from_numpy(mask))
    except InputFileError as error:
        raise InputFileError(f"{path}: {error}") from None
    return converted.numpy()


def read_published_h5(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file in the published RS3L h5 layout into ntuple rows.

    That layout holds ``features [N, 100, 15]``, ``truth_label``, ``jettype`` and ``vartype``
    with nominal (``vartype == -1``) and re-simulated jets interleaved: row ``2k`` is a nominal
    jet and row ``2k + 1`` its partner. Padding slots are all-zero feature rows; the mask is
    taken as "any feature non-zero". Their vartype 3 (Herwig) maps onto our code 3 (alternative
    shower). Their feature 5 is the linear E / E_jet; it is converted to our ``log_e_rel``
    (:func:`rs3l_coffea.nn.published.from_published_features`), so the rows are in our convention.
    Requires ``h5py`` (extra ``h5``).
    """
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise InputFileError("reading RS3L h5 files needs h5py: pip install 'rs3l-coffea[h5]'") from error
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"RS3L h5 file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InputFileError(f"{path} is not a readable h5 file: {error}") from error
    with handle:
        for key in ("features", "truth_label", "vartype"):
            if key not in handle:
                raise InputFileError(f"{path}: dataset {key!r} missing (found {sorted(handle)})")
        features = np.asarray(handle["features"], dtype=np.float32)
        truth = np.asarray(handle["truth_label"]).reshape(-1).astype(np.int32)
        vartype = np.asarray(handle["vartype"]).reshape(-1).astype(np.int32)
        handle_keys = set(handle)
        jettype = (
            np.asarray(handle["jettype"]).reshape(-1).astype(np.int32)
            if "jettype" in handle_keys
            else np.full(len(truth), -1, np.int32)
        )
    if features.ndim != 3 or features.shape[2] != N_FEATURES:
        raise InputFileError(
            f"{path}: 'features' has shape {features.shape}, expected (N, P, {N_FEATURES})"
        )
    n = features.shape[0]
    if n % 2 or len(truth) != n or len(vartype) != n:
        raise InputFileError(
            f"{path}: expected an even number of interleaved rows with matching truth_label/vartype, "
            f"got features {n}, truth_label {len(truth)}, vartype {len(vartype)}"
        )
    nominal, partner = slice(0, None, 2), slice(1, None, 2)
    if np.any(vartype[nominal] != -1):
        bad = int(np.flatnonzero(vartype[nominal] != -1)[0]) * 2
        raise InputFileError(
            f"{path}: row {bad} should be a nominal jet (vartype -1), has vartype {vartype[bad]}"
        )
    unknown = sorted(set(np.unique(vartype[partner]).tolist()) - set(PUBLISHED_VARTYPE_TO_OURS))
    if unknown:
        raise InputFileError(f"{path}: unknown vartype values {unknown}")
    mask = np.any(features != 0, axis=2)
    features = _published_to_our_features(features, mask, path)
    n_pairs = n // 2
    rows: dict[str, np.ndarray] = {
        "features": features[nominal],
        "mask": mask[nominal],
        "partner_features": features[partner],
        "partner_mask": mask[partner],
        "variant": np.asarray([PUBLISHED_VARTYPE_TO_OURS[v] for v in vartype[partner]], np.int32),
        "pair_rank": np.zeros(n_pairs, np.int32),
        # The layout has no hard-event id: each pair is its own hard event.
        "hard_event_id": np.arange(n_pairs, dtype=np.int64),
        "jet_index": np.zeros(n_pairs, np.int32),
        "label": truth[nominal],
        "pair_delta_r": np.full(n_pairs, np.nan, np.float32),
        "jettype": jettype[nominal],
    }
    if "jettype" not in handle_keys:
        rows["jettype"] = rows["label"].copy()
    for name in JET_OBSERVABLES:
        rows[f"jet_{name}"] = np.full(n_pairs, np.nan, np.float32)
        rows[f"partner_{name}"] = np.full(n_pairs, np.nan, np.float32)
    return rows
