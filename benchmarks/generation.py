"""Benchmark: events/s per core for generation + detector + writing vs Pythia alone.

Run:  .venv/bin/python benchmarks/generation.py [--events 2000] [--rounds 3] [--isr]
          [--process zh_bb] [--variants nominal,fsr_up]

Measures a worker in steady state, as in a long job: a first chunk initialises its Pythia
instances (reported separately: once per worker and variant), then ``--rounds`` rounds each
run one more chunk of ``--events`` hard events end to end (``generate_chunk``: hard process
with its own initialisation, every variant's shower, record pruning, detector simulation,
Delphes-layout writing, sidecars) and, as the reference, plain Pythia instances with each
variant's settings generating ``--events`` events each with ``p.next()`` and no data access
(hard process included; initialised once before the rounds, like the end-to-end instances).
A third measurement bounds what any pipeline on these bindings can reach: each variant's
shower instance fed ``--events`` stored hard events through the in-memory LHAup and read out
with ``nextBatch`` in batches of the default size, with no further processing ("binding
ceiling": the time Pythia needs for LHA input plus the awkward readout).
Reference and end-to-end runs alternate within each round (order swapped every round), so the
ratio of the two is measured under the same load: the 2 cores are shared with other engineers
and absolute rates drift by tens of percent over minutes. Times are CPU seconds of this
process (``time.process_time``); one process = one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any

from rs3l_coffea.generation import ChunkTiming, GenerationConfig, generate_chunk
from rs3l_coffea.generation import pythia as generation_pythia
from rs3l_coffea.generation.config import BEAM_ENERGY, PROCESSES, VARIANTS
from rs3l_coffea.generation.pythia import (
    _QUIET,
    VariantShower,
    _new_pythia,
    generate_hard_events,
    make_variant_shower,
    shower_settings,
)

STAGES = ("hard", "init", "shower", "records", "detector", "write")


def reference_instance(process: str, isr: bool, variant: str) -> Any:
    """An initialised plain Pythia instance with ``variant``'s settings (MPI off)."""
    settings_variant = "nominal" if variant == "rehadronize" else variant
    pythia = _new_pythia(
        [*_QUIET, *PROCESSES[process].settings, f"PartonLevel:ISR = {'on' if isr else 'off'}",
         "PartonLevel:MPI = off", "ParticleDecays:limitTau0 = on", "Random:setSeed = on",
         "Random:seed = 7", *VARIANTS[settings_variant][1]]
    )
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise {process} {variant}")
    return pythia


def pythia_alone(instances: dict[str, Any], n_events: int) -> dict[str, float]:
    """CPU seconds per variant for ``n_events`` more events of each reference instance."""
    seconds = {}
    for variant, pythia in instances.items():
        start = time.process_time()
        for _ in range(n_events):
            pythia.next()
        seconds[variant] = time.process_time() - start
    return seconds


def ceiling_instances(
    process: str, isr: bool, variants: tuple[str, ...], n_events: int
) -> tuple[Any, dict[str, VariantShower]]:
    """Stored hard events and one LHAup-fed shower instance per variant (not cached)."""
    spec = PROCESSES[process]
    hard = generate_hard_events(spec.settings, spec.target_ids, n_events, seed=11)
    showers = {}
    for variant in variants:
        settings_variant = "nominal" if variant == "rehadronize" else variant
        settings = shower_settings(VARIANTS[settings_variant][1], isr, False, seed=13)
        showers[variant] = make_variant_shower(hard, settings, BEAM_ENERGY)
    return hard, showers


def binding_ceiling(hard: Any, showers: dict[str, VariantShower], batch_size: int) -> float:
    """CPU seconds to shower and read out (``nextBatch``) ``hard`` in every variant."""
    start = time.process_time()
    for seed, shower in enumerate(showers.values(), start=21):
        shower.restart(hard, seed, None, None)
        while shower.feed.next_index < len(hard):
            shower.next_batch(min(batch_size, len(hard) - shower.feed.next_index))
    return time.process_time() - start


def end_to_end(config: GenerationConfig, chunk: int, timing: ChunkTiming) -> float:
    """CPU seconds of ``generate_chunk(config, chunk)`` (everything it does)."""
    start = time.process_time()
    generate_chunk(config, chunk, timing)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="hard events per chunk/round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--process", default="zh_bb", choices=sorted(PROCESSES))
    parser.add_argument("--isr", action="store_true", help="ISR on (default off, as in the goal)")
    parser.add_argument("--variants", default="nominal,fsr_up")
    args = parser.parse_args()
    variants = tuple(args.variants.split(","))
    n = args.events

    generation_pythia.clear_shower_cache()  # start cold, like a fresh worker process
    with tempfile.TemporaryDirectory() as out:
        config = GenerationConfig(
            process=args.process, n_events=n * (args.rounds + 1), out_dir=out, variants=variants,
            seed=7, chunk_size=n, isr=args.isr, mpi=False,
        )
        first = ChunkTiming()
        first_seconds = end_to_end(config, 0, first)  # initialises this worker's instances
        instances = {variant: reference_instance(args.process, args.isr, variant)
                     for variant in variants}
        pythia_alone(instances, min(n, 200))  # warm-up, like the first chunk above
        hard, showers = ceiling_instances(args.process, args.isr, variants, n)

        timing = ChunkTiming()
        ratios, e2e_rates, alone_rates, ceilings = [], [], [], []
        per_variant = dict.fromkeys(variants, 0.0)
        for round_index in range(args.rounds):
            chunk = round_index + 1
            if round_index % 2 == 0:
                alone = pythia_alone(instances, n)
                e2e = end_to_end(config, chunk, timing)
                ceiling = binding_ceiling(hard, showers, config.batch_size)
            else:
                ceiling = binding_ceiling(hard, showers, config.batch_size)
                e2e = end_to_end(config, chunk, timing)
                alone = pythia_alone(instances, n)
            for variant, seconds in alone.items():
                per_variant[variant] += seconds
            alone_total = sum(alone.values())
            ratios.append(alone_total / e2e)
            ceilings.append(alone_total / ceiling)
            e2e_rates.append(n * len(variants) / e2e)
            alone_rates.append(n * len(variants) / alone_total)

    total = sum(getattr(timing, stage) for stage in STAGES)
    outside = timing.records + timing.detector + timing.write
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print("CPU seconds of this process (time.process_time); 1 core of 2 shared cores")
    print(f"process {args.process}, ISR {'on' if args.isr else 'off'}, MPI off, variants "
          f"{','.join(variants)}; {args.rounds} rounds of {n} hard events x {len(variants)} "
          "variants after one initialising chunk\n")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| end to end / Pythia alone, per round | {', '.join(f'{r:.0%}' for r in ratios)} |")
    print(f"| end to end / Pythia alone, median | {statistics.median(ratios):.0%} |")
    print(f"| binding ceiling (LHAup feed + nextBatch only) / Pythia alone, per round | "
          f"{', '.join(f'{r:.0%}' for r in ceilings)} (median {statistics.median(ceilings):.0%}) |")
    print(f"| Pythia alone, same variants (next(), no output), per round | "
          f"{', '.join(f'{r:,.0f}' for r in alone_rates)} events/s |")
    print(f"| end to end, per round | {', '.join(f'{r:,.0f}' for r in e2e_rates)} events/s |")
    for variant, seconds in per_variant.items():
        print(f"| Pythia alone, {variant} | {n * args.rounds / seconds:,.0f} events/s |")
    print(f"| first chunk (initialises the worker's instances) | {first_seconds:.2f} s, of which "
          f"init {first.init:.2f} s, hard {first.hard:.2f} s |")
    print(f"| share of time in records + detector + write | {outside / total:.1%} |")
    for stage in STAGES:
        seconds = getattr(timing, stage)
        per_event = seconds / (n * len(variants) * args.rounds) * 1e6
        print(f"| {stage} | {seconds:.2f} s ({seconds / total:.1%}, {per_event:.0f} us/event) |")


if __name__ == "__main__":
    main()
