"""Generators of the bad-input corpus used by ``tests/test_reliability_*.py``.

Every function writes one deliberately broken (or extreme) input into ``directory`` and
returns its path. Nothing binary is committed: files are generated from the real coffea
samples (:func:`rs3l_coffea.testing.sample_path`) or written from scratch with uproot, in
the layouts our readers accept:

* Delphes layout: tree ``Delphes``, counters ``<Coll>_size``, leaves ``<Coll>/<Coll>.<Field>``
  (the layout of ``rs3l generate``; read with reclustering);
* PFNano layout: tree ``Events``, counters ``n<Coll>``, leaves ``<Coll>_<field>``, with
  ``FatJet``, ``PFCands`` and the ``FatJetPFCands`` association (``pFCandsIdx``, ``jetIdx``).
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from rs3l_coffea.testing import sample_path


# ------------------------------------------------------------------------------ ROOT files
def truncated_root(directory: Path, sample: str = "delphes.root") -> Path:
    """A real sample cut in half (the header is intact, baskets and the key list are not)."""
    data = sample_path(sample).read_bytes()
    path = directory / f"truncated_{sample}"
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_byte_root(directory: Path) -> Path:
    """An empty file named ``.root``."""
    path = directory / "zero.root"
    path.write_bytes(b"")
    return path


def text_named_root(directory: Path) -> Path:
    """A text file named ``.root``."""
    path = directory / "not_root.root"
    path.write_text("this is not a ROOT file\n")
    return path


def wrong_tree_name(directory: Path) -> Path:
    """A valid PFNano-layout file whose tree is called ``Tree`` instead of ``Events``."""
    return pfnano_layout(directory / "wrong_tree.root", tree="Tree")


def _jagged(values: Sequence[float] | np.ndarray, counts: Sequence[int]) -> ak.Array:
    return ak.unflatten(np.asarray(values), np.asarray(counts, dtype=np.int64))


def pfnano_layout(
    path: Path,
    *,
    candidates: Mapping[str, Sequence[float]] | None = None,
    cand_counts: Sequence[int] = (3, 2, 0),
    jets: Mapping[str, Sequence[float]] | None = None,
    jet_counts: Sequence[int] = (1, 1, 0),
    assoc_cand: Sequence[int] | None = None,
    assoc_jet: Sequence[int] | None = None,
    assoc_counts: Sequence[int] | None = None,
    drop: Sequence[str] = (),
    tree: str = "Events",
    compression: str = "ZLIB",
) -> Path:
    """A small PFNano-layout file (``FatJet``, ``PFCands``, ``FatJetPFCands``).

    Default: 3 events; event 0 has one jet of 3 candidates, event 1 one jet of 2 candidates,
    event 2 nothing. ``candidates``/``jets`` override fields (flat values), ``drop`` removes
    whole fields given as ``"PFCands_eta"``-style branch names.
    """
    n_cands = int(np.sum(cand_counts))
    rng = np.random.default_rng(7)
    cand = {
        "pt": rng.uniform(10.0, 100.0, n_cands),
        "eta": rng.uniform(-0.2, 0.2, n_cands),
        "phi": rng.uniform(-0.2, 0.2, n_cands),
        "mass": np.full(n_cands, 0.1396),
        "pdgId": np.tile([211, -211, 22, 130, 11], n_cands)[:n_cands].astype(np.int32),
        "charge": np.tile([1, -1, 0, 0, -1], n_cands)[:n_cands].astype(np.int32),
        "d0": rng.normal(0.0, 0.01, n_cands),
        "dz": rng.normal(0.0, 0.01, n_cands),
    }
    cand.update({k: np.asarray(v) for k, v in (candidates or {}).items()})
    n_jets = int(np.sum(jet_counts))
    jet = {
        "pt": np.full(n_jets, 250.0),
        "eta": np.zeros(n_jets),
        "phi": np.zeros(n_jets),
        "mass": np.full(n_jets, 50.0),
    }
    jet.update({k: np.asarray(v) for k, v in (jets or {}).items()})
    if assoc_cand is None:
        # every candidate of an event belongs to the event's first jet (if it has one)
        assoc_counts = [c if j else 0 for c, j in zip(cand_counts, jet_counts, strict=True)]
        assoc_cand = np.concatenate([np.arange(c) for c in assoc_counts]) if n_cands else []
        assoc_jet = np.zeros(int(np.sum(assoc_counts)), dtype=np.int32)
    n_events = len(cand_counts)
    data: dict[str, ak.Array | np.ndarray] = {
        # NanoAOD schemas insist on the event-id branches.
        "run": np.ones(n_events, dtype=np.uint32),
        "luminosityBlock": np.ones(n_events, dtype=np.uint32),
        "event": np.arange(n_events, dtype=np.uint64),
        "PFCands": ak.zip({k: _jagged(v, cand_counts) for k, v in cand.items()}),
        "FatJet": ak.zip({k: _jagged(v, jet_counts) for k, v in jet.items()}),
        "FatJetPFCands": ak.zip(
            {
                "pFCandsIdx": _jagged(np.asarray(assoc_cand, dtype=np.int32), assoc_counts),
                "jetIdx": _jagged(np.asarray(assoc_jet, dtype=np.int32), assoc_counts),
            }
        ),
    }
    for branch in drop:
        collection, field = branch.split("_", 1)
        kept = {f: data[collection][f] for f in data[collection].fields if f != field}
        data[collection] = ak.zip(kept)
    import uproot

    with uproot.recreate(path, compression=getattr(uproot, compression)(1)) as handle:
        handle.mktree(
            tree,
            {
                name: array.dtype if isinstance(array, np.ndarray) else array.type.content
                for name, array in data.items()
            },
            counter_name=lambda collection: f"n{collection}",
            field_name=lambda collection, field: f"{collection}_{field}",
        )
        handle[tree].extend(data)
    return path


def delphes_layout(
    path: Path,
    *,
    tracks: Mapping[str, Sequence[float]] | None = None,
    track_counts: Sequence[int] = (4, 0),
    towers_per_event: Sequence[int] = (2, 0),
) -> Path:
    """A small Delphes-layout file (``rs3l generate`` layout: read by reclustering).

    Default: 2 events; event 0 has 4 tracks and 2 photons + 2 neutral hadrons near
    (eta, phi) = (0, 0), event 1 is empty. ``tracks`` overrides track fields (flat values).
    """
    import uproot

    n_tracks = int(np.sum(track_counts))
    track = {
        "PT": np.linspace(20.0, 50.0, n_tracks),
        "Eta": np.linspace(-0.1, 0.1, n_tracks),
        "Phi": np.linspace(-0.1, 0.1, n_tracks),
        "Mass": np.full(n_tracks, 0.1396),
        "Charge": np.tile([1, -1], n_tracks)[:n_tracks].astype(np.int32),
        "PID": np.tile([211, -211], n_tracks)[:n_tracks].astype(np.int32),
        "D0": np.zeros(n_tracks),
        "DZ": np.zeros(n_tracks),
    }
    track.update({k: np.asarray(v) for k, v in (tracks or {}).items()})
    n_towers = int(np.sum(towers_per_event))
    tower = {
        "ET": np.linspace(5.0, 15.0, n_towers),
        "Eta": np.linspace(0.05, 0.15, n_towers),
        "Phi": np.linspace(-0.05, 0.05, n_towers),
        "E": np.linspace(5.0, 15.0, n_towers),
    }
    towers = ak.zip({k: _jagged(v, towers_per_event) for k, v in tower.items()})
    data = {
        "EFlowTrack": ak.zip({k: _jagged(v, track_counts) for k, v in track.items()}),
        "EFlowPhoton": towers,
        "EFlowNeutralHadron": towers,
    }
    with uproot.recreate(path) as handle:
        handle.mktree(
            "Delphes",
            {name: array.type.content for name, array in data.items()},
            counter_name=lambda collection: f"{collection}_size",
            field_name=lambda collection, field: f"{collection}/{collection}.{field}",
        )
        handle["Delphes"].extend(data)
    return path


def delphes_sentinel_tracks(directory: Path) -> Path:
    """Delphes tracks with pT = 0 and eta = 999.9 (as real Delphes writes; fastjet segfaults on them)
    next to NaN/inf tracks and normal ones."""
    return delphes_layout(
        directory / "sentinel_tracks.root",
        tracks={
            "PT": [30.0, 0.0, 0.0, np.nan, np.inf, 25.0],
            "Eta": [0.0, 999.9, -999.9, 0.1, 0.0, 0.05],
            "Phi": [0.0, 0.0, 0.0, 0.0, np.nan, 0.02],
        },
        track_counts=(6, 0),
    )


def corrupt_basket(directory: Path, compression: str = "ZLIB") -> Path:
    """PFNano layout whose compressed ``PFCands_pt`` basket has 16 flipped bytes (the file
    opens; reading that basket fails its decompression checksum)."""
    import uproot

    path = pfnano_layout(
        directory / f"corrupt_{compression}.root", cand_counts=(300, 300, 0), compression=compression
    )
    with uproot.open(path) as handle:
        branch = handle["Events"]["PFCands_pt"]
        if branch.compressed_bytes >= branch.uncompressed_bytes:
            raise RuntimeError(f"{path}: PFCands_pt was stored uncompressed; cannot corrupt it")
        seek = int(branch.member("fBasketSeek")[0])
    data = bytearray(path.read_bytes())
    for position in range(seek + 1000, seek + 1016):
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def pfnano_nonfinite(directory: Path) -> Path:
    """PFNano layout with NaN/inf candidate kinematics and pT = 0 candidates.

    Event 0: 5 candidates, of which pT = NaN, eta = inf and pT = 0 are bad (2 good left);
    event 1: 2 good candidates; event 2: no jet.
    """
    return pfnano_layout(
        directory / "nonfinite.root",
        candidates={
            "pt": [40.0, np.nan, 30.0, 20.0, 0.0, 35.0, 15.0],
            "eta": [0.0, 0.1, np.inf, 0.1, 0.0, 0.05, -0.05],
            "phi": [0.0, 0.1, 0.0, -np.inf, 0.0, 0.0, 0.1],
        },
        cand_counts=(5, 2, 0),
    )


def pfnano_nan_jet(directory: Path) -> Path:
    """PFNano layout where the second jet has pT = NaN."""
    return pfnano_layout(directory / "nan_jet.root", jets={"pt": [250.0, np.nan]})


def pfnano_missing_branch(directory: Path, branch: str = "PFCands_eta") -> Path:
    """PFNano layout without one candidate branch."""
    return pfnano_layout(directory / f"no_{branch}.root", drop=(branch,))


def pfnano_bad_association(directory: Path) -> Path:
    """PFNano layout whose ``FatJetPFCands_pFCandsIdx`` points past the event's candidates."""
    return pfnano_layout(
        directory / "bad_association.root",
        assoc_cand=[0, 1, 7, 0, 1],
        assoc_jet=[0, 0, 0, 0, 0],
        assoc_counts=(3, 2, 0),
    )


def pfnano_multiplicities(directory: Path, counts: Sequence[int] = (0, 150, 1)) -> Path:
    """PFNano layout with one jet per event holding ``counts[i]`` candidates (0 and > 100)."""
    return pfnano_layout(
        directory / "multiplicities.root",
        cand_counts=counts,
        jet_counts=(1,) * len(counts),
    )


def no_jets(directory: Path) -> Path:
    """PFNano layout with candidates but not a single jet."""
    return pfnano_layout(directory / "no_jets.root", jet_counts=(0, 0, 0))


# ------------------------------------------------------------------------------ models
class MarkerPayload:
    """Unpickling this object runs ``open(marker, "w")``: proof that a loader unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def malicious_pickle(path: Path, marker: Path, wrap: str = "plain") -> Path:
    """A pickle that creates ``marker`` when unpickled.

    ``wrap="plain"``: raw ``pickle.dumps``; ``"torch"``: a ``torch.save`` zip archive holding
    ``{"model": {...payload...}}`` (the published-checkpoint layout).
    """
    payload = {"model": {"pf_encode.0.weight": MarkerPayload(marker)}}
    if wrap == "torch":
        import torch

        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def truncated_copy(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def renamed_file(source: Path, path: Path) -> Path:
    """``source`` copied to ``path`` (e.g. a ROOT file named ``.safetensors``)."""
    shutil.copyfile(source, path)
    return path


def edited_card(card_path: Path, edit: Mapping[str, object]) -> Path:
    """Apply ``edit`` (dotted keys, e.g. ``"config.backbone.k": -3``) to a model card in place."""
    card = json.loads(card_path.read_text())
    for dotted, value in edit.items():
        *parents, leaf = dotted.split(".")
        node = card
        for key in parents:
            node = node[key]
        node[leaf] = value
    card_path.write_text(json.dumps(card))
    return card_path
