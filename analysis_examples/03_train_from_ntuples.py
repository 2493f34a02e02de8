"""Train your own RS3L model: generate -> ``rs3l ntuple`` -> pretrain -> fine-tune -> use it.

What an analyst does with this
------------------------------
The shipped default model was pretrained on a generic ZH(bb) / Z+jet sample. To adapt RS3L to
your signal, your detector parametrisation or your own choice of re-simulated variants, you run
the same four steps this script runs (each printed as the equivalent shell command, so you can
copy them into a batch job):

1. ``rs3l generate`` -- hard processes once, showered in several variants (Pythia8 + the
   parametric detector), Delphes-layout ROOT files;
2. ``rs3l ntuple`` -- pair every selected nominal jet with its re-simulated counterparts
   (same hard event, Delta R < 0.4) and write sharded ROOT training ntuples with truth labels;
3. ``rs3l train pretrain`` -- contrastive (NT-Xent) pretraining on the nominal/variant pairs,
   no labels used;
4. ``rs3l train finetune --mode fixed`` -- a classifier head (H -> bb vs the rest) on the
   frozen backbone (``floating`` also trains the backbone, ``lora`` adds low-rank adapters).

Finally the fine-tuned model scores the nominal jets of the bundled sample through
``RS3LTagger`` exactly as in a coffea processor (``01_rs3l_scores_in_coffea.py``), and the
script prints the ROC AUC of H -> bb against Z+jet (an independent sample: the bundle).

Run::

    python analysis_examples/03_train_from_ntuples.py --quick --out out03   # CI check
    python analysis_examples/03_train_from_ntuples.py --out out03           # the real run

``--quick`` took 37 s wall on this project's 2-core machine (2026-11-26, ``OMP_NUM_THREADS=1``,
``/usr/bin/time``). The real run (20,000 hard events per process, the paper-size DGCNN, 20
epochs each) was not timed end to end here; it runs for hours on CPU, so its training commands
print progress per epoch (no ``--quiet``).

``--quick``: 60 hard events per process, two variants, a tiny DGCNN, one epoch each: it checks
that the chain runs; its AUC means nothing. Outputs in ``--out``: ``generated/``, ``ntuple/``,
``pretrain/`` and ``finetune/`` (each with ``model.safetensors`` + ``model.json``, checkpoints,
``metrics.csv``), ``summary.json``.

Scaling up
----------
* More events: ``--events 50000`` or more per process, ``rs3l generate --workers N`` or
  ``--scheduler`` (dask) to spread chunks; the generator is reproducible per chunk.
* The paper-size DGCNN (the default model config) and more epochs: ``--epochs 30``; a GPU
  (``-s device=cuda``) or several (``torchrun ... rs3l train pretrain``, DDP).
* Other variants (``vincia``, ``rehadronize``) in ``--variants``; the study driver
  ``rs3l report`` runs the whole comparison (RS3L vs supervised, W1 tables, plots).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

TINY_MODEL = "model={backbone: {width: 16, k: 8, conv_layers: 1, output_hidden: [16], output_dim: 8}}"


def rs3l(*args: str) -> None:
    """Run one ``rs3l`` CLI command in this process (printed as its shell equivalent)."""
    from rs3l_coffea.cli import app

    print("$ rs3l " + " ".join(shlex.quote(a) for a in args), flush=True)
    # standalone_mode=False: errors propagate as exceptions instead of exiting the script.
    app(list(args), standalone_mode=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("example03-output"))
    parser.add_argument("--quick", action="store_true", help="tiny sample, tiny model, 1 epoch")
    parser.add_argument("--events", type=int, help="hard events per process")
    parser.add_argument("--epochs", type=int, help="epochs of pretraining and of fine-tuning")
    parser.add_argument("--variants", help="re-simulated variants used as positive partners")
    args = parser.parse_args(argv)

    events = args.events or (60 if args.quick else 20_000)
    epochs = args.epochs or (1 if args.quick else 20)
    variants = args.variants or ("seed" if args.quick else "seed,fsr_up,fsr_down")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    generated, ntuple = out / "generated", out / "ntuple"

    for process in ("zh_bb", "zj"):
        rs3l("generate", "--process", process, "--events", str(events),
             "--variants", f"nominal,{variants}", "--seed", "7" if process == "zh_bb" else "8",
             "--out", str(generated), "--chunk-size", str(min(events, 5000)), "--eta-max", "1.5")
    rs3l("ntuple", "--in", str(generated / "*.root"), "--out", str(ntuple),
         "--shard-size", "50" if args.quick else "10000")

    common = ["--data", str(ntuple), "--epochs", str(epochs)]
    if args.quick:  # seconds of training: no progress needed; a full run shows it per epoch
        common += ["--quiet", "--batch-size", "8", "-s", "threads=1", "-s", TINY_MODEL]
    rs3l("train", "pretrain", "--out", str(out / "pretrain"), "--augmentations", variants, *common)
    rs3l("train", "finetune", "--mode", "fixed", "--backbone", str(out / "pretrain" / "model.safetensors"),
         "--out", str(out / "finetune"), *common)

    auc, n_signal, n_background = score_bundled_sample(out / "finetune" / "model")
    summary = {"events_per_process": events, "epochs": epochs, "variants": variants,
               "model": str(out / "finetune" / "model.safetensors"),
               "bundled_auc_hbb_vs_zj": auc, "n_signal": n_signal, "n_background": n_background}
    from rs3l_coffea.atomic import atomic_open

    with atomic_open(out / "summary.json", "w") as handle:
        json.dump(summary, handle, indent=1)
    print(f"fine-tuned model: {summary['model']}")
    print(f"ROC AUC H->bb vs Z+jet on the bundled sample: {auc:.3f} "
          f"({n_signal} signal, {n_background} background jets{'; --quick: meaningless' if args.quick else ''})")
    return 0


def score_bundled_sample(model: Path) -> tuple[float, int, int]:
    """Score the selected nominal jets of the bundle; AUC of H->bb (zh_bb) vs jets of zj."""
    import awkward as ak
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from rs3l_coffea.features import JetLabel, JetSelection, truth_labels
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.io import gen_particles_from_events, jets_from_events, open_events
    from rs3l_coffea.samples import bundled_file

    tagger = RS3LTagger.load(model, threads=1)
    scores, is_signal = [], []
    for process in ("zh_bb", "zj"):
        events, source, origin = open_events(bundled_file(process, "nominal"))
        jets, constituents = jets_from_events(events, source=source, origin=origin)
        keep = np.asarray(ak.flatten(JetSelection.generated().mask(jets, constituents)))
        labels = truth_labels(jets, gen_particles_from_events(events, source))[keep]
        score = np.asarray(ak.flatten(tagger(jets, constituents).score), dtype=float)[keep]
        # Signal: truth-matched H->bb jets of ZH; background: every selected Z+jet jet.
        wanted = labels == JetLabel.H_BB if process == "zh_bb" else np.ones(len(labels), bool)
        scores.append(score[wanted])
        is_signal.append(np.full(int(wanted.sum()), process == "zh_bb"))
    y, s = np.concatenate(is_signal), np.concatenate(scores)
    return float(roc_auc_score(y, s)), int(y.sum()), int((~y).sum())


if __name__ == "__main__":
    sys.exit(main())
