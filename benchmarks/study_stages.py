"""Per-event and per-step cost of a study's stages, in CPU seconds, to size a study before running it.

    PYTHONPATH=. python benchmarks/study_stages.py --config studies/at_scale.yaml --events 400

1. One chunk of ``--events`` hard events per process of the config, on one worker: generation
   (Pythia + detector, every variant of the process) and chunk ntupling, as CPU seconds per event
   (``time.process_time``: the cores are shared, wall time would measure the neighbours); the
   selected nominal jets per event by truth class (the yields that size the sample) and the bytes
   per event. Imports are warmed first (a one-off cost per process, not per event).
2. Training steps of the config's model on those ntuples, with the config's batch sizes:
   NT-Xent pretraining and each classifier model (``fixed``, ``floating``, ``supervised``),
   timed per optimizer step through the trainer's ``on_step`` hook (median of the steps after
   ``--warmup``), as wall and CPU seconds, plus each run's fixed cost (start-up, validation).
   Data-split fractions are overridden here so that the few hundred jets all train; the
   per-step cost does not depend on the split.
Prints the load average before and after, the rates, and a JSON line with every number (the
input of the budget in docs/at_scale.md). A script, not a test: the numbers depend on the machine
and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rs3l_coffea.generation import GenerationConfig, generate_chunk
from rs3l_coffea.generation.run import ChunkTiming
from rs3l_coffea.study import load_study_config
from rs3l_coffea.study.config import QCD_LABELS
from rs3l_coffea.study.layout import RunKey, StudyLayout
from rs3l_coffea.study.samples import ntuple_chunk
from rs3l_coffea.study.splits import label_codes, ntuple_shards, read_ntuple
from rs3l_coffea.study.trainings import classifier_config, pretrain_config


def warm_imports() -> None:
    """Import what ntupling imports lazily (coffea, uproot, fastjet, vector: ~1.3 CPU-s once)."""
    import coffea.nanoevents  # noqa: F401
    import fastjet  # noqa: F401
    import uproot  # noqa: F401
    import vector  # noqa: F401

    import rs3l_coffea.features.pipeline
    import rs3l_coffea.io  # noqa: F401


def time_generation(config, work: Path, n_events: int) -> dict[str, dict[str, float]]:
    gen, rates = config.generation, {}
    warm_imports()
    qcd = label_codes(QCD_LABELS)
    signal = dict(zip(("H_BB", "W_QQ"), label_codes(["H_BB", "W_QQ"]), strict=True))
    for process in gen.events:
        variants = tuple(gen.variants if process in ("zh_bb", "zj") else gen.ood_variants)
        gc = GenerationConfig(process=process, n_events=n_events, out_dir=work / "gen" / process, variants=variants,
                              seed=gen.seed + 1000, chunk_size=n_events, eta_max=gen.eta_max)
        timing = ChunkTiming()
        start = time.process_time()
        paths = generate_chunk(gc, 0, timing)
        generated = time.process_time()
        root_bytes = sum(p.stat().st_size for p in paths)
        chunk_dir = work / "ntuple" / process / "chunk_00000"
        ntuple_chunk(paths, chunk_dir, config.split.selection, config.split.shard_size, keep_root=False)
        done = time.process_time()
        rows = read_ntuple(chunk_dir, ["pair_rank", "jettype"])
        nominal = rows["pair_rank"] == 0
        rows_per_jet = len(nominal) / max(1, int(nominal.sum()))
        rates[process] = {
            "variants": len(variants),
            "generate_cpu_s": (generated - start) / n_events,
            "pythia_cpu_s": timing.pythia / n_events,
            "ntuple_cpu_s": (done - generated) / n_events,
            "root_bytes_per_variant": root_bytes / n_events / len(variants),
            "ntuple_bytes": sum(p.stat().st_size for p in ntuple_shards(chunk_dir)) / n_events,
            "rows_per_jet": rows_per_jet,
            "qcd_jets": float((nominal & np.isin(rows["jettype"], qcd)).sum()) / n_events,
            **{f"{name.lower()}_jets": float((nominal & (rows["jettype"] == code)).sum()) / n_events
               for name, code in signal.items()},
        }
        r = rates[process]
        print(f"{process}: {n_events} events x {len(variants)} variants: generation {r['generate_cpu_s'] * 1e3:.1f} "
              f"CPU-ms/event (Pythia {r['pythia_cpu_s'] * 1e3:.1f}), ntupling {r['ntuple_cpu_s'] * 1e3:.1f} "
              f"CPU-ms/event; per event {r['qcd_jets']:.3f} QCD, {r['h_bb_jets']:.3f} H->bb, {r['w_qq_jets']:.3f} W->qq "
              f"nominal jets; ROOT {r['root_bytes_per_variant'] / 1e3:.1f} KB/event/variant, ntuple "
              f"{r['ntuple_bytes'] / 1e3:.1f} KB/event", flush=True)
    return rates


def _link_shards(target: Path, shards: list[Path]) -> None:
    target.mkdir(parents=True)
    for i, shard in enumerate(shards):
        (target / f"shard_{i:05d}.root").symlink_to(shard)


def _timed_run(train_config, warmup: int) -> dict[str, float]:
    """Train once; per-step wall and CPU seconds (median after ``warmup`` steps) and the fixed cost."""
    from rs3l_coffea.training.trainer import train

    stamps: list[tuple[float, float]] = []
    start = (time.perf_counter(), time.process_time())
    train(train_config, on_step=lambda _step, _loss: stamps.append((time.perf_counter(), time.process_time())))
    end = (time.perf_counter(), time.process_time())
    walls = np.diff([start[0]] + [s[0] for s in stamps])
    cpus = np.diff([start[1]] + [s[1] for s in stamps])
    steady = slice(warmup, None) if len(stamps) > warmup + 2 else slice(1, None)
    step_wall, step_cpu = statistics.median(walls[steady]), statistics.median(cpus[steady])
    return {"steps": len(stamps), "step_wall_s": step_wall, "step_cpu_s": step_cpu,
            "batch": train_config.data.batch_size,
            "fixed_wall_s": (end[0] - start[0]) - step_wall * len(stamps)}


def time_evaluation(config, work: Path, model: Path) -> dict[str, float]:
    """CPU seconds per jet of the evaluation's two per-jet costs: a model's scores (the inference
    engine, as ``score:*`` and ``embed:*`` run it) and N2 from the stored features (``n2``)."""
    from rs3l_coffea.study.scoring import n2_from_features, run_model

    rows = read_ntuple(work / "ntuple", ["features", "mask", "partner_features", "partner_mask"])
    x = np.concatenate([rows["features"], rows["partner_features"]])
    mask = np.concatenate([rows["mask"], rows["partner_mask"]])
    x, mask = x[mask.any(axis=1)], mask[mask.any(axis=1)]
    run_model(model, x[:64], mask[:64], config)  # load and warm once
    start = time.process_time()
    run_model(model, x, mask, config)
    scored = time.process_time()
    n2_from_features(x, mask)
    done = time.process_time()
    return {"jets": len(x), "score_cpu_s": (scored - start) / len(x), "n2_cpu_s": (done - scored) / len(x)}


def time_training(config, work: Path, epochs: int, warmup: int) -> dict[str, dict[str, float]]:
    layout = StudyLayout(work)
    in_domain = [s for s in ntuple_shards(work / "ntuple") if s.parts[-3] in ("zh_bb", "zj")]
    _link_shards(layout.pretrain_data(), in_domain)
    out: dict[str, dict[str, float]] = {}
    study = config.model_copy(update={"device": "cpu"}, deep=True)
    study.split.pretrain_fraction, study.split.val_fraction, study.split.test_fraction = 0.9, 0.05, 0.01
    study.pretrain.epochs, study.pretrain.max_steps_per_epoch = epochs, None
    tc = pretrain_config(study, "resim", layout)
    out["pretrain"] = _timed_run(tc, warmup)
    backbone = Path(tc.out_dir) / "model.safetensors"
    study.split.pretrain_fraction, study.split.val_fraction, study.split.test_fraction = 0.01, 0.05, 0.01
    study.classifier.epochs, study.classifier.min_steps = epochs, 0
    size = 10**9  # only names the directory: the linked shards are the labelled set
    _link_shards(layout.labelled_data("hbb", size), in_domain)
    for model in study.classifier.models:
        key = RunKey("hbb", model, size, study.classifier.seeds[0])
        tc = classifier_config(study, key, layout, backbone if model != "supervised" else None)
        out[model] = _timed_run(tc, warmup)
    out["evaluation"] = time_evaluation(study, work, Path(tc.out_dir) / "model.safetensors")
    for name, r in out.items():
        if name == "evaluation":
            print(f"evaluation: scoring {r['score_cpu_s'] * 1e3:.3f} CPU-ms/jet, N2 from features "
                  f"{r['n2_cpu_s'] * 1e3:.3f} CPU-ms/jet ({r['jets']} jets)", flush=True)
            continue
        print(f"{name}: {r['step_wall_s']:.3f} s wall / {r['step_cpu_s']:.3f} CPU-s per step of {r['batch']} "
              f"{'pairs' if name == 'pretrain' else 'jets'} ({r['steps']} steps; fixed cost {r['fixed_wall_s']:.1f} s "
              f"wall per run)", flush=True)
    return out


def budget(config, rates: dict, training: dict) -> list[tuple[str, str, float, float]]:
    """Stage-by-stage estimate for ``config`` from the measured rates: (stage, what, CPU-s, wall-s).

    Expected jets are the measured yields times the configured events, split as the study splits
    them (pretraining pool ``pretrain_fraction``, its trainer using all but ``val_fraction`` of it;
    test ``test_fraction`` of the fine-tuning pool). Generation wall = CPU / 2 (two workers and the
    ntupling main process share two cores); training and evaluation wall = their one-thread CPU
    time (``threads: 2`` can only shorten it on a quiet machine).
    """
    from rs3l_coffea.study.trainings import classifier_epochs, pretrain_kinds

    gen, sp, cls, pre = config.generation, config.split, config.classifier, config.pretrain
    n = gen.events
    jets = {kind: sum(n[p] * rates[p][f"{kind}_jets"] for p in n) for kind in ("qcd", "h_bb", "w_qq")}
    in_domain = [p for p in n if p in ("zh_bb", "zj")]
    fine, train_frac = 1 - sp.pretrain_fraction, 1 - sp.val_fraction - sp.test_fraction
    pre_jets = sp.pretrain_fraction * sum(n[p] * (rates[p]["qcd_jets"] + rates[p]["h_bb_jets"]) for p in in_domain)
    pre_train = pre_jets * (1 - sp.val_fraction)
    rows_per_jet = sum(n[p] * rates[p]["rows_per_jet"] for p in in_domain) / sum(n[p] for p in in_domain)
    partner_rows = pre_train * rows_per_jet
    test = {k: v * fine * sp.test_fraction for k, v in jets.items()}
    out: list[tuple[str, str, float, float]] = []
    for p in n:
        cpu = n[p] * (rates[p]["generate_cpu_s"] + rates[p]["ntuple_cpu_s"])
        out.append((f"generate:{p}", f"{n[p]:,} hard events x {rates[p]['variants']} variants", cpu, cpu / 2))
    print(f"expected nominal jets: {', '.join(f'{k} {v:,.0f}' for k, v in jets.items())}; pretraining pool "
          f"{pre_jets:,.0f} (trained on {pre_train:,.0f}, ~{partner_rows:,.0f} pairs); test QCD {test['qcd']:,.0f}, "
          f"H->bb {test['h_bb']:,.0f}, W->qq {test['w_qq']:,.0f}; labelled training pool H->bb "
          f"{jets['h_bb'] * fine * train_frac:,.0f}, W->qq {jets['w_qq'] * fine * train_frac:,.0f}, "
          f"QCD {jets['qcd'] * fine * train_frac:,.0f} (largest labelled set needs {max(sp.labelled_sizes) // 2:,} per class)")
    steps_per_epoch = partner_rows / pre.batch_size
    if pre.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, pre.max_steps_per_epoch)
    t, ev = training["pretrain"], training["evaluation"]
    # Validation after every epoch: a forward pass over the validation jets (scoring rate).
    pre_val_jets = 2 * pre_jets * sp.val_fraction * rows_per_jet
    for kind in pretrain_kinds(config):
        steps = pre.epochs * int(steps_per_epoch)
        cpu = steps * t["step_cpu_s"] + t["fixed_wall_s"] + pre.epochs * pre_val_jets * ev["score_cpu_s"]
        out.append((f"pretrain:{kind}", f"{pre.epochs} epochs x {int(steps_per_epoch)} steps x {pre.batch_size} pairs",
                    cpu, cpu))
    max_val_steps = cls.extra.get("max_val_steps")
    val_jets = sp.max_val_jets if max_val_steps is None else min(sp.max_val_jets, max_val_steps * cls.batch_size)
    for size in sp.labelled_sizes:
        epochs = classifier_epochs(cls, size)
        steps = epochs * max(1, size // cls.batch_size)
        runs = len(cls.tasks) * len(cls.seeds)
        per_run = epochs * val_jets * ev["score_cpu_s"]
        cpu = runs * sum(steps * training[m]["step_cpu_s"] + training[m]["fixed_wall_s"] + per_run for m in cls.models)
        out.append((f"train:*:*:{size}:*", f"{runs} x {len(cls.models)} models x {steps} steps x {cls.batch_size} jets, "
                    f"{epochs} validations of {val_jets} jets", cpu, cpu))
    test_nominal = {"hbb": test["qcd"] + test["h_bb"], "wqq": test["qcd"] + test["w_qq"]}
    test_rows = {"hbb": test_nominal["hbb"] * rows_per_jet, "wqq": test["qcd"] * rows_per_jet + test["w_qq"]}
    scored = sum(test_nominal[task] for task in cls.tasks) * len(cls.models) * len(cls.seeds) * len(sp.labelled_sizes)
    out.append(("score:*", f"{scored:,.0f} jet scores", scored * ev["score_cpu_s"], scored * ev["score_cpu_s"]))
    sources = len(pretrain_kinds(config)) + len(cls.models) + 1
    embedded = sources * (2 * test_rows["hbb"] + test["w_qq"])
    out.append(("embed:*", f"{sources} networks x {2 * test_rows['hbb'] + test['w_qq']:,.0f} jets",
                embedded * ev["score_cpu_s"], embedded * ev["score_cpu_s"]))
    n2_jets = sum(2 * test_rows[task] + max(sp.labelled_sizes) for task in cls.tasks)
    out.append(("n2", f"{n2_jets:,.0f} jets", n2_jets * ev["n2_cpu_s"], n2_jets * ev["n2_cpu_s"]))
    return out


def print_budget(rows: list[tuple[str, str, float, float]]) -> None:
    print("| stage | work | CPU-s | wall (s) |\n|---|---|---:|---:|")
    for stage, what, cpu, wall in rows:
        print(f"| {stage} | {what} | {cpu:,.0f} | {wall:,.0f} |")
    total_cpu, total_wall = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"| total | | {total_cpu:,.0f} | {total_wall:,.0f} ({total_wall / 3600:.2f} h) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/at_scale.yaml")
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4, help="Epochs of each timed training.")
    parser.add_argument("--warmup", type=int, default=3, help="Steps left out of the per-step median.")
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--classifier-batch", type=int, help="Override classifier.batch_size (trade-off runs).")
    parser.add_argument("--threads", type=int, help="Override the config's torch threads.")
    parser.add_argument("--from-json", type=Path,
                        help="Budget only: reuse the JSON line (rates and training) of an earlier run's output file.")
    args = parser.parse_args()
    config = load_study_config(args.config)
    if args.from_json:
        lines = [line for line in args.from_json.read_text().splitlines() if line.startswith('{"config"')]
        measured = json.loads(lines[-1])
        print(f"budget of {args.config} from the rates of {args.from_json} ({measured['config']}, {measured['events']} events)")
        print_budget(budget(config, measured["rates"], measured["training"]))
        return
    if args.classifier_batch:
        config.classifier.batch_size = args.classifier_batch
    if args.threads:
        config.threads = args.threads
    torch.set_num_threads(config.threads)
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} CPUs; torch threads {config.threads}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rs3l-study-timing-") as tmp:
        work = Path(tmp)
        rates = time_generation(config, work, args.events)
        training = {} if args.no_training else time_training(config, work, args.epochs, args.warmup)
    cpu = sum(config.generation.events[p] * (r["generate_cpu_s"] + r["ntuple_cpu_s"]) for p, r in rates.items())
    print(f"load average after: {os.getloadavg()}")
    print(f"generation + ntupling of {args.config}: {cpu:.0f} CPU-s "
          f"({cpu / 3600 / max(1, config.generation.workers):.2f} h wall on {config.generation.workers} busy cores)")
    if training:
        print_budget(budget(config, rates, training))
    print(json.dumps({"config": args.config, "events": args.events, "rates": rates, "training": training}))


if __name__ == "__main__":
    main()
