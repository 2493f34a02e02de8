"""Benchmark: events/s per core for generation + detector + writing vs Pythia alone.

Run:  .venv/bin/python benchmarks/generation.py [--events 5000] [--chunks 2] [--isr]
          [--process zh_bb] [--variants nominal,fsr_up]

Measures a worker in steady state, as in a long job: a first chunk initialises its Pythia
instances (reported separately: once per worker and variant), then ``--chunks`` more chunks of
``--events`` hard events run end to end (``generate_chunk``: hard process with its own
initialisation, every variant's shower, record pruning, detector simulation, Delphes-layout
writing, sidecars). The 2 cores are shared with other engineers and a core's speed drifts by
tens of percent within seconds, so the references are measured *interleaved* with the
end-to-end run: right after each shower batch of n events, and for the same n,

* "Pythia alone": a plain Pythia instance with exactly that shower's physics settings
  (process, ISR/MPI, variant settings, ``limitTau0``) generating n events with ``p.next()``
  and no data access, hard process included (the issue's "Pythia's own showering rate");
* "binding ceiling": another instance with those settings, fed the same n stored hard events
  through the in-memory LHAup and read out with ``nextBatch``, nothing else: the most any
  pipeline on these bindings could reach.

Their CPU time is subtracted from the end-to-end time they were measured inside. Reference
instances are initialised before the measured chunks (excluded, like the end-to-end
instances' one-time initialisation). Times are CPU seconds of this process
(``time.process_time``); one process = one core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from rs3l_coffea.generation import ChunkTiming, GenerationConfig, generate_chunk
from rs3l_coffea.generation import pythia as generation_pythia
from rs3l_coffea.generation.config import BEAM_ENERGY, PROCESSES
from rs3l_coffea.generation.pythia import _QUIET, VariantShower, _new_pythia, make_variant_shower

STAGES = ("hard", "init", "shower", "records", "detector", "write")


def _physics_settings(shower: VariantShower) -> tuple[str, ...]:
    """A shower instance's settings without the LHA input, the seed and the print settings."""
    return tuple(
        line for line in shower.settings
        if line not in _QUIET and not line.replace(" ", "").startswith(("Beams:frameType=",
                                                                         "Random:seed="))
    )


class InterleavedReferences:
    """Runs the two references after every shower batch, timing them separately."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.alone: dict[tuple[str, ...], Any] = {}
        self.ceiling: dict[tuple[str, ...], VariantShower] = {}
        self.seconds: dict[str, float] = defaultdict(float)  # alone / ceiling / prepare
        self.alone_by_settings: dict[tuple[str, ...], float] = defaultdict(float)
        self.events: dict[tuple[str, ...], int] = defaultdict(int)
        self.active = False

    def prepare(self, shower: VariantShower) -> None:
        """Initialise the reference instances for ``shower``'s settings (not timed)."""
        key = _physics_settings(shower)
        if key in self.alone:
            return
        tick = time.process_time()
        pythia = _new_pythia([*_QUIET, *PROCESSES[self.process].settings, *key,
                              "Random:seed = 7"])
        if not pythia.init():
            raise RuntimeError(f"Pythia failed to initialise {key}")
        for _ in range(50):  # warm-up
            pythia.next()
        self.alone[key] = pythia
        self.ceiling[key] = make_variant_shower(shower.feed.hard, list(shower.settings),
                                                BEAM_ENERGY)
        self.seconds["prepare"] += time.process_time() - tick

    def after_batch(self, shower: VariantShower, start: int, n: int) -> None:
        key = _physics_settings(shower)
        self.prepare(shower)
        if not self.active:
            return
        pythia = self.alone[key]
        tick = time.process_time()
        for _ in range(n):
            pythia.next()
        alone = time.process_time() - tick
        self.seconds["alone"] += alone
        self.alone_by_settings[key] += alone
        self.events[key] += n

        ceiling = self.ceiling[key]
        tick = time.process_time()
        ceiling.feed.restart(shower.feed.hard)
        ceiling.feed.next_index = start
        self.original_next_batch(ceiling, n)
        self.seconds["ceiling"] += time.process_time() - tick

    def install(self) -> None:
        original = self.original_next_batch = VariantShower.next_batch
        references = self

        def next_batch(shower: VariantShower, n: int) -> Any:
            start = shower.feed.next_index
            result = original(shower, n)
            references.after_batch(shower, start, n)
            return result

        VariantShower.next_batch = next_batch  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="hard events per chunk")
    parser.add_argument("--chunks", type=int, default=2, help="measured chunks")
    parser.add_argument("--process", default="zh_bb", choices=sorted(PROCESSES))
    parser.add_argument("--isr", action="store_true", help="ISR on (default off, as in the goal)")
    parser.add_argument("--variants", default="nominal,fsr_up")
    args = parser.parse_args()
    variants = tuple(args.variants.split(","))
    n = args.events

    references = InterleavedReferences(args.process)
    references.install()
    generation_pythia.clear_shower_cache()  # start cold, like a fresh worker process
    with tempfile.TemporaryDirectory() as out:
        config = GenerationConfig(
            process=args.process, n_events=n * (args.chunks + 1), out_dir=out,
            variants=variants, seed=7, chunk_size=n, isr=args.isr, mpi=False,
        )
        first = ChunkTiming()
        tick = time.process_time()
        generate_chunk(config, 0, first)  # initialises this worker's (and the references') instances
        first_seconds = time.process_time() - tick - references.seconds["prepare"]
        first.shower -= references.seconds["prepare"]  # prepared inside the shower stage
        references.active = True
        timing = ChunkTiming()
        tick = time.process_time()
        for chunk in range(1, args.chunks + 1):
            generate_chunk(config, chunk, timing)
        measured = time.process_time() - tick
    alone = references.seconds["alone"]
    ceiling = references.seconds["ceiling"]
    e2e = measured - alone - ceiling
    timing.shower -= alone + ceiling  # they ran inside the shower stage's timer
    showered = n * len(variants) * args.chunks

    total = sum(getattr(timing, stage) for stage in STAGES)
    outside = timing.records + timing.detector + timing.write
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print("CPU seconds of this process (time.process_time); 1 core of 2 shared cores")
    print(f"process {args.process}, ISR {'on' if args.isr else 'off'}, MPI off, variants "
          f"{','.join(variants)}; {args.chunks} chunks of {n} hard events x {len(variants)} "
          "variants after one initialising chunk; references interleaved per shower batch\n")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| **end to end / Pythia alone** | **{alone / e2e:.0%}** |")
    print(f"| binding ceiling (LHAup feed + nextBatch, nothing else) / Pythia alone | "
          f"{alone / ceiling:.0%} |")
    print(f"| end to end | {showered / e2e:,.0f} events/s |")
    print(f"| Pythia alone, same settings and events (next(), no output) | "
          f"{showered / alone:,.0f} events/s |")
    print(f"| binding ceiling | {showered / ceiling:,.0f} events/s |")
    for key, seconds in references.alone_by_settings.items():
        label = ", ".join(line for line in key if "ISR" not in line and "MPI" not in line
                          and "limitTau0" not in line and "setSeed" not in line) or "nominal"
        print(f"| Pythia alone, {label} | {references.events[key] / seconds:,.0f} events/s |")
    print(f"| first chunk (initialises the worker's instances) | {first_seconds:.2f} s, of which "
          f"init {first.init:.2f} s, hard {first.hard:.2f} s |")
    print(f"| share of end-to-end time in records + detector + write | {outside / total:.1%} |")
    for stage in STAGES:
        seconds = getattr(timing, stage)
        print(f"| {stage} | {seconds:.2f} s ({seconds / total:.1%}, "
              f"{seconds / showered * 1e6:.0f} us/event) |")
    print(f"| end to end minus the stages above (sidecars, checks) | "
          f"{(e2e - total) / showered * 1e6:.0f} us/event |")


if __name__ == "__main__":
    main()
