"""RS3L scores inside your own coffea processor.

What an analyst does with this
------------------------------
You already have a coffea ``ProcessorABC``. To use RS3L you add three lines to ``process``:

1. ``jets, constituents = jets_from_events(events)`` -- the fat jets and their particle
   candidates in RS3L's uniform layout (PFNano/NanoAOD: the stored ``FatJet`` collection and its
   ``FatJetPFCands``; Delphes: anti-kT R=0.8 reclustering of the EFlow candidates);
2. ``rs3l = tagger(jets, constituents)`` -- a record per jet with ``embedding`` (the RS3L
   representation) and one field per head score (the default model has ``score``);
3. attach it, e.g. ``events["FatJet", "rs3l"] = rs3l`` for NanoAOD-like files, and cut on
   ``events.FatJet.rs3l.score`` like on any other jet column.

This script does exactly that in :class:`MyAnalysis`: it cuts on the RS3L score and fills a
``hist`` of the soft-drop mass for jets passing and failing the cut, next to the score itself.
It runs over the bundled re-simulated sample (Delphes layout: ZH(bb) and Z+jet) and, when it is
cached, coffea's ``pfnano.root`` test file (there the column goes to ``events.FatJet``).

Run::

    python analysis_examples/01_rs3l_scores_in_coffea.py --out out01            # default model
    python analysis_examples/01_rs3l_scores_in_coffea.py --quick --out out01    # CI: tiny model

``--quick`` uses a tiny randomly initialised model (so the scores mean nothing) and only the
nominal variant. Outputs: ``hists.json`` (UHI JSON; read with ``uhi.io.json.object_hook`` and
``hist.serialization.from_uhi``), ``hists.coffea`` (``coffea.util.save``) and ``msd.png``.

Scaling up
----------
Point ``fileset`` at your own files (``{dataset: {"files": {path: "Events"}}}``) and replace
``processor.IterativeExecutor`` with ``processor.FuturesExecutor(workers=N)`` or
``processor.DaskExecutor(client=...)`` (see ``02_dask_distributed.py``): the tagger pickles only
its model path, and every worker process loads the model once. ``RS3LTagger.default(device=
"auto")`` uses a GPU where the worker has one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import hist
from coffea import processor

from rs3l_coffea.inference.tagger import RS3LTagger
from rs3l_coffea.io import FlatDelphesSchema, jets_from_events

SCORE_CUT = 0.5


class MyAnalysis(processor.ProcessorABC):
    """A user processor: RS3L score as a jet column, a cut on it, a histogram."""

    def __init__(self, tagger: RS3LTagger, score_cut: float = SCORE_CUT) -> None:
        self.tagger = tagger  # pickles as (model path, settings): safe to ship to workers
        self.score_cut = score_cut

    def process(self, events: Any) -> dict[str, Any]:
        dataset = events.metadata["dataset"]
        jets, constituents = jets_from_events(events, origin=events.metadata["filename"])
        rs3l = self.tagger(jets, constituents)  # None for a jet without constituents
        if "FatJet" in events.fields:
            # NanoAOD/PFNano: jets_from_events returned events.FatJet itself (same event x jet
            # structure), so the column sits next to the usual FatJet variables.
            events["FatJet", "rs3l"] = rs3l
            fatjets = events.FatJet
            msd = fatjets.msoftdrop
        else:
            # Delphes: reclustered jets; keep them as our own jet collection.
            fatjets = ak.with_field(jets, rs3l, "rs3l")
            from rs3l_coffea.features import jet_observables

            msd = ak.unflatten(jet_observables(jets, constituents)["msd"], ak.num(jets))
        fatjets = ak.with_field(fatjets, msd, "msd")
        tagged = fatjets[~ak.is_none(fatjets.rs3l, axis=1) & (fatjets.pt > 300)]
        score = tagged.rs3l.score
        passing = tagged[score > self.score_cut]

        output = hist.Hist.new.StrCat([], growth=True, name="dataset").StrCat(
            ["pass", "fail"], name="rs3l"
        ).Reg(30, 0.0, 300.0, name="msd", label="soft-drop mass [GeV]").Double()
        output.fill(dataset=dataset, rs3l="pass", msd=ak.flatten(passing.msd))
        output.fill(dataset=dataset, rs3l="fail", msd=ak.flatten(tagged[score <= self.score_cut].msd))
        scores = hist.Hist.new.StrCat([], growth=True, name="dataset").Reg(
            20, 0.0, 1.0, name="score", label="RS3L score"
        ).Double()
        scores.fill(dataset=dataset, score=ak.flatten(score))
        return {
            "msd": output,
            "score": scores,
            "cutflow": {dataset: {"events": len(events), "jets_pt300": int(ak.sum(ak.num(tagged))),
                                  "pass_score": int(ak.sum(ak.num(passing)))}},
        }

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("example01-output"))
    parser.add_argument("--model", type=Path, help="RS3L model (default: the shipped model)")
    parser.add_argument("--quick", action="store_true", help="tiny random model, nominal only")
    args = parser.parse_args(argv)

    from coffea.nanoevents import PFNanoAODSchema
    from coffea.util import save
    from uhi.io.json import default as uhi_default

    from rs3l_coffea.atomic import atomic_open, atomic_path
    from rs3l_coffea.samples import bundled_fileset
    from rs3l_coffea.testing import cache_dir

    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        tagger = RS3LTagger.load(args.model)
    elif args.quick:
        tagger = RS3LTagger.load(tiny_random_model(args.out / "tiny-random-model"))
    else:
        tagger = RS3LTagger.default()

    variants = ("nominal",) if args.quick else ("nominal", "seed", "fsr_up", "fsr_down", "vincia")
    # One Runner per schema: Delphes-layout files and NanoAOD-layout files.
    jobs = [(bundled_fileset(variants=variants), FlatDelphesSchema)]
    pfnano = cache_dir() / "pfnano.root"
    if pfnano.is_file():  # coffea's test file, cached by `rs3l demo --fetch-samples` or the tests
        jobs.append(({"pfnano": {"files": {str(pfnano): "Events"}}}, PFNanoAODSchema))
    outputs = []
    for fileset, schema in jobs:
        runner = processor.Runner(
            executor=processor.IterativeExecutor(), schema=schema, chunksize=50_000
        )
        outputs.append(runner(fileset, processor_instance=MyAnalysis(tagger)))
    output = processor.accumulate(outputs)

    with atomic_path(args.out / "hists.coffea") as tmp:
        save(output, str(tmp))
    with atomic_open(args.out / "hists.json", "w") as handle:
        json.dump({"msd": output["msd"], "score": output["score"]}, handle, default=uhi_default)
    plot(output["msd"], args.out / "msd.png")
    for dataset, counts in sorted(output["cutflow"].items()):
        print(f"{dataset}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"wrote {args.out / 'hists.json'}, {args.out / 'hists.coffea'}, {args.out / 'msd.png'}")
    return 0


def plot(msd: hist.Hist, path: Path) -> None:
    """Soft-drop mass of jets passing / failing the RS3L score cut, per dataset."""
    import mplhep
    from matplotlib.figure import Figure

    from rs3l_coffea.atomic import atomic_path

    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for dataset in msd.axes["dataset"]:
        for category, style in (("pass", "-"), ("fail", ":")):
            h = msd[{"dataset": dataset, "rs3l": category}]
            if h.sum() > 0:
                mplhep.histplot(h, ax=axes, linestyle=style, label=f"{dataset}, score {category}")
    axes.set_ylabel("jets")
    axes.legend(fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
