"""The ``rs3l demo`` engine: RS3L in coffea on the bundled sample, plus large-statistics plots.

:func:`run_demo` does two things.

1. **The coffea path.** :class:`~rs3l_coffea.processors.VariantProcessor` runs under
   ``processor.Runner`` over the bundled ROOT sample (:mod:`rs3l_coffea.samples`: ``zh_bb``
   and ``zj``, 40 hard events in five shower variants), and
   :class:`~rs3l_coffea.processors.TaggingProcessor` over coffea's ``delphes.root`` and
   ``pfnano.root`` test files when they are cached (or ``fetch_samples=True``). Both come with
   the :meth:`~rs3l_coffea.processors.TaggingProcessor.extra_output` hook of
   :class:`JetRowsMixin`, which adds per-jet rows with truth labels to the accumulator.
2. **The statistics.** The bundled compact per-jet inputs (:mod:`rs3l_coffea.demo_inputs`: the
   first 1,000 selected jets per process and variant of 2 x 2,400 generated hard events,
   constituents as float16) go through the same
   :func:`~rs3l_coffea.coffea_processing.analysis.jet_table` and
   :func:`~rs3l_coffea.coffea_processing.analysis.fill_histograms` as the processors, without ROOT I/O
   and jet clustering. Their histograms feed the plots and the Wasserstein table.

Outputs in the output directory:

* ``jets.parquet`` -- one row per jet (``input``: ``compact``, ``bundled-root`` or
  ``coffea-test-file``; dataset, variant, file, entry, jet index, kinematics, N2, constituent
  count, selection flag, truth label, head scores, embedding);
* ``histograms.coffea`` and ``histograms.json`` (UHI JSON; read back with
  :func:`read_histograms_json`, no unpickling): sets ``variants`` (compact inputs),
  ``bundled_root`` (coffea on the bundled ROOT files), ``coffea_samples`` (coffea's files);
* ``wasserstein.json`` -- unbinned W1 between the nominal and each variant per embedding
  direction component, head score, N2 and soft-drop mass, with its statistical floor and
  p-value from a permutation test (:func:`w1_cell`), for both processes together and for
  each process;
* ``variant_ratios*.png``, ``embedding_directions*.png`` (all 8 directions),
  ``score_distributions.png``, ``msd_pass_fail.png``;
* ``features_delphes.parquet``/``features_pfnano.parquet`` (RS3L feature parquet);
* ``summary.json`` -- model, inputs, cutflow, timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.coffea_processing import analysis
from rs3l_coffea.demo_inputs import (
    COMPACT_INPUTS,
    CompactJets,
    compact_inputs_path,
    load_compact_inputs,
)
from rs3l_coffea.evaluation.wasserstein import wasserstein_permutation_test
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.processors import TaggingProcessor, VariantProcessor
from rs3l_coffea.samples import BUNDLED_PROCESSES, BUNDLED_VARIANTS, bundled_fileset

COFFEA_SAMPLES = ("delphes.root", "pfnano.root")  # real files with particle candidates
NOMINAL = "nominal"
W1_PERMUTATIONS = 100
# Bins merged for the plots (the histograms keep the fine binning of analysis.DEFAULT_BINNING).
PLOT_REBIN = {"embedding": 4, "score": 2, "n2": 2, "msd": 2, "pt": 2}
SCORE_CUT = 0.5
PLOT_DPI = 110  # ~2000 px wide grids; rendering dominates the plots' time


# --------------------------------------------------------------------------------------------
# per-jet rows (one implementation for the processor hook and the compact inputs)
# --------------------------------------------------------------------------------------------
def jet_rows(
    table: Any,
    *,
    dataset: str,
    variants: np.ndarray,
    files: np.ndarray,
    entries: np.ndarray,
    truth: np.ndarray,
    input_kind: str,
    head_names: Sequence[str],
    embedding_dim: int,
) -> dict[str, list[Any]]:
    """Flat per-jet rows of a :func:`~rs3l_coffea.coffea_processing.analysis.jet_table`.

    ``variants``, ``files`` and ``entries`` are per *event* of ``table``; ``truth`` per jet
    (:class:`~rs3l_coffea.features.JetLabel` values). Plain lists, so coffea's accumulate
    concatenates them across chunks.
    """
    from rs3l_coffea.features import JetLabel

    counts = np.asarray(ak.to_numpy(ak.num(table, axis=1)), dtype=np.int64)
    flat = ak.flatten(table, axis=1)
    n_jets = len(flat)
    tagged = ~np.asarray(ak.to_numpy(ak.is_none(flat.rs3l, axis=0)))
    rows: dict[str, list[Any]] = {
        "input": [input_kind] * n_jets,
        "dataset": [dataset] * n_jets,
        "variant": np.repeat(variants, counts).tolist(),
        "file": np.repeat(files, counts).tolist(),
        "entry": np.repeat(entries, counts).tolist(),
        "jet": np.asarray(ak.to_numpy(ak.flatten(ak.local_index(table, axis=1)))).tolist(),
        "truth": [JetLabel(int(label)).name for label in truth],
    }
    for name in ("pt", "eta", "phi", "mass", "msd", "n_constituents", "selected"):
        rows[name] = np.asarray(ak.to_numpy(flat[name])).tolist()
    n2 = np.asarray(ak.to_numpy(ak.fill_none(flat.n2, np.nan)), dtype=np.float64)
    n2_valid = np.asarray(ak.to_numpy(ak.fill_none(flat.n2_valid, False)), dtype=bool)
    rows["n2"] = np.where(n2_valid, n2, np.nan).tolist()
    rs3l = ak.drop_none(flat.rs3l[tagged], axis=0)  # jets without constituents have no record
    embedding = np.full((n_jets, embedding_dim), np.nan)
    if tagged.any():
        embedding[tagged] = np.asarray(ak.to_numpy(rs3l.embedding), dtype=np.float64).reshape(
            -1, embedding_dim
        )
    rows["embedding"] = embedding.tolist()
    for head in head_names:
        values = np.full(n_jets, np.nan)
        if tagged.any():
            values[tagged] = np.asarray(ak.to_numpy(rs3l[head]), dtype=np.float64)
        rows[f"head:{head}"] = values.tolist()
    return rows


class JetRowsMixin:
    """:meth:`TaggingProcessor.extra_output` hook adding per-jet rows with truth labels.

    The rows are Python lists in the accumulator: fine for the demo's small files, not for
    production, where :class:`TaggingProcessor`'s parquet skims scale.
    """

    tagger: RS3LTagger
    input_kind = "coffea-test-file"

    def extra_output(
        self, events: Any, jets: Any, table: Any, *, dataset: str, variant: Any
    ) -> dict[str, Any]:
        from rs3l_coffea.features import truth_labels
        from rs3l_coffea.io import detect_source, gen_particles_from_events

        metadata = dict(getattr(events, "metadata", {}) or {})
        origin = str(metadata.get("filename", "input"))
        n_events = len(table)
        start = int(metadata.get("entrystart", 0))
        labels = truth_labels(jets, gen_particles_from_events(events, detect_source(events)))
        rows = jet_rows(
            table,
            dataset=dataset,
            variants=_event_variant_names(variant, n_events),
            files=np.full(n_events, os.path.basename(origin), dtype=object),
            entries=np.arange(start, start + n_events),
            truth=labels,
            input_kind=self.input_kind,
            head_names=self.tagger.head_names,
            embedding_dim=self.tagger.embedding_dim,
        )
        return {"jets": rows}


class VariantRowsProcessor(JetRowsMixin, VariantProcessor):
    """:class:`VariantProcessor` whose hook adds per-jet rows (bundled ROOT sample)."""

    input_kind = "bundled-root"


class TaggingRowsProcessor(JetRowsMixin, TaggingProcessor):
    """:class:`TaggingProcessor` whose hook adds per-jet rows (coffea's test files)."""


def _event_variant_names(variant: Any, n_events: int) -> np.ndarray:
    """Variant name of every event of a chunk (``""`` without a variant axis)."""
    from rs3l_coffea.generation.config import VARIANT_NAMES

    if variant is None:
        return np.full(n_events, "", dtype=object)
    if isinstance(variant, str):
        return np.full(n_events, variant, dtype=object)
    codes = np.asarray(ak.to_numpy(ak.fill_none(variant, -999)), dtype=np.int64)
    return np.array([VARIANT_NAMES.get(int(c), f"code{int(c)}") for c in codes], dtype=object)


def _tag_compact(
    tagger: RS3LTagger, compact: Mapping[tuple[str, str], CompactJets]
) -> dict[str, Any]:
    """The processors' table and histogram functions on the compact inputs (``Runner``-like
    output: ``{"hists", "cutflow", "jets"}``)."""
    from rs3l_coffea.features import JetSelection

    hists = analysis.make_histograms(tagger.head_names, tagger.embedding_dim, variant_axis=True)
    rows: list[dict[str, list[Any]]] = []
    cutflow: dict[str, dict[str, int]] = {}
    for (process, variant), part in compact.items():
        table = analysis.jet_table(part.jets, part.constituents, tagger, JetSelection.generated())
        analysis.fill_histograms(
            hists, table, dataset=process, head_names=tagger.head_names, variant=variant
        )
        n = len(table)
        rows.append(jet_rows(
            table, dataset=process, variants=np.full(n, variant, dtype=object),
            files=np.full(n, COMPACT_INPUTS, dtype=object), entries=part.entry,
            truth=part.truth, input_kind="compact", head_names=tagger.head_names,
            embedding_dim=tagger.embedding_dim,
        ))
        counts = analysis.cutflow(part.jets, table)
        total = cutflow.setdefault(f"{process} (compact)", dict.fromkeys(counts, 0))
        for key, value in counts.items():
            total[key] += int(value)
    merged = {key: [v for part in rows for v in part[key]] for key in rows[0]}
    return {"hists": hists, "cutflow": cutflow, "jets": merged}


# --------------------------------------------------------------------------------------------
# Wasserstein distances with their statistical floor
# --------------------------------------------------------------------------------------------
W1_CELL_KEYS = ("w1", "floor_median", "floor_q95", "p_value")


def w1_cell(
    nominal: np.ndarray, variant: np.ndarray, permutations: int, rng: np.random.Generator
) -> dict[str, float]:
    """:func:`~rs3l_coffea.evaluation.wasserstein_permutation_test` of the finite entries.

    A quantity may be undefined for some jets (N2 of jets with too few constituents is NaN);
    those jets are left out. With fewer than 2 entries on a side every number is NaN (``null``
    in ``wasserstein.json``, ``-`` in the printed table).
    """
    a, b = nominal[np.isfinite(nominal)], variant[np.isfinite(variant)]
    if a.size < 2 or b.size < 2:
        return dict.fromkeys(W1_CELL_KEYS, float("nan"))
    return wasserstein_permutation_test(a, b, n_permutations=permutations, rng=rng).as_dict()


def _quantities(jets: Mapping[str, np.ndarray], rows: np.ndarray, head_names: Sequence[str]):
    """``{quantity: per-jet values}`` of the W1 table for the given rows."""
    embedding = jets["embedding"][rows]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        directions = embedding / norms
    out = {f"embedding[dim={d}]": directions[:, d] for d in range(directions.shape[1])}
    out.update({f"score[head={h}]": jets[f"head:{h}"][rows] for h in head_names})
    out["N2"] = jets["n2"][rows]
    out["msd"] = jets["msd"][rows]
    return out


def wasserstein_tables(
    jets: Mapping[str, np.ndarray],
    processes: Sequence[str],
    head_names: Sequence[str],
    permutations: int = W1_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{"all" | process: {variant: {quantity: w1_cell + *_relative, n_*}}}``.

    Selected, tagged jets of the compact inputs; ``w1_relative`` divides W1 (and the floors)
    by the nominal standard deviation of the quantity.
    """
    rng = np.random.default_rng(seed)
    usable = (
        (jets["input"] == "compact")
        & jets["selected"].astype(bool)
        & np.isfinite(jets["embedding"]).all(axis=1)
    )
    variants = [v for v in dict.fromkeys(jets["variant"][usable].tolist()) if v != NOMINAL]
    tables: dict[str, Any] = {}
    present = [p for p in processes if (usable & (jets["dataset"] == p)).any()]
    for key in ["all", *present]:
        in_key = usable if key == "all" else usable & (jets["dataset"] == key)
        nominal = _quantities(jets, np.flatnonzero(in_key & (jets["variant"] == NOMINAL)), head_names)
        tables[key] = {}
        for variant in variants:
            varied = _quantities(jets, np.flatnonzero(in_key & (jets["variant"] == variant)), head_names)
            row = {}
            for quantity, values in nominal.items():
                result = w1_cell(values, varied[quantity], permutations, rng)
                spread = float(np.nanstd(values)) if np.isfinite(values).sum() > 1 else 0.0
                for name in ("w1", "floor_median", "floor_q95"):
                    result[f"{name}_relative"] = result[name] / spread if spread > 0 else float("nan")
                result["n_nominal"] = int(np.isfinite(values).sum())
                result["n_variant"] = int(np.isfinite(varied[quantity]).sum())
                row[quantity] = result
            tables[key][variant] = row
    return tables


# --------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` computed and wrote."""

    out_dir: Path
    model_path: str
    jets: dict[str, np.ndarray]
    """Per-jet columns (``embedding`` is ``(n, dim)``, head scores under ``head:<name>``)."""
    head_names: tuple[str, ...]
    embedding_dim: int
    wasserstein: dict[str, dict[str, dict[str, dict[str, float]]]]
    """``{"all" | process: {variant: {quantity: {w1, floor_*, p_value, *_relative, n_*}}}}``."""
    cutflow: dict[str, dict[str, int]]
    coffea_samples: dict[str, Path]
    files: list[Path]
    seconds: float
    timings: dict[str, float]


def coffea_samples_available(fetch: bool = False) -> dict[str, Path]:
    """``{name: path}`` of coffea's cached Delphes and PFNano test files (download if ``fetch``)."""
    from rs3l_coffea.testing import cache_dir, sample_path

    found = {}
    for name in COFFEA_SAMPLES:
        cached = cache_dir() / name
        if cached.is_file():
            found[name] = cached
        elif fetch:
            found[name] = sample_path(name)
    return found


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    processes: Sequence[str] = BUNDLED_PROCESSES,
    variants: Sequence[str] = BUNDLED_VARIANTS,
    include_coffea_samples: bool = True,
    fetch_samples: bool = False,
    threads: int | None = None,
    jets_per_variant: int | None = None,
    compact_inputs: str | os.PathLike[str] | None = None,
    permutations: int = W1_PERMUTATIONS,
) -> DemoResult:
    """Run the demo (see the module docstring) and write its outputs to ``out_dir``.

    Args:
        out_dir: output directory (created).
        model: RS3L model (``NAME``, ``.safetensors`` or ``.json``); ``None``: the shipped
            default (:meth:`RS3LTagger.default`).
        processes, variants: subset of the bundled sample (``nominal`` is always included,
            it is the reference of every comparison).
        include_coffea_samples: also tag coffea's ``delphes.root`` and ``pfnano.root`` test
            files when they are cached, and write their feature parquet.
        fetch_samples: download coffea's test samples if they are not cached.
        threads: torch threads (``None``: torch's default).
        jets_per_variant: use only this many compact-input jets per process and variant
            (``None``: all, >= 1,000); for quick runs and the test suite.
        compact_inputs: another compact-input file (default: the bundled one).
        permutations: random splits behind each W1 floor and p-value (:func:`w1_cell`).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out_dir)
    variants = tuple(dict.fromkeys((NOMINAL, *variants)))
    tagger = (
        RS3LTagger.default(threads=threads)
        if model is None
        else RS3LTagger.load(model, threads=threads)
    )
    # Unknown names fail here, before any output exists.
    bundled_fileset(processes, variants)
    compact = load_compact_inputs(compact_inputs, processes, variants, jets_per_variant)
    out.mkdir(parents=True, exist_ok=True)
    from rs3l_coffea.coffea_processing.runner import run_fileset

    # PFNano files reference collections they do not contain; coffea warns once per branch.
    warnings.filterwarnings("ignore", "Missing cross-reference", RuntimeWarning)
    clock = time.perf_counter()
    outputs = {
        "bundled_root": run_fileset(
            bundled_fileset(processes, variants), VariantRowsProcessor(tagger), status=False
        )
    }
    coffea_files = coffea_samples_available(fetch_samples) if include_coffea_samples else {}
    written: list[Path] = []
    if coffea_files:
        outputs["coffea_samples"] = run_fileset(
            {Path(name).stem: [str(path)] for name, path in coffea_files.items()},
            TaggingRowsProcessor(tagger),
            status=False,
        )
        written.extend(_write_features(out, coffea_files))
    timings["coffea processors"] = time.perf_counter() - clock
    clock = time.perf_counter()
    outputs["variants"] = _tag_compact(tagger, compact)
    timings["compact inputs"] = time.perf_counter() - clock

    jets = _merge_rows([o["jets"] for o in outputs.values()])
    cutflow = {
        name: {k: int(v) for k, v in counts.items()}
        for o in outputs.values()
        for name, counts in o["cutflow"].items()
    }
    written.append(_write_jets(out / "jets.parquet", jets))
    hist_sets = {name: o["hists"] for name, o in outputs.items()}
    written.extend(_write_histograms(out, hist_sets))

    clock = time.perf_counter()
    tables = wasserstein_tables(jets, processes, tagger.head_names, permutations=permutations)
    timings["wasserstein"] = time.perf_counter() - clock
    with atomic_open(out / "wasserstein.json", "w") as handle:
        json.dump(_nan_to_none(tables), handle, indent=1)
    written.append(out / "wasserstein.json")

    clock = time.perf_counter()
    written.extend(_plots(out, hist_sets, jets, processes, tagger.head_names))
    timings["plots"] = time.perf_counter() - clock

    seconds = time.perf_counter() - started
    summary = {
        "model": tagger.model_path,
        "head_names": list(tagger.head_names),
        "embedding_dim": tagger.embedding_dim,
        "inputs": {
            "bundled_root": {"processes": list(processes), "variants": list(variants)},
            "compact": str(compact_inputs or compact_inputs_path()),
            "coffea_samples": {name: str(path) for name, path in coffea_files.items()},
        },
        "cutflow": cutflow,
        "n_jets": len(jets["pt"]),
        "seconds": round(seconds, 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "files": sorted(str(p.name) for p in written),
    }
    with atomic_open(out / "summary.json", "w") as handle:
        json.dump(summary, handle, indent=1)
    written.append(out / "summary.json")
    return DemoResult(
        out_dir=out,
        model_path=tagger.model_path,
        jets=jets,
        head_names=tuple(tagger.head_names),
        embedding_dim=tagger.embedding_dim,
        wasserstein=tables,
        cutflow=cutflow,
        coffea_samples=coffea_files,
        files=written,
        seconds=seconds,
        timings=timings,
    )


def _nan_to_none(value: Any) -> Any:
    """Strict JSON has no NaN: undefined W1 values become ``null``."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _merge_rows(parts: list[dict[str, list[Any]]]) -> dict[str, np.ndarray]:
    keys = list(parts[0])
    merged: dict[str, np.ndarray] = {}
    for key in keys:
        values = [v for part in parts for v in part.get(key, [])]
        if key == "embedding":
            merged[key] = np.asarray(values, dtype=np.float64)
        elif key in ("input", "dataset", "variant", "file", "truth"):
            merged[key] = np.asarray(values, dtype=object)
        else:
            merged[key] = np.asarray(values)
    return merged


def _write_jets(path: Path, jets: dict[str, np.ndarray]) -> Path:
    columns = {
        key: (value.astype(str) if value.dtype == object else value) for key, value in jets.items()
    }
    with atomic_path(path) as tmp:
        ak.to_parquet(ak.zip({k: ak.from_numpy(v) if v.ndim == 1 else ak.from_regular(
            ak.from_numpy(v)) for k, v in columns.items()}, depth_limit=1), tmp)
    return path


def _write_features(out: Path, files: dict[str, Path]) -> list[Path]:
    from rs3l_coffea.features.pipeline import features_from_file, write_features_parquet

    written = []
    for name, path in files.items():
        target = out / f"features_{Path(name).stem}.parquet"
        write_features_parquet(target, features_from_file(path))
        written.append(target)
    return written


def _write_histograms(out: Path, hist_sets: dict[str, dict[str, Any]]) -> list[Path]:
    import uhi.io.json

    from rs3l_coffea.coffea_processing.runner import save_output

    coffea_path = save_output(hist_sets, out / "histograms.coffea")
    json_path = out / "histograms.json"
    with atomic_open(json_path, "w") as handle:
        json.dump(hist_sets, handle, default=uhi.io.json.default)
    return [coffea_path, json_path]


def read_histograms_json(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read ``histograms.json`` back into ``{set: {name: hist.Hist}}`` (no pickle involved)."""
    import hist.serialization
    import uhi.io.json

    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle, object_hook=uhi.io.json.object_hook)
    return {
        set_name: {name: hist.serialization.from_uhi(h) for name, h in hists.items()}
        for set_name, hists in raw.items()
    }


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
PROCESS_TITLES = {"zh_bb": "ZH, H→bb (Z→νν)", "zj": "Z(→νν) + jet"}
SELECTION_TEXT = r"$p_T > 450$ GeV, $|\eta| < 1.5$, $m > 10$ GeV"


def quantity_label(name: str, head: str | None = None, dim: int | None = None) -> str:
    """Axis label of a demo quantity (``embedding``, ``score``, ``n2``, ``msd``, ``pt``)."""
    if name == "embedding":
        return rf"RS3L embedding direction $\hat{{e}}_{{{dim}}}$"
    if name == "score":
        return "RS3L score" if head in (None, "score") else f"RS3L score ({head})"
    return {"n2": r"$N_2^{(1)}$", "msd": "soft-drop mass [GeV]", "pt": r"jet $p_T$ [GeV]",
            "mass": "jet mass [GeV]"}[name]


def _colour_maps(datasets: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Fixed colours: variants (nominal black) and datasets, the same in every figure."""
    from rs3l_coffea.evaluation.plots import petroff10

    others = [v for v in BUNDLED_VARIANTS if v != NOMINAL]
    palette = petroff10(len(others) + len(datasets))
    variant_colours = {NOMINAL: "black", **dict(zip(others, palette, strict=False))}
    dataset_colours = dict(zip(datasets, palette[len(others):], strict=False))
    return variant_colours, dataset_colours


def _plots(
    out: Path,
    hist_sets: dict[str, dict[str, Any]],
    jets: Mapping[str, np.ndarray],
    processes: Sequence[str],
    head_names: Sequence[str],
) -> list[Path]:
    import hist

    from rs3l_coffea.evaluation import plot_distributions, plot_variant_ratios

    hists = hist_sets["variants"]
    datasets = list(dict.fromkeys(
        [*processes, *[str(d) for s in hist_sets.values() for d in s["pt"].axes["dataset"]]]
    ))
    variant_colours, dataset_colours = _colour_maps(datasets)
    head = head_names[0] if head_names else None
    written: list[Path] = []
    present = {str(d) for d in hists["pt"].axes["dataset"]}
    # (file suffix, hist index of the dataset axis: ``sum`` or one dataset, title)
    keys: list[tuple[str, str | Callable[..., Any], str]] = [("", sum, "both processes: " + " and ".join(
        PROCESS_TITLES.get(p, p) for p in processes if p in present))]
    keys += [(f"_{p}", p, PROCESS_TITLES.get(p, p)) for p in processes if p in present]
    for suffix, select, process_title in keys:
        title = f"{process_title}; selected jets ({SELECTION_TEXT})"

        def panel(name: str, select: Any = select, **extra: Any) -> Any:
            return hists[name][{"dataset": select, **extra, "value": hist.rebin(PLOT_REBIN[name])}]

        overview = {quantity_label("embedding", dim=d): panel("embedding", dim=hist.loc(d))
                    for d in (0, 1)}
        if head is not None:
            overview[quantity_label("score", head)] = panel("score", head=hist.loc(head))
        for name in ("n2", "msd", "pt"):
            overview[quantity_label(name)] = panel(name)
        written.extend(plot_variant_ratios(
            overview, out / f"variant_ratios{suffix}", title=title, ncols=3,
            colours=variant_colours, formats=("png",), dpi=PLOT_DPI,
        ))
        directions = {
            quantity_label("embedding", dim=int(d)): panel("embedding", dim=hist.loc(int(d)))
            for d in hists["embedding"].axes["dim"]
        }
        written.extend(plot_variant_ratios(
            directions, out / f"embedding_directions{suffix}", title=title, ncols=4,
            colours=variant_colours, formats=("png",), dpi=PLOT_DPI,
        ))
    if head is not None:
        scores = {}
        for set_name, one in hist_sets.items():
            if set_name == "bundled_root":
                continue  # 20 jets per process; the compact inputs show the same processes
            for dataset in one["score"].axes["dataset"]:
                selection: dict[str, Any] = {"dataset": hist.loc(dataset), "head": hist.loc(head)}
                if "variant" in one["score"].axes.name:
                    selection["variant"] = hist.loc(NOMINAL)
                h = one["score"][selection][{"value": hist.rebin(PLOT_REBIN["score"])}]
                scores[PROCESS_TITLES.get(str(dataset), f"coffea {dataset}.root")] = h
        colours = {PROCESS_TITLES.get(d, f"coffea {d}.root"): c for d, c in dataset_colours.items()}
        written.extend(plot_distributions(
            {"ZH and Z+jet: nominal shower, selected jets\ncoffea's test files: all jets": scores},
            out / "score_distributions", quantity_label("score", head),
            title="RS3L score per dataset", colours=colours, formats=("png",), dpi=PLOT_DPI,
        ))
        written.extend(_pass_fail_plot(out, jets, processes, head, colours))
    return written


def _pass_fail_plot(
    out: Path, jets: Mapping[str, np.ndarray], processes: Sequence[str], head: str,
    colours: Mapping[str, str],
) -> list[Path]:
    """Soft-drop mass of selected nominal jets passing / failing ``score > SCORE_CUT``."""
    import hist

    from rs3l_coffea.evaluation import plot_distributions

    bins, low, high = analysis.DEFAULT_BINNING["msd"]
    usable = (jets["input"] == "compact") & jets["selected"].astype(bool) & (jets["variant"] == NOMINAL)
    score = jets[f"head:{head}"]
    panels: dict[str, dict[str, Any]] = {
        f"pass: RS3L score > {SCORE_CUT:g}": {}, f"fail: RS3L score ≤ {SCORE_CUT:g}": {}
    }
    for process in processes:
        rows = usable & (jets["dataset"] == process) & np.isfinite(score)
        for target, passed in zip(panels.values(), (True, False), strict=True):
            keep = rows & ((score > SCORE_CUT) if passed else (score <= SCORE_CUT))
            h: hist.Hist = hist.Hist(hist.axis.Regular(bins // PLOT_REBIN["msd"], low, high, name="msd"))
            h.fill(jets["msd"][keep])
            target[PROCESS_TITLES.get(process, process)] = h
    return plot_distributions(
        panels, out / "msd_pass_fail", quantity_label("msd"),
        title=f"Soft-drop mass, nominal shower, selected jets ({SELECTION_TEXT})",
        colours=colours, formats=("png",), dpi=PLOT_DPI,
    )
