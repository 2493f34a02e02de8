"""Per-chunk analysis logic behind the ready coffea processors (``rs3l_coffea.processors``).

One chunk of NanoEvents (eager/virtual under ``processor.Runner``, or dask-awkward under
``dataset_tools.apply_to_fileset``) goes through:

1. :func:`rs3l_coffea.io.jets_from_events` -> jets and uniform constituents;
2. :func:`jet_table` -> events x jets records: ``pt, eta, phi, mass`` (reader), ``msd, n2,
   n2_valid, n2_groomed, n2_groomed_valid, n_constituents``
   (:func:`~rs3l_coffea.features.jet_observables`), ``selected``
   (:class:`~rs3l_coffea.features.JetSelection`) and ``rs3l`` (:class:`RS3LTagger`: embedding and
   head scores, ``None`` for jets without constituents);
3. :func:`fill_histograms` -> ``hist`` histograms with a ``dataset`` StrCategory axis (and a
   ``variant`` axis for re-simulated samples);
4. optionally :func:`write_skim`: the table as parquet, one file per chunk, named by dataset,
   file and entry range (:func:`skim_path`), so a re-run overwrites the same file.

Histogrammed jets: selected and tagged (``rs3l`` not ``None``); ``n2`` only where it is defined
(``n2_valid``), ``n2_groomed`` (the soft-drop groomed N2 of CMS's ``FatJet_n2b1``, the RS3L paper's
baseline) where the groomed jet has at least 3 particles (``n2_groomed_valid``). The embedding is histogrammed as its *direction* (unit-vector components in
[-1, 1]): RS3L's contrastive loss only constrains directions, and raw magnitudes of a
DGCNN with a sum pool span many orders of magnitude.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea._awkward import is_dask as _is_dask
from rs3l_coffea._awkward import typetracer_result
from rs3l_coffea.errors import ConfigError, InputFileError

# Binning: (bins, low, high) per scalar histogram; the embedding direction lives in [-1, 1].
DEFAULT_BINNING: dict[str, tuple[int, float, float]] = {
    "embedding": (100, -1.0, 1.0),
    "score": (50, 0.0, 1.0),
    "n2": (50, 0.0, 0.5),
    "n2_groomed": (50, 0.0, 0.5),
    "mass": (60, 0.0, 300.0),
    "msd": (60, 0.0, 300.0),
    "pt": (60, 0.0, 1500.0),
}
_LABELS = {
    "embedding": "RS3L embedding direction component",
    "score": "RS3L head score",
    "n2": "$N_2^{(1)}$ (ungroomed)",
    "n2_groomed": "$N_2^{(1)}$ (soft-drop groomed, CMS n2b1)",
    "mass": "jet mass [GeV]",
    "msd": "soft-drop mass [GeV]",
    "pt": "jet $p_T$ [GeV]",
}


# --------------------------------------------------------------------------------------------
# the per-jet table
# --------------------------------------------------------------------------------------------
def jet_table(jets: Any, constituents: Any, tagger: Any, selection: Any | None = None) -> Any:
    """Events x jets table of kinematics, observables, selection flag and RS3L columns.

    Works on eager/virtual awkward arrays and on dask-awkward arrays (one
    ``map_partitions``; typetracer-safe, the model never runs at graph-construction time).
    """
    from rs3l_coffea.features import JetSelection

    builder = _TableBuilder(tagger, selection or JetSelection.permissive())
    if _is_dask(jets):
        import dask_awkward as dak

        meta = builder.typetracer(jets._meta, constituents._meta)
        return dak.map_partitions(builder, jets, constituents, label="rs3l-jet-table", meta=meta)
    return builder(ak.Array(jets), ak.Array(constituents))


class _TableBuilder:
    """Eager per-partition table construction (pickles the tagger's path, never the model)."""

    def __init__(self, tagger: Any, selection: Any) -> None:
        self.tagger, self.selection = tagger, selection

    def typetracer(self, jets: ak.Array, constituents: ak.Array) -> ak.Array:
        return typetracer_result(self, jets, constituents)

    def __call__(self, jets: ak.Array, constituents: ak.Array) -> ak.Array:
        from rs3l_coffea.features import jet_observables

        if ak.backend(jets) == "typetracer" or ak.backend(constituents) == "typetracer":
            return self.typetracer(jets, constituents)
        jets = ak.without_parameters(jets)
        counts = np.asarray(ak.to_numpy(ak.num(jets, axis=1)), dtype=np.int64)
        observables = jet_observables(jets, constituents)
        selected = np.asarray(ak.to_numpy(ak.flatten(self.selection.mask(jets, constituents))))
        columns = {
            "pt": observables["pt"],
            "eta": observables["eta"],
            "phi": observables["phi"],
            "mass": observables["mass"],
            "msd": observables["msd"],
            "n2": observables["n2"],
            "n2_valid": observables["valid"],
            "n2_groomed": observables["n2_groomed"],
            "n2_groomed_valid": observables["n2_groomed_valid"],
            "n_constituents": observables["n_constituents"],
            "selected": selected.astype(bool),
        }
        flat = ak.zip(
            {name: ak.from_numpy(np.ascontiguousarray(v)) for name, v in columns.items()},
            depth_limit=1,
        )
        table = ak.unflatten(flat, counts, axis=0)
        return ak.with_field(table, self.tagger(jets, constituents), "rs3l")


# --------------------------------------------------------------------------------------------
# histograms
# --------------------------------------------------------------------------------------------
def make_histograms(
    head_names: Sequence[str],
    embedding_dim: int,
    *,
    variant_axis: bool = False,
    dask: bool = False,
    binning: dict[str, tuple[int, float, float]] | None = None,
) -> dict[str, Any]:
    """Empty histograms (``hist.Hist``, or ``hist.dask.Hist`` with ``dask=True``).

    Every histogram starts with a growing ``dataset`` StrCategory axis (then ``variant`` when
    ``variant_axis``). ``embedding`` has an IntCategory ``dim`` axis, ``score`` a StrCategory
    ``head`` axis (absent when the model has no heads); the last axis is always ``value``.
    """
    import hist

    if dask:
        import hist.dask as hist_dask

        hist_class: Any = hist_dask.Hist
    else:
        hist_class = hist.Hist
    bins = dict(DEFAULT_BINNING)
    bins.update(binning or {})
    unknown = sorted(set(bins) - set(DEFAULT_BINNING))
    if unknown:
        raise ConfigError(f"unknown histogram(s) {unknown} in binning; valid: {list(DEFAULT_BINNING)}")

    def leading() -> list[Any]:
        axes = [hist.axis.StrCategory([], growth=True, name="dataset", label="dataset")]
        if variant_axis:
            axes.append(hist.axis.StrCategory([], growth=True, name="variant", label="variant"))
        return axes

    def value_axis(name: str) -> Any:
        n, low, high = bins[name]
        return hist.axis.Regular(n, low, high, name="value", label=_LABELS[name])

    out = {
        "embedding": hist_class(
            *leading(),
            hist.axis.IntCategory(list(range(embedding_dim)), name="dim", label="embedding dimension"),
            value_axis("embedding"),
        )
    }
    if head_names:
        out["score"] = hist_class(
            *leading(),
            hist.axis.StrCategory(list(head_names), name="head", label="head score column"),
            value_axis("score"),
        )
    for name in ("n2", "n2_groomed", "mass", "msd", "pt"):
        out[name] = hist_class(*leading(), value_axis(name))
    return out


def sorted_categories(histogram: Any) -> Any:
    """``histogram`` with its ``dataset`` categories sorted by name and its ``variant``
    categories in generator code order (``nominal``, ``seed``, ``fsr_up``, ... then unknown
    labels by name), so that positions do not depend on which chunk finished first.

    Growing category axes fill in order of arrival, which differs between executors and runs.
    """
    import warnings

    from rs3l_coffea.generation.config import VARIANTS

    def variant_key(name: str) -> tuple[int, str]:
        return (VARIANTS[name][0], "") if name in VARIANTS else (len(VARIANTS) + 100, name)

    index: dict[str, list[str]] = {}
    for axis in histogram.axes:
        if axis.name == "dataset":
            order = sorted(axis)
        elif axis.name == "variant":
            order = sorted(axis, key=variant_key)
        else:
            continue
        if list(axis) != order:
            index[axis.name] = order
    if not index:
        return histogram
    with warnings.catch_warnings():
        # every category is kept, so nothing moves to overflow (what the warning is about)
        warnings.filterwarnings("ignore", "List indexing selection is experimental")
        return histogram[index]


def fill_histograms(
    hists: dict[str, Any],
    table: Any,
    *,
    dataset: str,
    head_names: Sequence[str],
    variant: Any = None,
) -> None:
    """Fill :func:`make_histograms` output from a :func:`jet_table` (eager or dask).

    ``variant`` (only with a variant axis): a string for the whole chunk, or an events-long
    array of variant names (eager) / integer codes (any), with ``variant_names`` resolved by
    :func:`variant_name_masks`.
    """
    if variant is None or isinstance(variant, str):
        _fill_subset(hists, table, dataset=dataset, head_names=head_names, variant=variant)
        return
    for name, event_mask in variant_name_masks(variant):
        _fill_subset(hists, table[event_mask], dataset=dataset, head_names=head_names, variant=name)


def variant_name_masks(codes: Any) -> list[tuple[str, Any]]:
    """``[(variant name, event mask)]`` for per-event ``Event.VariantCode`` values.

    Eager input: only the codes present (unknown codes raise :class:`InputFileError`). Dask
    input: every known variant (their count is fixed and small; empty masks fill nothing).
    """
    from rs3l_coffea.generation.config import VARIANT_NAMES

    if _is_dask(codes):
        return [(name, codes == code) for code, name in sorted(VARIANT_NAMES.items())]
    values = np.asarray(ak.to_numpy(ak.fill_none(codes, -999)))
    out = []
    for code in np.unique(values):
        if int(code) not in VARIANT_NAMES:
            raise InputFileError(
                f"unknown Event.VariantCode {int(code)}; known: {dict(sorted(VARIANT_NAMES.items()))}"
            )
        out.append((VARIANT_NAMES[int(code)], values == code))
    return out


def _fill_subset(
    hists: dict[str, Any], table: Any, *, dataset: str, head_names: Sequence[str], variant: str | None
) -> None:
    dask = _is_dask(table)
    flatten: Callable[..., Any]
    if dask:
        import dask_awkward as dak

        flatten, is_none = dak.flatten, dak.is_none
    else:
        flatten, is_none = ak.flatten, ak.is_none
    jets = flatten(table, axis=1)
    keep = jets.selected & ~is_none(jets.rs3l, axis=0)
    jets = jets[keep]
    common: dict[str, Any] = {"dataset": dataset}
    if variant is not None:
        common["variant"] = variant
    embedding = jets.rs3l.embedding
    n_dim = hists["embedding"].axes["dim"].size
    if dask:
        norm = np.sqrt(sum(embedding[:, i] ** 2 for i in range(n_dim)))
        safe = norm > 0
        for i in range(n_dim):
            hists["embedding"].fill(**common, dim=i, value=(embedding[:, i] / norm)[safe])
        for name in head_names:
            hists["score"].fill(**common, head=name, value=jets.rs3l[name])
    else:
        matrix = np.asarray(ak.to_numpy(embedding), dtype=np.float64).reshape(-1, n_dim)
        norm = np.linalg.norm(matrix, axis=1)
        direction = matrix[norm > 0] / norm[norm > 0, None]
        hists["embedding"].fill(
            **common,
            dim=np.tile(np.arange(n_dim), len(direction)),
            value=direction.reshape(-1),
        )
        for name in head_names:
            hists["score"].fill(**common, head=name, value=np.asarray(ak.to_numpy(jets.rs3l[name])))
    for name in ("mass", "msd", "pt"):
        hists[name].fill(**common, value=jets[name])
    hists["n2"].fill(**common, value=jets.n2[jets.n2_valid])
    hists["n2_groomed"].fill(**common, value=jets.n2_groomed[jets.n2_groomed_valid])


def cutflow(events: Any, table: Any) -> dict[str, Any]:
    """Counts per chunk: events, jets, jets with an RS3L record, selected and tagged jets, and
    (when the model records its training range) tagged jets outside it."""
    if _is_dask(table):
        import dask_awkward as dak

        lib: Any = dak
    else:
        lib = ak
    flat = lib.flatten(table, axis=1)
    tagged = ~lib.is_none(flat.rs3l, axis=0)
    counts = {
        "events": lib.num(events, axis=0),
        "jets": lib.num(flat, axis=0),
        "tagged_jets": lib.sum(tagged),
        "selected_tagged_jets": lib.sum(tagged & flat.selected),
    }
    if "in_range" in flat.rs3l.fields:
        counts["out_of_range_tagged_jets"] = lib.sum(tagged & ~lib.fill_none(flat.rs3l.in_range, True))
    if lib is ak:
        counts = {name: int(value) for name, value in counts.items()}
    return counts


# --------------------------------------------------------------------------------------------
# skims
# --------------------------------------------------------------------------------------------
def skim_path(
    skim_dir: str | os.PathLike[str], dataset: str, filename: str, entry_start: int, entry_stop: int
) -> Path:
    """``skim_dir/<dataset>/<file stem>-<8 hex of the full path>_<start>-<stop>.parquet``.

    Deterministic: the same chunk always maps to the same file; the path hash keeps files of
    equal names in different directories apart. Under
    :func:`~rs3l_coffea.coffea_processing.runner.run_fileset` (``rs3l process --skim-dir``) each
    run writes into a fresh folder that then replaces the previous one, so the folder holds
    exactly the run's skims.
    """
    digest = hashlib.sha1(str(filename).encode()).hexdigest()[:8]
    stem = Path(str(filename)).name.removesuffix(".root")
    safe_dataset = "".join(c if c.isalnum() or c in "._-" else "_" for c in dataset)
    return Path(skim_dir) / safe_dataset / f"{stem}-{digest}_{entry_start}-{entry_stop}.parquet"


def write_skim(path: str | os.PathLike[str], table: ak.Array, entry_start: int = 0) -> Path:
    """Write the events x jets table (plus ``entry``, the event's entry in its file) atomically."""
    from rs3l_coffea.atomic import atomic_path

    if _is_dask(table):
        raise ConfigError(
            "skims are written per chunk by processor.Runner executors; for dask-awkward "
            "(apply_to_fileset) use dask_awkward.to_parquet on the jet table instead"
        )
    entries = np.arange(entry_start, entry_start + len(table), dtype=np.int64)
    out = ak.zip({"entry": entries, "jets": ak.without_parameters(table)}, depth_limit=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        ak.to_parquet(out, tmp)
    return path


