"""Systematic-variation histograms from re-simulated samples, with Wasserstein tables.

What an analyst does with this
------------------------------
RS3L's promise is a jet representation that moves little when only the simulation changes
(shower seed, FSR scale, shower model). This script measures that on re-simulated samples and
produces what a fit needs:

1. :class:`rs3l_coffea.processors.VariantProcessor` over a fileset of re-simulated variants
   (each event's variant from ``Event.VariantCode``) -> histograms with ``dataset`` (process) and
   ``variant`` axes: RS3L embedding directions, head score, N2, soft-drop mass, pT;
2. :func:`rs3l_coffea.evaluation.wasserstein_table` -> W1(nominal, variant) per embedding
   direction component, score and N2, absolute and divided by the nominal spread, per process
   (``wasserstein.md``, ``wasserstein.json``): a smaller relative W1 means a quantity more
   robust to that simulation change;
3. :func:`rs3l_coffea.evaluation.plot_variant_ratios` -> normalised distributions and ratios
   to nominal (``variant_ratios_<process>.png``);
4. ``templates.root`` -> shape templates for a binned likelihood fit, written with uproot in
   the layout combine's ``shapes * * templates.root $CHANNEL/$PROCESS $CHANNEL/$PROCESS_$SYSTEMATIC``
   reads (pyhf via uproot works the same way): one folder per observable (``score``, ``msd``),
   in it ``<process>`` (nominal, no suffix) and ``<process>_<systematic>Up`` / ``Down``:

   * ``fsr``: ``fsr_up`` -> ``fsrUp``, ``fsr_down`` -> ``fsrDown`` (one two-sided systematic);
   * ``shower`` (``vincia``), ``showerhad`` (``vincia_althad``), ``hadronization``
     (``rehadronize``): one-sided, an alternative model rather than a +-1 sigma pair, so
     ``Up`` is the alternative and ``Down`` the nominal (the nuisance moves toward the
     alternative only; mirror it yourself if your analysis symmetrises);
   * ``seed`` is not a template: it differs from nominal by the random seed only and is the
     statistical floor of the W1 tables.

   Every TH1 has a title (process, variant, observable) and the observable as x-axis title.

Run::

    python analysis_examples/04_systematic_variations.py --quick --out out04   # CI, tiny model
    python analysis_examples/04_systematic_variations.py --out out04           # default model

``--quick``: tiny random model, the ``zh_bb`` process and four variants of the bundled sample.
The bundle has only ~20 selected jets per process and variant: its W1 values are dominated by
statistical fluctuations (compare ``seed``, which differs from nominal by the random seed only).

Scaling up
----------
Generate real statistics with ``rs3l generate --process zh_bb --events 100000 --variants
nominal,seed,fsr_up,fsr_down,vincia --workers N`` (or ``--scheduler``), write a fileset
``{process: {"files": {path: "Delphes"}}}`` over all variant files and pass it with
``--fileset``; for many files use ``--executor dask`` (see ``02_dask_distributed.py``). The
``seed`` row is the statistical floor: a variant's W1 is significant only well above it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

QUANTITIES = ("embedding", "score", "n2")


def tiny_random_model(path: Path) -> Path:
    """A tiny untrained DGCNN with a ``score`` head (for --quick: fast, physically meaningless)."""
    import torch

    from rs3l_coffea.nn import DGCNNConfig, HeadConfig, ModelConfig, build_model, save_model

    torch.manual_seed(0)
    config = ModelConfig(
        backbone=DGCNNConfig(width=16, conv_layers=1, k=8, output_hidden=(16,)),
        heads=(HeadConfig("score"),),
    )
    save_model(path, build_model(config).eval())
    return path


def w1_tables(hists: dict[str, Any], process: str) -> tuple[dict, dict]:
    """Absolute and relative W1 to nominal for one process (embedding, score, N2)."""
    from rs3l_coffea.evaluation import wasserstein_table

    selected = {
        name: hists[name][{"dataset": process}] for name in QUANTITIES if name in hists
    }
    return wasserstein_table(selected), wasserstein_table(selected, relative=True)


def markdown(table: dict[str, dict[str, float]], title: str) -> str:
    """A W1 table as markdown: one row per variant, one column per quantity."""
    quantities = list(next(iter(table.values())))
    header = "| variant | " + " | ".join(quantities) + " |"
    lines = [f"### {title}", "", header, "|---" * (len(quantities) + 1) + "|"]
    for variant, row in table.items():
        lines.append(f"| {variant} | " + " | ".join(f"{row[q]:.4f}" for q in quantities) + " |")
    return "\n".join(lines) + "\n"


# variant -> (combine systematic name, direction); one-sided ones get Down = nominal.
SYSTEMATICS: dict[str, tuple[str, str]] = {
    "fsr_up": ("fsr", "Up"),
    "fsr_down": ("fsr", "Down"),
    "vincia": ("shower", "Up"),
    "vincia_althad": ("showerhad", "Up"),
    "rehadronize": ("hadronization", "Up"),
}
VARIANT_TITLES = {
    "nominal": "nominal", "fsr_up": "FSR scale up", "fsr_down": "FSR scale down",
    "vincia": "Vincia shower", "vincia_althad": "Vincia shower + alternative hadronization",
    "rehadronize": "new hadronization",
}
OBSERVABLES = {"score": ({"head": 0}, "RS3L score"), "msd": ({}, "soft-drop mass [GeV]")}


def template_names(process: str, variants: list[str]) -> dict[str, str]:
    """``{template name: variant}`` in combine's naming for one process (see module docstring)."""
    names = {process: "nominal"} if "nominal" in variants else {}
    directions: dict[str, dict[str, str]] = {}
    for variant in variants:
        if variant in SYSTEMATICS:
            systematic, direction = SYSTEMATICS[variant]
            directions.setdefault(systematic, {})[direction] = variant
    for systematic, given in sorted(directions.items()):
        for direction in ("Up", "Down"):
            names[f"{process}_{systematic}{direction}"] = given.get(direction, "nominal")
    return names


def write_templates(path: Path, hists: dict[str, Any]) -> list[str]:
    """Write ``templates.root`` (``<observable>/<process>[_<systematic>Up|Down]``); return the
    names written."""
    import uproot

    from rs3l_coffea.atomic import atomic_path

    written = []
    with atomic_path(path) as tmp, uproot.recreate(tmp) as handle:
        for observable, (selection, label) in OBSERVABLES.items():
            if observable not in hists:
                continue
            h = hists[observable]
            variants = list(h.axes["variant"])
            for process in h.axes["dataset"]:
                for name, variant in template_names(process, variants).items():
                    one = h[{"dataset": process, "variant": variant, **selection}]
                    one.axes[0].label = label
                    one.name = name
                    one.title = f"{process}, {VARIANT_TITLES.get(variant, variant)}: {label}"
                    handle[f"{observable}/{name}"] = one
                    written.append(f"{observable}/{name}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("example04-output"))
    parser.add_argument("--model", type=Path, help="RS3L model (default: the shipped model)")
    parser.add_argument("--fileset", type=Path, help="fileset of re-simulated files (default: bundle)")
    parser.add_argument("--executor", choices=("iterative", "futures", "dask"), default="iterative")
    parser.add_argument("--quick", action="store_true", help="tiny random model, small input")
    args = parser.parse_args(argv)

    import hist as hist_module
    from uhi.io.json import default as uhi_default

    from rs3l_coffea.atomic import atomic_open
    from rs3l_coffea.coffea_processing.runner import run_fileset, save_output
    from rs3l_coffea.evaluation import plot_variant_ratios
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.processors import VariantProcessor
    from rs3l_coffea.samples import bundled_fileset

    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        tagger = RS3LTagger.load(args.model)
    elif args.quick:
        tagger = RS3LTagger.load(tiny_random_model(args.out / "tiny-random-model"))
    else:
        tagger = RS3LTagger.default()
    if args.fileset is not None:
        fileset: Any = args.fileset
    elif args.quick:
        fileset = bundled_fileset(processes=("zh_bb",), variants=("nominal", "fsr_up", "fsr_down", "vincia"))
    else:
        fileset = bundled_fileset()

    output = run_fileset(fileset, VariantProcessor(tagger), executor=args.executor)
    hists = output["hists"]
    save_output(hists, args.out / "hists.coffea")
    with atomic_open(args.out / "hists.json", "w") as handle:
        json.dump(hists, handle, default=uhi_default)
    write_templates(args.out / "templates.root", hists)

    tables: dict[str, Any] = {}
    report = ["# W1(nominal, variant) on RS3L embedding directions, score and N2", ""]
    for process in hists["n2"].axes["dataset"]:
        absolute, relative = w1_tables(hists, process)
        tables[process] = {"absolute": absolute, "relative_to_nominal_spread": relative}
        report.append(markdown(relative, f"{process}: W1 / sigma(nominal)"))
        report.append(markdown(absolute, f"{process}: W1 (units of each quantity)"))
        # Ratio plots: two embedding directions, the score and N2, coarsely rebinned.
        panels = {
            f"embedding direction {d}": hists["embedding"][
                {"dataset": process, "dim": d, "value": hist_module.rebin(10)}
            ]
            for d in (0, 1)
        }
        if "score" in hists:
            panels["RS3L score"] = hists["score"][
                {"dataset": process, "head": 0, "value": hist_module.rebin(5)}
            ]
        panels["$N_2$"] = hists["n2"][{"dataset": process, "value": hist_module.rebin(5)}]
        plot_variant_ratios(panels, args.out / f"variant_ratios_{process}")
    with atomic_open(args.out / "wasserstein.json", "w") as handle:
        json.dump(tables, handle, indent=1)
    with atomic_open(args.out / "wasserstein.md", "w") as handle:
        handle.write("\n".join(report))
    print("\n".join(report))
    for dataset, counts in sorted(output["cutflow"].items()):
        print(f"{dataset}: " + ", ".join(f"{k}={int(v)}" for k, v in counts.items()))
    print(f"wrote hists.json, hists.coffea, templates.root, wasserstein.md/json, plots to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
