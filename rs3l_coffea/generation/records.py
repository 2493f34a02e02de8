"""Turn Pythia records into the stored (pruned) ``Particle`` record and detector input.

Stored ``Particle`` record of each event, in this order:

1. the *hard block*, identical in every variant file of a hard event: the two beam protons
   (Status 4), then the hard process exactly as handed to the shower (Status 21 incoming,
   22 intermediate resonance such as H/Z/W, 23 outgoing, incl. resonance decay products);
   M1/M2 are mothers within this block (-1 for none);
2. after it, from the showered event record: every final-state particle (Status 1) and every
   b- or c-flavoured hadron (Status 2 if it decayed, 1 if stable), in event-record order.
   Their M1 is the *nearest stored ancestor* along Pythia's first-mother chain (e.g. the B
   hadron a pion came from, else a hard-block entry or a beam), M2 = -1.

Kinematics are float32 in GeV (PT, Eta, Phi, Mass, E, Px, Py, Pz), the production vertex
X, Y, Z in mm; Eta = +-999.9 where PT = 0 (beams), as Delphes does. Charge is the integer part
of the electric charge (quarks: 0), as Delphes' ``GenParticle.Charge``.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from rs3l_coffea.detector.simulate import FinalStateParticles, jagged_record
from rs3l_coffea.errors import RS3LError
from rs3l_coffea.generation.pythia import ChargeTable, HardEvents

PARTICLE_FIELDS = (
    "PID", "Status", "M1", "M2", "Charge",
    "PT", "Eta", "Phi", "Mass", "E", "Px", "Py", "Pz", "X", "Y", "Z",
)
_INT_FIELDS = {"PID", "Status", "M1", "M2", "Charge"}


def _kinematics(px, py, pz, e, m) -> dict[str, np.ndarray]:
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.copysign(999.9, pz))
    return {
        "PT": pt, "Eta": eta, "Phi": np.arctan2(py, px), "Mass": m, "E": e,
        "Px": px, "Py": py, "Pz": pz,
    }


def _as_record(columns: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    typed = {
        name: np.asarray(columns[name]).astype(np.int32 if name in _INT_FIELDS else np.float32)
        for name in PARTICLE_FIELDS
    }
    return jagged_record(typed, counts)


def hard_block(hard: HardEvents, beam_energy: float, charges: ChargeTable) -> ak.Array:
    """The hard block (beams + hard process) of every event, as a jagged Particle record."""
    n_hard = np.array([len(rows) for rows in hard.particles], dtype=np.int64)
    rows = np.concatenate(hard.particles, axis=0)
    n_events = len(hard)
    counts = n_hard + 2
    # Interleave two beam rows before each event's hard rows.
    beam_pz = np.tile([beam_energy, -beam_energy], n_events)
    beam_mass = 0.93827
    beam_e = np.hypot(beam_pz, beam_mass)
    total = int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    is_beam = np.zeros(total, bool)
    is_beam[starts] = True
    is_beam[starts + 1] = True

    def fill(beam_values, row_values, dtype=np.float64):
        out = np.empty(total, dtype)
        out[is_beam] = beam_values
        out[~is_beam] = row_values
        return out

    status_p = rows[:, 1].astype(np.int64)
    # Pythia process index j (>=3) is stored at block index j - 1 (beams 1, 2 -> 0, 1).
    def mother(col):
        m = rows[:, col].astype(np.int64)
        return np.where(m > 0, m - 1, -1)

    pid = fill(2212, rows[:, 0].astype(np.int64), np.int64)
    columns = {
        "PID": pid,
        "Status": fill(4, np.abs(status_p), np.int64),
        "M1": fill(-1, mother(2), np.int64),
        "M2": fill(-1, np.where(rows[:, 3] > 0, mother(3), -1), np.int64),
        "X": np.zeros(total), "Y": np.zeros(total), "Z": np.zeros(total),
    }
    columns.update(
        _kinematics(
            fill(0.0, rows[:, 6]), fill(0.0, rows[:, 7]), fill(beam_pz, rows[:, 8]),
            fill(beam_e, rows[:, 9]), fill(beam_mass, rows[:, 10]),
        )
    )
    columns["Charge"] = np.trunc(charges(pid)).astype(np.int64)
    return _as_record(columns, counts)


def is_heavy_flavour_hadron(abs_pid: np.ndarray) -> np.ndarray:
    """True for hadrons containing a b or c quark (PDG numbering scheme)."""
    hadron = (abs_pid >= 100) & ((abs_pid // 10) % 10 != 0) & (abs_pid < 1_000_000)
    q_heavy = lambda digit: (digit == 4) | (digit == 5)  # noqa: E731
    return hadron & (q_heavy((abs_pid // 100) % 10) | q_heavy((abs_pid // 1000) % 10))


def _vertex_columns(vertex: ak.Array) -> list[np.ndarray]:
    """x, y, z of nextBatch production vertices (``?Momentum4D``), 0 where None (origin)."""
    layout = ak.to_layout(vertex)
    if isinstance(layout, ak.contents.IndexedOptionArray):
        # One gather through the option index: ~3x faster than ak.fill_none per coordinate.
        index = np.asarray(layout.index)
        present = index >= 0
        content = ak.Array(layout.content)
        columns = []
        for field in ("px", "py", "pz"):
            column = np.zeros(len(index))
            column[present] = ak.to_numpy(content[field])[index[present]]
            columns.append(column)
        return columns
    return [np.ma.filled(ak.to_numpy(vertex[field], allow_missing=True), 0.0).astype(np.float64)
            for field in ("px", "py", "pz")]


def showered_records(
    prt: ak.Array, hard: ak.Array, charges: ChargeTable
) -> tuple[ak.Array, FinalStateParticles, np.ndarray]:
    """Prune showered events (nextBatch ``prt``, no None) and attach them to their hard block.

    Returns (Particle record, final-state particles for the detector, event-record sizes).
    """
    counts = ak.to_numpy(ak.num(prt)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    event = np.repeat(np.arange(len(counts)), counts)
    flat = ak.flatten(prt)
    status = ak.to_numpy(flat.status).astype(np.int64)
    pid = ak.to_numpy(flat.id).astype(np.int64)
    mother1 = ak.to_numpy(flat.mother1).astype(np.int64)
    abs_status = np.abs(status)
    is_hard = ((abs_status >= 21) & (abs_status <= 23)) | (status == -12)
    keep = status > 0
    candidate = np.flatnonzero(~keep & ~is_hard)  # decayed/intermediate: keep b/c hadrons only
    keep[candidate] = is_heavy_flavour_hadron(np.abs(pid[candidate]).astype(np.int32))

    # Match the event record's copies of the hard process to the hard block. Resonance decays
    # may come in another order (Vincia), so match by (event, PDG id), stable in record order:
    # equal ids only occur for a hard outgoing parton and a resonance daughter, whose relative
    # order both records share.
    n_hard = np.bincount(event[is_hard], minlength=len(counts))
    hard_counts = ak.to_numpy(ak.num(hard)).astype(np.int64)
    hard_flat = ak.flatten(hard)  # once: flattening field by field costs ~2.5x more
    hard_pid = ak.to_numpy(hard_flat.PID).astype(np.int64)
    hard_event = np.repeat(np.arange(len(counts)), hard_counts)
    hard_local = np.arange(hard_pid.size) - np.concatenate([[0], np.cumsum(hard_counts)])[hard_event]
    record_hard = np.flatnonzero(is_hard)
    key_record = event[record_hard] * 100_000_000 + pid[record_hard]
    key_block = hard_event * 100_000_000 + hard_pid
    order_record = np.argsort(key_record, kind="stable")
    order_block = np.argsort(key_block, kind="stable")
    if not (
        np.array_equal(n_hard, hard_counts)
        and np.array_equal(key_record[order_record], key_block[order_block])
    ):
        raise RS3LError("showered event record does not contain the hard process it was fed")

    new_index = np.full(len(status), -1, np.int64)
    new_index[record_hard[order_record]] = hard_local[order_block]
    kept = np.flatnonzero(keep)
    kept_event = event[kept]
    # Rank among the event's kept entries = position in ``kept`` minus that of the event's
    # first kept entry (``kept`` is sorted; 3x cheaper than a cumsum over every entry).
    first_kept = np.searchsorted(kept, offsets[:-1])
    new_index[kept] = n_hard[kept_event] + np.arange(kept.size) - first_kept[kept_event]

    # Nearest stored ancestor along the first-mother chain (vectorized pointer jumping).
    # Only the kept shower entries need it (the hard block has its own mothers).
    ancestor = np.where(mother1 > 0, mother1 + offsets[event], -1)
    pending = np.flatnonzero(keep & (ancestor >= 0))
    while pending.size:
        pending = pending[new_index[ancestor[pending]] < 0]
        nxt = mother1[ancestor[pending]]
        ancestor[pending] = np.where(nxt > 0, nxt + offsets[event[pending]], -1)
        pending = pending[ancestor[pending] >= 0]
    m1 = np.where(ancestor >= 0, new_index[np.maximum(ancestor, 0)], -1)

    p = flat.p
    px = ak.to_numpy(p.px)[kept]
    py = ak.to_numpy(p.py)[kept]
    pz = ak.to_numpy(p.pz)[kept]
    e = ak.to_numpy(p.e)[kept]
    m = ak.to_numpy(flat.m)[kept]
    vx, vy, vz = (column[kept] for column in _vertex_columns(flat.vProd))
    charge = charges(pid[kept])
    columns = {
        "PID": pid[kept],
        "Status": np.where(status[kept] > 0, 1, 2),
        "M1": m1[kept],
        "M2": np.full(kept.size, -1),
        "Charge": np.trunc(charge),
        "X": vx, "Y": vy, "Z": vz,
    }
    columns.update(_kinematics(px, py, pz, e, m))
    # Per event: hard block, then the kept entries. Interleave flat columns and unflatten once
    # (cheaper than ak.concatenate(axis=1) of two jagged records).
    kept_counts = np.bincount(kept_event, minlength=len(counts))
    out_counts = hard_counts + kept_counts
    out_offsets = np.concatenate([[0], np.cumsum(out_counts)])
    hard_position = out_offsets[hard_event] + hard_local
    kept_position = out_offsets[kept_event] + new_index[kept]
    merged = {}
    for name in PARTICLE_FIELDS:
        dtype = np.int32 if name in _INT_FIELDS else np.float32
        column = np.empty(int(out_offsets[-1]), dtype)
        column[hard_position] = ak.to_numpy(hard_flat[name])
        column[kept_position] = columns[name]
        merged[name] = column
    record = jagged_record(merged, out_counts)

    final = status[kept] > 0
    final_counts = np.bincount(kept_event[final], minlength=len(counts))
    particles = FinalStateParticles(
        counts=final_counts, pid=pid[kept][final], charge=charge[final],
        px=px[final], py=py[final], pz=pz[final], e=e[final], mass=m[final],
        vx=vx[final], vy=vy[final], vz=vz[final], index=new_index[kept][final],
    )
    return record, particles, counts
