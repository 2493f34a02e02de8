"""Cost of the jet observables for one busy jet (issue 15.13): N2 and soft drop versus multiplicity.

One synthetic jet of ``n`` massive particles (pT ~ 0.1 + Exp(2 GeV), eta and phi ~ N(0, 0.25)).
For each ``n`` it times fastjet's energy correlator (N2, beta 1) and soft-drop grooming on all
``n`` particles (the cost before the cap; skipped above ``--max-uncapped``) and
:func:`rs3l_coffea.features.jet_observables` with its default cap (leading 100 in pT).

    python benchmarks/observables_cost.py                       # n = 250 ... 10,000
    python benchmarks/observables_cost.py --sizes 1000 2000 --max-uncapped 2000
    python benchmarks/observables_cost.py --throughput          # real jets, jets per CPU-second

``--throughput``: ``jet_observables`` on coffea's delphes.root (anti-kT 0.8) and pfnano.root
FatJets tiled 20 times (4,500 jets), CPU time, best of 3.
"""

from __future__ import annotations

import argparse
import time

import awkward as ak
import numpy as np


def _jet(n: int) -> ak.Array:
    rng = np.random.default_rng(3)
    pt = rng.exponential(2.0, n) + 0.1
    eta, phi = rng.normal(0.0, 0.25, n), rng.normal(0.0, 0.25, n)
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + 0.14**2)
    fields = {"pt": pt, "eta": eta, "phi": phi, "energy": energy,
              "charge": np.ones(n, np.int32), "pdg_id": np.full(n, 211, np.int32),
              "d0": np.zeros(n), "dz": np.zeros(n)}
    return ak.zip({k: ak.Array([v]) for k, v in fields.items()})


def main() -> None:
    import fastjet
    import vector

    from rs3l_coffea.features import jet_observables
    from rs3l_coffea.features.observables import _momenta, n2_of

    vector.register_awkward()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 10_000])
    parser.add_argument("--max-uncapped", type=int, default=2000)
    parser.add_argument("--throughput", action="store_true")
    args = parser.parse_args()
    if args.throughput:
        _throughput()
        return
    print(f"{'n':>6} {'N2 all (s)':>11} {'soft drop all (s)':>18} {'jet_observables (s)':>20}")
    for n in args.sizes:
        constituents = _jet(n)
        uncapped_n2 = uncapped_sd = float("nan")
        if n <= args.max_uncapped:
            momenta = _momenta(constituents)
            start = time.perf_counter()
            n2_of(momenta)
            uncapped_n2 = time.perf_counter() - start
            sequence = fastjet.ClusterSequence(
                momenta, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0)
            )
            start = time.perf_counter()
            sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1, R0=0.8)
            uncapped_sd = time.perf_counter() - start
        jets = ak.Array([{"pt": 100.0, "eta": 0.0, "phi": 0.0, "mass": 10.0}])
        start = time.perf_counter()
        jet_observables(jets, constituents)
        capped = time.perf_counter() - start
        print(f"{n:>6} {uncapped_n2:>11.3f} {uncapped_sd:>18.3f} {capped:>20.3f}", flush=True)


def _throughput() -> None:
    from rs3l_coffea.features import jet_observables
    from rs3l_coffea.features.builder import flatten_jets
    from rs3l_coffea.io import load_jets
    from rs3l_coffea.testing import sample_path

    delphes = flatten_jets(*load_jets(sample_path("delphes.root"), recluster_radius=0.8))
    pfnano = flatten_jets(*load_jets(sample_path("pfnano.root")))
    jets = ak.concatenate([delphes[0], pfnano[0]] * 20)
    constituents = ak.concatenate([delphes[1], pfnano[1]] * 20)
    jet_observables(jets[:50], constituents[:50])
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        jet_observables(jets, constituents)
        best = min(best, time.process_time() - start)
    mean = float(ak.mean(ak.num(constituents, axis=1)))
    print(f"{len(jets)} jets ({mean:.1f} particles on average): {len(jets) / best:,.0f} jets/CPU-s")


if __name__ == "__main__":
    main()
