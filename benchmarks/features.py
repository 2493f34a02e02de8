"""Benchmark: vectorised ``build_features`` vs a per-jet Python loop computing the same features.

Two loop baselines: (1) a per-jet loop that takes each jet's arrays from awkward and does numpy
math per jet (the straightforward way of writing a ROOT loader jet by jet); (2) a per-particle
pure-Python loop on lists converted beforehand (conversion not timed): an optimistic baseline. Jets come from the real coffea samples (Delphes reclustered with
anti-kT R=0.8, PFNano FatJets), tiled to get enough jets. Both are timed once, on one thread;
the loop runs on a subset and its rate is extrapolated (it is linear in the number of jets).
Before timing, the loop's output is checked against ``build_features`` on that subset.

    .venv/bin/python benchmarks/features.py [--jets 200000] [--loop-jets 3000]

Prints a markdown table: jets per CPU-second (per core; robust to other load on a shared
machine), jets per wall-second in brackets, and the CPU-time speed-up.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import awkward as ak
import numpy as np

from rs3l_coffea.features import FEATURE_INDEX, N_FEATURES, build_features
from rs3l_coffea.features.builder import flatten_jets
from rs3l_coffea.io import load_jets
from rs3l_coffea.testing import sample_path


def loop_features(jet_list: list[dict], particle_lists: list[list[dict]], max_particles: int = 100):
    """Per-jet, per-particle Python loop (the published loader's style)."""
    x = np.zeros((len(jet_list), max_particles, N_FEATURES), dtype=np.float32)
    mask = np.zeros((len(jet_list), max_particles), dtype=bool)
    for i, (jet, particles) in enumerate(zip(jet_list, particle_lists, strict=True)):
        jet_p = jet["pt"] * math.cosh(jet["eta"])
        jet_e = math.sqrt(jet_p * jet_p + jet["mass"] ** 2)
        ordered = sorted(particles, key=lambda p: -p["pt"])[:max_particles]
        for j, p in enumerate(ordered):
            deta = p["eta"] - jet["eta"]
            dphi = (p["phi"] - jet["phi"] + math.pi) % (2 * math.pi) - math.pi
            pdg = abs(p["pdg_id"])
            row = x[i, j]
            row[FEATURE_INDEX["log_pt"]] = math.log(p["pt"])
            row[FEATURE_INDEX["log_pt_rel"]] = math.log(p["pt"] / jet["pt"])
            row[FEATURE_INDEX["deta"]] = deta
            row[FEATURE_INDEX["dphi"]] = dphi
            row[FEATURE_INDEX["log_e"]] = math.log(p["energy"])
            row[FEATURE_INDEX["log_e_rel"]] = math.log(p["energy"] / jet_e)
            row[FEATURE_INDEX["charge"]] = p["charge"]
            row[FEATURE_INDEX["tanh_d0"]] = math.tanh(p["d0"])
            row[FEATURE_INDEX["tanh_dz"]] = math.tanh(p["dz"])
            row[FEATURE_INDEX["delta_r"]] = math.hypot(deta, dphi)
            row[FEATURE_INDEX["is_photon"]] = p["pdg_id"] == 22
            row[FEATURE_INDEX["is_muon"]] = pdg == 13
            row[FEATURE_INDEX["is_electron"]] = pdg == 11
            row[FEATURE_INDEX["is_charged_hadron"]] = p["charge"] != 0 and pdg not in (11, 13)
            row[FEATURE_INDEX["is_neutral_hadron"]] = p["charge"] == 0 and pdg not in (11, 13, 22)
            mask[i, j] = True
    return x, mask


def loop_features_per_jet_arrays(jets: ak.Array, constituents: ak.Array, max_particles: int = 100):
    """Per-jet loop taking each jet's arrays from awkward and doing numpy math per jet."""
    x = np.zeros((len(jets), max_particles, N_FEATURES), dtype=np.float32)
    mask = np.zeros((len(jets), max_particles), dtype=bool)
    for i in range(len(jets)):
        jet, particles = jets[i], constituents[i]
        pt = ak.to_numpy(particles.pt)
        order = np.argsort(-pt, kind="stable")[:max_particles]
        pt = pt[order]
        eta, phi = ak.to_numpy(particles.eta)[order], ak.to_numpy(particles.phi)[order]
        energy, charge = ak.to_numpy(particles.energy)[order], ak.to_numpy(particles.charge)[order]
        pdg = ak.to_numpy(particles.pdg_id)[order]
        d0, dz = ak.to_numpy(particles.d0)[order], ak.to_numpy(particles.dz)[order]
        jet_e = math.sqrt((jet.pt * math.cosh(jet.eta)) ** 2 + jet.mass**2)
        deta = eta - jet.eta
        dphi = np.mod(phi - jet.phi + np.pi, 2 * np.pi) - np.pi
        n = len(pt)
        lepton = (np.abs(pdg) == 11) | (np.abs(pdg) == 13)
        x[i, :n, FEATURE_INDEX["log_pt"]] = np.log(pt)
        x[i, :n, FEATURE_INDEX["log_pt_rel"]] = np.log(pt / jet.pt)
        x[i, :n, FEATURE_INDEX["deta"]] = deta
        x[i, :n, FEATURE_INDEX["dphi"]] = dphi
        x[i, :n, FEATURE_INDEX["log_e"]] = np.log(energy)
        x[i, :n, FEATURE_INDEX["log_e_rel"]] = np.log(energy / jet_e)
        x[i, :n, FEATURE_INDEX["charge"]] = charge
        x[i, :n, FEATURE_INDEX["tanh_d0"]] = np.tanh(d0)
        x[i, :n, FEATURE_INDEX["tanh_dz"]] = np.tanh(dz)
        x[i, :n, FEATURE_INDEX["delta_r"]] = np.hypot(deta, dphi)
        x[i, :n, FEATURE_INDEX["is_photon"]] = pdg == 22
        x[i, :n, FEATURE_INDEX["is_muon"]] = np.abs(pdg) == 13
        x[i, :n, FEATURE_INDEX["is_electron"]] = np.abs(pdg) == 11
        x[i, :n, FEATURE_INDEX["is_charged_hadron"]] = (charge != 0) & ~lepton
        x[i, :n, FEATURE_INDEX["is_neutral_hadron"]] = (charge == 0) & ~lepton & (pdg != 22)
        mask[i, :n] = True
    return x, mask


def _tile(jets: ak.Array, constituents: ak.Array, n_jets: int) -> tuple[ak.Array, ak.Array]:
    repeats = max(1, math.ceil(n_jets / len(jets)))
    index = np.tile(np.arange(len(jets)), repeats)[:n_jets]
    return jets[index], constituents[index]


SAMPLES = {
    "delphes": ("Delphes (anti-kT 0.8)", "delphes.root", {"recluster_radius": 0.8}),
    "pfnano": ("PFNano FatJet", "pfnano.root", {}),
}


def run(
    n_jets: int, loop_jets: int, chunk: int = 10_000, samples: tuple[str, ...] = tuple(SAMPLES)
) -> list[dict]:
    rows = []
    for sample in samples:
        name, filename, options = SAMPLES[sample]
        jets, constituents = load_jets(sample_path(filename), **options)
        flat_jets, flat_constituents = flatten_jets(jets, constituents)
        flat_jets = ak.to_packed(flat_jets)
        tiled_jets, tiled_constituents = _tile(flat_jets, flat_constituents, n_jets)
        tiled_jets, tiled_constituents = ak.to_packed(tiled_jets), ak.to_packed(tiled_constituents)
        mean_particles = float(ak.mean(ak.num(tiled_constituents, axis=1)))

        # Processed in chunks, as a processor or the CLI does (one chunk warms the allocator).
        build_features(tiled_jets[:chunk], tiled_constituents[:chunk])
        start, cpu_start = time.perf_counter(), time.process_time()
        for begin in range(0, n_jets, chunk):
            build_features(tiled_jets[begin : begin + chunk], tiled_constituents[begin : begin + chunk])
        vector_s = time.perf_counter() - start
        vector_cpu = time.process_time() - cpu_start

        subset_jets, subset_constituents = _tile(flat_jets, flat_constituents, loop_jets)
        jet_list, particle_lists = ak.to_list(subset_jets), ak.to_list(subset_constituents)
        start, cpu_start = time.perf_counter(), time.process_time()
        x_loop, mask_loop = loop_features(jet_list, particle_lists)
        loop_s = time.perf_counter() - start
        loop_cpu = time.process_time() - cpu_start
        x_vec, mask_vec = build_features(subset_jets, subset_constituents)
        if not (np.array_equal(mask_loop, mask_vec) and np.allclose(x_loop, x_vec, atol=1e-5)):
            raise AssertionError(f"{name}: loop and vectorised features differ")

        array_jets = max(1, loop_jets // 5)  # this loop is slow: fewer jets, same per-jet rate
        cpu_start = time.process_time()
        x_arr, mask_arr = loop_features_per_jet_arrays(subset_jets[:array_jets], subset_constituents[:array_jets])
        array_cpu = time.process_time() - cpu_start
        if not (np.array_equal(mask_arr, mask_vec[:array_jets]) and np.allclose(x_arr, x_vec[:array_jets], atol=1e-5)):
            raise AssertionError(f"{name}: per-jet array loop and vectorised features differ")

        rows.append(
            {
                "input": name,
                "jets": n_jets,
                "particles/jet": mean_particles,
                "vectorised jets/s": n_jets / vector_s,
                "vectorised jets/cpu-s": n_jets / vector_cpu,
                "loop jets/s": loop_jets / loop_s,
                "loop jets/cpu-s": loop_jets / loop_cpu,
                "array loop jets/cpu-s": array_jets / array_cpu,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=200_000, help="tiled jets for build_features")
    parser.add_argument("--loop-jets", type=int, default=3_000, help="jets for the Python loop")
    parser.add_argument("--chunk", type=int, default=10_000, help="jets per build_features call")
    parser.add_argument("--samples", default="delphes,pfnano", help="comma-separated: delphes,pfnano")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    rows = run(args.jets, args.loop_jets, args.chunk, tuple(args.samples.split(",")))
    # CPU-time rates are per core and robust to other load on the machine; wall rates too.
    print(
        "| input | jets | particles/jet | build_features jets/cpu-s (wall) "
        "| per-jet array loop jets/cpu-s | speed-up "
        "| per-particle loop on lists jets/cpu-s (wall) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        vec = r["vectorised jets/cpu-s"]
        print(
            f"| {r['input']} | {r['jets']} | {r['particles/jet']:.1f} | "
            f"{vec:,.0f} ({r['vectorised jets/s']:,.0f}) | "
            f"{r['array loop jets/cpu-s']:,.0f} | {vec / r['array loop jets/cpu-s']:.0f}x | "
            f"{r['loop jets/cpu-s']:,.0f} ({r['loop jets/s']:,.0f}) | "
            f"{vec / r['loop jets/cpu-s']:.0f}x |"
        )
    return rows


if __name__ == "__main__":
    main()
