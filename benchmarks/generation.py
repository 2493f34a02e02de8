"""Benchmark: events/s per core for generation + detector + writing vs Pythia alone.

Run:  .venv/bin/python benchmarks/generation.py [--events 2000] [--process zh_bb] [--isr]
                                                 [--variants nominal,fsr_up] [--chunks 1]

"Pythia alone" is a plain Pythia instance generating the same process (hard process, shower,
hadronization, decays) with ``p.next()`` and no data access, reported twice: with the nominal
settings only, and over the same variants as the end-to-end run (each variant's settings for
``--events`` events; the fair reference, since e.g. ``fsr_up`` showers more). "End to end" is
``generate_chunk`` for ``--chunks`` consecutive chunks in this process (as one worker runs
them): hard process once per chunk, the in-memory LHAup shower instances (initialised once per
variant and process, then reused), record pruning, detector simulation and the Delphes-layout
writer. Single process = one core. The machine's 2 cores are shared with other engineers:
numbers vary with their load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from rs3l_coffea.generation import ChunkTiming, GenerationConfig, generate_chunk
from rs3l_coffea.generation import pythia as generation_pythia
from rs3l_coffea.generation.config import PROCESSES, VARIANTS
from rs3l_coffea.generation.pythia import _QUIET, _new_pythia


def pythia_alone(process: str, n_events: int, isr: bool, variant: str = "nominal") -> float:
    """CPU seconds of a plain Pythia run of ``n_events`` of ``process`` (init excluded)."""
    settings_variant = "nominal" if variant == "rehadronize" else variant
    pythia = _new_pythia(
        [*_QUIET, *PROCESSES[process].settings, f"PartonLevel:ISR = {'on' if isr else 'off'}",
         "PartonLevel:MPI = off", "ParticleDecays:limitTau0 = on", "Random:setSeed = on",
         "Random:seed = 7", *VARIANTS[settings_variant][1]]
    )
    pythia.init()
    start = time.process_time()
    for _ in range(n_events):
        pythia.next()
    return time.process_time() - start


def end_to_end(
    process: str, n_events: int, isr: bool, variants: tuple[str, ...], chunks: int = 1
) -> ChunkTiming:
    """Timing of ``chunks`` consecutive chunks (``n_events`` hard events in all) in ``variants``."""
    # Start cold, like a fresh worker process: no initialised instance from an earlier call.
    generation_pythia.clear_shower_cache()
    with tempfile.TemporaryDirectory() as out:
        config = GenerationConfig(
            process=process, n_events=n_events, out_dir=out, variants=variants, seed=7,
            chunk_size=-(-n_events // chunks), isr=isr, mpi=False,
        )
        timing = ChunkTiming()
        for chunk in range(config.n_chunks):
            generate_chunk(config, chunk, timing)
        return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--process", default="zh_bb", choices=sorted(PROCESSES))
    parser.add_argument("--isr", action="store_true", help="ISR on (default off, as in the goal)")
    parser.add_argument("--variants", default="nominal,fsr_up")
    parser.add_argument("--chunks", type=int, default=1,
                        help="split --events into this many chunks, run one after another")
    args = parser.parse_args()
    variants = tuple(args.variants.split(","))
    # warm-up (imports, first-call costs) on a few events
    end_to_end(args.process, 20, args.isr, variants[:1])

    alone = args.events / pythia_alone(args.process, args.events, args.isr)
    alone_variants = args.events * len(variants) / sum(
        pythia_alone(args.process, args.events, args.isr, variant) for variant in variants
    )
    timing = end_to_end(args.process, args.events, args.isr, variants, args.chunks)
    showered = args.events * len(variants)
    rate = showered / timing.total
    outside = timing.records + timing.detector + timing.write
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print("timings are CPU seconds of this process (time.process_time), so neighbours' load matters less")
    print(f"process {args.process}, ISR {'on' if args.isr else 'off'}, MPI off, "
          f"{args.events} hard events x {len(variants)} variants in {args.chunks} chunk(s), "
          "1 core (2 shared cores)\n")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| Pythia alone, nominal settings (next(), no output) | {alone:,.0f} events/s |")
    print(f"| Pythia alone, same variants (next(), no output) | {alone_variants:,.0f} events/s |")
    print(f"| end to end (hard once + shower + records + detector + write) | {rate:,.0f} events/s |")
    print(f"| end to end / Pythia alone (nominal) | {rate / alone:.0%} |")
    print(f"| end to end / Pythia alone (same variants) | {rate / alone_variants:.0%} |")
    print(f"| share of time outside Pythia | {outside / timing.total:.1%} |")
    for name in ("hard", "init", "shower", "records", "detector", "write"):
        seconds = getattr(timing, name)
        print(f"| {name} | {seconds:.2f} s ({seconds / timing.total:.1%}) |")


if __name__ == "__main__":
    main()
