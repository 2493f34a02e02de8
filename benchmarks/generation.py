"""Benchmark: events/s per core for generation + detector + writing vs Pythia alone.

Run:  .venv/bin/python benchmarks/generation.py [--events 2000] [--process zh_bb] [--isr]

"Pythia alone" is a plain Pythia instance generating the same process (hard process, shower,
hadronization, decays) with ``p.next()`` and no data access. "End to end" is
``generate_chunk`` for one variant: hard process once, the in-memory LHAup shower instance,
record pruning, detector simulation and the Delphes-layout writer. Single process = one core.
The machine's 2 cores are shared with other engineers: numbers vary with their load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from rs3l_coffea.generation import ChunkTiming, GenerationConfig, generate_chunk
from rs3l_coffea.generation.config import PROCESSES
from rs3l_coffea.generation.pythia import _QUIET, _new_pythia


def pythia_alone(process: str, n_events: int, isr: bool) -> float:
    """Events/s of a plain Pythia run of ``process`` (init excluded)."""
    pythia = _new_pythia(
        [*_QUIET, *PROCESSES[process].settings, f"PartonLevel:ISR = {'on' if isr else 'off'}",
         "PartonLevel:MPI = off", "ParticleDecays:limitTau0 = on", "Random:setSeed = on",
         "Random:seed = 7"]
    )
    pythia.init()
    start = time.process_time()
    for _ in range(n_events):
        pythia.next()
    return n_events / (time.process_time() - start)


def end_to_end(process: str, n_events: int, isr: bool, variants: tuple[str, ...]) -> ChunkTiming:
    """Timing of one chunk of ``n_events`` hard events in ``variants``."""
    with tempfile.TemporaryDirectory() as out:
        config = GenerationConfig(
            process=process, n_events=n_events, out_dir=out, variants=variants, seed=7,
            chunk_size=n_events, isr=isr, mpi=False,
        )
        timing = ChunkTiming()
        generate_chunk(config, 0, timing)
        return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--process", default="zh_bb", choices=sorted(PROCESSES))
    parser.add_argument("--isr", action="store_true", help="ISR on (default off, as in the goal)")
    parser.add_argument("--variants", default="nominal,fsr_up")
    args = parser.parse_args()
    variants = tuple(args.variants.split(","))
    # warm-up (imports, first-call costs) on a few events
    end_to_end(args.process, 20, args.isr, variants[:1])

    alone = pythia_alone(args.process, args.events, args.isr)
    timing = end_to_end(args.process, args.events, args.isr, variants)
    showered = args.events * len(variants)
    rate = showered / timing.total
    outside = timing.records + timing.detector + timing.write
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print("timings are CPU seconds of this process (time.process_time), so neighbours' load matters less")
    print(f"process {args.process}, ISR {'on' if args.isr else 'off'}, MPI off, "
          f"{args.events} hard events x {len(variants)} variants, 1 core (2 shared cores)\n")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| Pythia alone (next(), no output) | {alone:,.0f} events/s |")
    print(f"| end to end (hard once + shower + records + detector + write) | {rate:,.0f} events/s |")
    print(f"| end to end / Pythia alone | {rate / alone:.0%} |")
    print(f"| share of time outside Pythia | {outside / timing.total:.1%} |")
    for name in ("hard", "init", "shower", "records", "detector", "write"):
        seconds = getattr(timing, name)
        print(f"| {name} | {seconds:.2f} s ({seconds / timing.total:.1%}) |")


if __name__ == "__main__":
    main()
