"""The ``rs3l demo`` engine: tag the bundled re-simulated sample (and PFNano) and summarise.

:func:`run_demo` runs RS3L coffea processors with ``processor.Runner`` over

* the bundled sample (:mod:`rs3l_coffea.samples`: ``zh_bb`` and ``zj``, five simulation
  variants each), with a ``variant`` histogram axis, and
* coffea's ``delphes.root`` and ``pfnano.root`` test files when they are already cached (or
  ``fetch_samples=True``), without a variant axis,

then writes to the output directory:

* ``jets.parquet`` -- one row per jet: dataset, variant, file, entry, jet index, kinematics,
  N2, constituent count, selection flag, truth label, head scores, embedding;
* ``histograms.coffea`` (``coffea.util.save``) and ``histograms.json`` (the same histograms in
  the UHI JSON serialisation: read it back with ``json.load(f, object_hook=uhi.io.json.object_hook)``
  and ``hist.serialization.from_uhi``, no unpickling of anything);
* ``wasserstein.json`` -- W1 between the nominal and each re-simulated variant per embedding
  direction component, head score and N2 (absolute and divided by the nominal spread), for
  both processes together and for each process;
* ``variant_ratios*.png/pdf`` (nominal vs variants and their ratio) and
  ``score_distributions.png`` (head score per dataset);
* ``features_delphes.parquet``/``features_pfnano.parquet`` -- the coffea files' jets as
  RS3L feature parquet (:mod:`rs3l_coffea.features.pipeline` layout);
* ``summary.json`` -- model, inputs, cutflow, timings.

The returned :class:`DemoResult` carries everything the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.inference import analysis
from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.processors import TaggingProcessor, VariantProcessor
from rs3l_coffea.samples import BUNDLED_PROCESSES, BUNDLED_VARIANTS, bundled_fileset

COFFEA_SAMPLES = ("delphes.root", "pfnano.root")  # real files with particle candidates
NOMINAL = "nominal"
# Coarser bins for the ratio plots: ~20 selected jets per process and variant in the bundle.
PLOT_REBIN = {"embedding": 10, "score": 5, "n2": 5}


class _JetRowsMixin:
    """``process`` of the ready processors plus a per-jet row list (with truth labels).

    The rows are plain Python lists in the accumulator, so coffea's ``accumulate``
    concatenates them across chunks; they are meant for small samples (the demo), not for
    production, where :class:`TaggingProcessor`'s parquet skims scale.
    """

    def process(self, events: Any) -> dict[str, Any]:
        from rs3l_coffea.features import JetLabel, truth_labels
        from rs3l_coffea.io import gen_particles_from_events, jets_from_events
        from rs3l_coffea.io.readers import detect_source

        metadata = dict(getattr(events, "metadata", {}) or {})
        # Histograms group by physics process (the fileset's dataset otherwise).
        dataset = str(metadata.get("process") or metadata.get("dataset", "unknown"))
        origin = str(metadata.get("filename", "input"))
        source = self.source if self.source != "auto" else detect_source(events, origin)
        jets, constituents = jets_from_events(
            events, source=source, jets=self.jets, recluster_radius=self.recluster_radius,
            origin=origin,
        )
        table = analysis.jet_table(jets, constituents, self.tagger, self.selection)
        hists = analysis.make_histograms(
            self.tagger.head_names, self.tagger.embedding_dim,
            variant_axis=self.variant_axis, binning=self.binning,
        )
        variant = self.variant(events)
        analysis.fill_histograms(
            hists, table, dataset=dataset, head_names=self.tagger.head_names, variant=variant
        )
        labels = truth_labels(jets, gen_particles_from_events(events, source))
        counts = np.asarray(ak.to_numpy(ak.num(table, axis=1)), dtype=np.int64)
        event_variant = _event_variant_names(variant, len(table))
        flat = ak.flatten(table, axis=1)
        tagged = ~np.asarray(ak.to_numpy(ak.is_none(flat.rs3l, axis=0)))
        start = int(metadata.get("entrystart", 0))
        n_jets = len(flat)
        rows: dict[str, list[Any]] = {
            "dataset": [dataset] * n_jets,
            "variant": np.repeat(event_variant, counts).tolist(),
            "file": [os.path.basename(origin)] * n_jets,
            "entry": np.repeat(np.arange(start, start + len(table)), counts).tolist(),
            "jet": np.asarray(ak.to_numpy(ak.flatten(ak.local_index(table, axis=1)))).tolist(),
            "truth": [JetLabel(int(label)).name for label in labels],
        }
        for name in ("pt", "eta", "phi", "mass", "msd", "n_constituents", "selected"):
            rows[name] = np.asarray(ak.to_numpy(flat[name])).tolist()
        n2 = np.asarray(ak.to_numpy(ak.fill_none(flat.n2, np.nan)), dtype=np.float64)
        n2_valid = np.asarray(ak.to_numpy(ak.fill_none(flat.n2_valid, False)), dtype=bool)
        rows["n2"] = np.where(n2_valid, n2, np.nan).tolist()
        rs3l = ak.drop_none(flat.rs3l[tagged], axis=0)  # jets without constituents have no record
        dim = self.tagger.embedding_dim
        embedding = np.full((n_jets, dim), np.nan)
        if tagged.any():
            embedding[tagged] = np.asarray(
                ak.to_numpy(rs3l.embedding), dtype=np.float64
            ).reshape(-1, dim)
        rows["embedding"] = embedding.tolist()
        for head in self.tagger.head_names:
            values = np.full(n_jets, np.nan)
            if tagged.any():
                values[tagged] = np.asarray(ak.to_numpy(rs3l[head]), dtype=np.float64)
            rows[f"head:{head}"] = values.tolist()
        return {
            "hists": hists,
            "cutflow": {dataset: analysis.cutflow(events, table)},
            "jets": rows,
        }


class VariantRowsProcessor(_JetRowsMixin, VariantProcessor):
    """:class:`VariantProcessor` that also returns per-jet rows with truth labels."""


class TaggingRowsProcessor(_JetRowsMixin, TaggingProcessor):
    """:class:`TaggingProcessor` that also returns per-jet rows with truth labels."""


def _event_variant_names(variant: Any, n_events: int) -> np.ndarray:
    """Variant name of every event of a chunk (``""`` without a variant axis)."""
    from rs3l_coffea.generation.config import VARIANT_NAMES

    if variant is None:
        return np.full(n_events, "", dtype=object)
    if isinstance(variant, str):
        return np.full(n_events, variant, dtype=object)
    codes = np.asarray(ak.to_numpy(ak.fill_none(variant, -999)), dtype=np.int64)
    return np.array([VARIANT_NAMES.get(int(c), f"code{int(c)}") for c in codes], dtype=object)


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` computed and wrote."""

    out_dir: Path
    model_path: str
    jets: dict[str, np.ndarray]
    """Per-jet columns (``embedding`` is ``(n, dim)``, head scores under ``head:<name>``)."""
    head_names: tuple[str, ...]
    embedding_dim: int
    wasserstein: dict[str, dict[str, dict[str, float]]]
    """``{"all" | process: {variant: {quantity: W1}}}`` (absolute W1)."""
    wasserstein_relative: dict[str, dict[str, dict[str, float]]]
    """The same divided by the spread of the nominal distribution."""
    cutflow: dict[str, dict[str, int]]
    coffea_samples: dict[str, Path]
    files: list[Path]
    warnings: list[str]
    seconds: float


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
) -> DemoResult:
    """Run the demo (see the module docstring) and write its outputs to ``out_dir``.

    Args:
        out_dir: output directory (created).
        model: RS3L model (``NAME``, ``.safetensors`` or ``.json``); ``None``: the shipped
            default (:meth:`RS3LTagger.default`).
        processes, variants: subset of the bundled sample (``nominal`` is always included,
            it is the reference of every comparison).
        include_coffea_samples: also tag coffea's ``delphes.root`` and ``pfnano.root`` test
            files when they are cached, and write their feature parquet
            (``features_<name>.parquet``, the input format of ``rs3l ntuple --unpaired``).
        fetch_samples: download coffea's test samples if they are not cached.
        threads: torch threads (``None``: torch's default).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    variants = tuple(dict.fromkeys((NOMINAL, *variants)))
    tagger = (
        RS3LTagger.default(threads=threads)
        if model is None
        else RS3LTagger.load(model, threads=threads)
    )
    bundled_fileset(processes, variants)  # unknown names fail here, before any output exists
    out.mkdir(parents=True, exist_ok=True)
    from rs3l_coffea.inference.runner import run_fileset

    # PFNano files reference collections they do not contain; coffea warns once per branch.
    warnings.filterwarnings("ignore", "Missing cross-reference", RuntimeWarning)
    bundled = run_fileset(
        bundled_fileset(processes, variants), VariantRowsProcessor(tagger), status=False
    )
    outputs = {"variants": bundled}
    coffea_files = coffea_samples_available(fetch_samples) if include_coffea_samples else {}
    written: list[Path] = []
    if coffea_files:
        outputs["coffea_samples"] = run_fileset(
            {Path(name).stem: [str(path)] for name, path in coffea_files.items()},
            TaggingRowsProcessor(tagger),
            status=False,
        )
        written.extend(_write_features(out, coffea_files))

    jets = _merge_rows([o["jets"] for o in outputs.values()])
    cutflow = {
        name: {k: int(v) for k, v in counts.items()}
        for o in outputs.values()
        for name, counts in o["cutflow"].items()
    }
    written.append(_write_jets(out / "jets.parquet", jets))
    hist_sets = {name: o["hists"] for name, o in outputs.items()}
    written.extend(_write_histograms(out, hist_sets))

    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        absolute, relative = _wasserstein_tables(bundled["hists"], processes)
    caught.extend(str(r.message) for r in records)
    with atomic_open(out / "wasserstein.json", "w") as handle:
        tables = {"absolute": absolute, "relative_to_nominal_spread": relative}
        json.dump(_nan_to_none(tables), handle, indent=1)
    written.append(out / "wasserstein.json")

    written.extend(_plots(out, bundled["hists"], hist_sets, processes, tagger.head_names))

    seconds = time.perf_counter() - started
    summary = {
        "model": tagger.model_path,
        "head_names": list(tagger.head_names),
        "embedding_dim": tagger.embedding_dim,
        "inputs": {
            "bundled": {"processes": list(processes), "variants": list(variants)},
            "coffea_samples": {name: str(path) for name, path in coffea_files.items()},
        },
        "cutflow": cutflow,
        "n_jets": len(jets["pt"]),
        "seconds": round(seconds, 2),
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
        wasserstein=absolute,
        wasserstein_relative=relative,
        cutflow=cutflow,
        coffea_samples=coffea_files,
        files=written,
        warnings=caught,
        seconds=seconds,
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
        elif key in ("dataset", "variant", "file", "truth"):
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

    from rs3l_coffea.inference.runner import save_output

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


def _variant_hists(hists: dict[str, Any], select: Any) -> dict[str, Any]:
    """``{quantity: Hist[variant, (category,) value]}`` for one process (or ``sum``)."""
    out = {"embedding": hists["embedding"][{"dataset": select}]}
    if "score" in hists:
        out["score"] = hists["score"][{"dataset": select}]
    out["N2"] = hists["n2"][{"dataset": select}]
    return out


def _one_dimensional(hists: dict[str, Any], select: Any) -> dict[str, Any]:
    """``{quantity: Hist[variant, value]}``: each embedding direction, head score and N2."""
    quantities = _variant_hists(hists, select)
    out = {}
    embedding = quantities["embedding"]
    for dim in embedding.axes["dim"]:
        out[f"embedding[dim={dim}]"] = embedding[{"dim": hist_index(embedding, "dim", dim)}]
    if "score" in quantities:
        score = quantities["score"]
        for head in score.axes["head"]:
            out[f"score[head={head}]"] = score[{"head": hist_index(score, "head", head)}]
    out["N2"] = quantities["N2"]
    return out


def hist_index(h: Any, axis: str, value: Any) -> int:
    """Bin index of a category value (avoids hist's int-means-index ambiguity of IntCategory)."""
    return int(h.axes[axis].index(value))


def _wasserstein_tables(
    hists: dict[str, Any], processes: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """W1 per quantity; a quantity W1 cannot be computed for (no entries in a variant, zero
    nominal spread for the relative W1) gets NaN in its column, with the reason as a warning."""
    from rs3l_coffea.evaluation import EvaluationInputError, EvaluationWarning, wasserstein_table

    absolute: dict[str, Any] = {}
    relative: dict[str, Any] = {}
    present = {str(d) for d in hists["embedding"].axes["dataset"]}
    for key, select in [("all", sum), *[(p, p) for p in processes if p in present]]:
        variants = [str(v) for v in hists["n2"].axes["variant"] if str(v) != NOMINAL]
        absolute[key] = {v: {} for v in variants}
        relative[key] = {v: {} for v in variants}
        for quantity, histogram in _one_dimensional(hists, select).items():
            for table, is_relative in ((absolute[key], False), (relative[key], True)):
                try:
                    one = wasserstein_table({quantity: histogram}, relative=is_relative)
                except EvaluationInputError as error:
                    warnings.warn(f"{key}: {error}", EvaluationWarning, stacklevel=2)
                    one = {v: {quantity: float("nan")} for v in variants}
                for variant in variants:
                    table[variant][quantity] = one[variant][quantity]
    return absolute, relative


def _plots(
    out: Path,
    variant_hists: dict[str, Any],
    hist_sets: dict[str, dict[str, Any]],
    processes: Sequence[str],
    head_names: Sequence[str],
) -> list[Path]:
    import hist as hist_module

    from rs3l_coffea.evaluation import plot_variant_ratios

    written: list[Path] = []
    present = [p for p in processes if p in {str(d) for d in variant_hists["n2"].axes["dataset"]}]
    for suffix, select in [("", sum), *[(f"_{p}", p) for p in present]]:
        quantities = _variant_hists(variant_hists, select)
        panels = {}
        for dim in (0, 1):
            panels[f"embedding direction {dim}"] = quantities["embedding"][
                {"dim": dim, "value": hist_module.rebin(PLOT_REBIN["embedding"])}
            ]
        if head_names:
            panels[f"score ({head_names[0]})"] = quantities["score"][
                {"head": head_names[0], "value": hist_module.rebin(PLOT_REBIN["score"])}
            ]
        panels["$N_2$"] = quantities["N2"][{"value": hist_module.rebin(PLOT_REBIN["n2"])}]
        written.extend(plot_variant_ratios(panels, out / f"variant_ratios{suffix}"))
    if head_names:
        written.append(_score_plot(out / "score_distributions.png", hist_sets, head_names[0]))
    return written


def _score_plot(path: Path, hist_sets: dict[str, dict[str, Any]], head: str) -> Path:
    import mplhep
    from matplotlib.figure import Figure

    from rs3l_coffea.evaluation import save_figure

    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for set_name, hists in hist_sets.items():
        score = hists["score"]
        for dataset in score.axes["dataset"]:
            selection: dict[str, Any] = {"dataset": dataset, "head": head}
            if "variant" in score.axes.name:
                selection["variant"] = NOMINAL
            h = score[selection]
            total = h.sum()
            if total <= 0:
                continue
            label = f"{dataset} (nominal)" if set_name == "variants" else f"{dataset} ({set_name})"
            mplhep.histplot(h.values() / total, h.axes[0].edges, ax=axes, label=label)
    axes.set_xlabel(f"RS3L head score '{head}'")
    axes.set_ylabel("fraction of selected jets")
    axes.legend(fontsize="small")
    return save_figure(figure, path, formats=("png",))[0]
