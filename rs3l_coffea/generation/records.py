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

from dataclasses import dataclass

import awkward as ak
import numpy as np

from rs3l_coffea.detector.columns import JaggedColumns, offsets_from_counts
from rs3l_coffea.detector.simulate import FinalStateParticles
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


def _typed(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stored Particle columns in order, int32 or float32 as written."""
    return {
        name: np.asarray(columns[name]).astype(np.int32 if name in _INT_FIELDS else np.float32)
        for name in PARTICLE_FIELDS
    }


def hard_block(hard: HardEvents, beam_energy: float, charges: ChargeTable) -> JaggedColumns:
    """The hard block (beams + hard process) of every event, as typed Particle columns."""
    n_hard = np.array([len(rows) for rows in hard.particles], dtype=np.int64)
    rows = np.concatenate(hard.particles, axis=0)
    n_events = len(hard)
    counts = n_hard + 2
    # Interleave two beam rows before each event's hard rows.
    beam_pz = np.tile([beam_energy, -beam_energy], n_events)
    beam_mass = 0.93827
    beam_e = np.hypot(beam_pz, beam_mass)
    total = int(counts.sum())
    starts = offsets_from_counts(counts)[:-1]
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
    return JaggedColumns(counts, _typed(columns))


def is_heavy_flavour_hadron(abs_pid: np.ndarray) -> np.ndarray:
    """True for hadrons containing a b or c quark (PDG numbering scheme)."""
    hadron = (abs_pid >= 100) & ((abs_pid // 10) % 10 != 0) & (abs_pid < 1_000_000)
    q_heavy = lambda digit: (digit == 4) | (digit == 5)  # noqa: E731
    return hadron & (q_heavy((abs_pid // 100) % 10) | q_heavy((abs_pid // 1000) % 10))




@dataclass
class ShoweredParticles:
    """Flat numpy views of the particles of one ``nextBatch(n, "none")`` batch.

    ``valid[i]`` is False for events Pythia failed (None entries); ``counts`` and the columns
    cover the valid events only, in order. ``vertex_index[j]`` is the row of particle ``j`` in
    ``vertex`` (x, y, z columns), -1 for production at the origin.
    """

    valid: np.ndarray
    counts: np.ndarray
    status: np.ndarray
    pid: np.ndarray
    mother1: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    m: np.ndarray
    vertex_index: np.ndarray
    vertex: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def from_batch(cls, batch: ak.Array) -> ShoweredParticles:
        """Read the buffers of the layout ``nextBatch`` builds; no awkward operation on the data.

        Going through ``ak.flatten`` and field access instead costs ~10 us per event (batches
        of 500), a noticeable part of the time outside Pythia.
        """
        layout = ak.to_layout(batch)
        if isinstance(layout, ak.contents.IndexedOptionArray):
            index = np.asarray(layout.index)
            valid = index >= 0
            events = layout.content
            if not np.array_equal(index[valid], np.arange(int(valid.sum()))):
                events = ak.to_layout(ak.to_packed(ak.Array(events)[index[valid]]))
        else:
            valid = np.ones(len(layout), bool)
            events = layout
        prt = events.content("prt").to_ListOffsetArray64(True)
        offsets = np.asarray(prt.offsets)
        n = int(offsets[-1])
        records = prt.content

        def field(parent: ak.contents.Content, name: str) -> np.ndarray:
            content = parent.content(name)
            if not isinstance(content, ak.contents.NumpyArray):
                raise RS3LError(
                    f"unexpected nextBatch layout for {name!r}: {type(content).__name__} "
                    "(pythia8mc changed its awkward output?)"
                )
            return np.asarray(content.data)[:n]

        momentum = records.content("p")
        vertices = records.content("vProd")
        if not isinstance(vertices, ak.contents.IndexedOptionArray):
            vertices = vertices.to_IndexedOptionArray64()
        vertex_content = vertices.content
        n_vertices = len(vertex_content)
        return cls(
            valid=valid,
            counts=np.diff(offsets),
            status=field(records, "status"),
            pid=field(records, "id"),
            mother1=field(records, "mother1"),
            px=field(momentum, "px"),
            py=field(momentum, "py"),
            pz=field(momentum, "pz"),
            e=field(momentum, "e"),
            m=field(records, "m"),
            vertex_index=np.asarray(vertices.index)[:n],
            vertex=(
                np.asarray(vertex_content.content("px").data)[:n_vertices],
                np.asarray(vertex_content.content("py").data)[:n_vertices],
                np.asarray(vertex_content.content("pz").data)[:n_vertices],
            ),
        )

    def parton_level_sizes(self) -> np.ndarray:
        """Size of each event's record after the parton level, -1 for failed events.

        Hadronization starts by appending copies of the partons it fragments (status 71-79),
        so the parton level ends at the first entry with |status| >= 71 (the whole event if
        there is none). Checked equal to ``event.size()`` in ``UserHooks.doVetoPartonLevel``
        for 12,000 events of every process and shower (tests compare a sample).
        """
        offsets = offsets_from_counts(self.counts)
        hadronization = np.flatnonzero(np.abs(self.status) >= 71)
        position = np.searchsorted(hadronization, offsets[:-1])
        first = np.append(hadronization, offsets[-1])[position]
        sizes = np.minimum(first, offsets[1:]) - offsets[:-1]
        out = np.full(len(self.valid), -1, np.int64)
        out[self.valid] = sizes
        return out

    def vertex_of(self, rows: np.ndarray) -> list[np.ndarray]:
        """x, y, z of the production vertices of particles ``rows`` (0 at the origin)."""
        index = self.vertex_index[rows]
        present = np.flatnonzero(index >= 0)
        columns = []
        for values in self.vertex:
            column = np.zeros(len(rows))
            column[present] = values[index[present]]
            columns.append(column)
        return columns


def _nearest_stored_ancestor(parent: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """For every entry, the nearest stored entry at or above it along ``parent`` (-1: none).

    ``parent`` holds flat indices (-1 at the top). Pointer doubling: each pass replaces every
    entry's pointer by its pointer's pointer, so chains of length L (tens of shower steps)
    need log2(L) passes over the whole batch instead of L passes.
    """
    n = len(parent)
    sentinel = n  # "no stored ancestor": points to itself
    up = np.where(stored, np.arange(n), np.where(parent >= 0, parent, sentinel))
    up = np.append(up, sentinel)
    while True:
        jumped = up[up]
        if np.array_equal(jumped, up):
            break
        up = jumped
    return np.where(up[:n] == sentinel, -1, up[:n])


def showered_records(
    particles: ShoweredParticles, hard: JaggedColumns, charges: ChargeTable
) -> tuple[JaggedColumns, FinalStateParticles]:
    """Prune a showered batch and attach it to its hard block (``hard``: the batch's events).

    Returns the Particle columns and the final-state particles for the detector, both for
    every event of the batch; an event Pythia failed keeps its hard block and has no
    final-state particles.
    """
    n_events = len(hard)
    if len(particles.valid) != n_events:
        raise RS3LError(f"{len(particles.valid)} showered events for {n_events} hard events")
    counts = particles.counts
    offsets = offsets_from_counts(counts)
    valid_event = np.repeat(np.arange(len(counts)), counts)  # index among the valid events
    event = np.flatnonzero(particles.valid)[valid_event]  # index among the batch's events
    status = particles.status
    pid = particles.pid
    abs_status = np.abs(status)
    is_hard = ((abs_status >= 21) & (abs_status <= 23)) | (status == -12)
    keep = status > 0
    candidate = np.flatnonzero(~keep & ~is_hard)  # decayed/intermediate: keep b/c hadrons only
    candidate_pid = np.abs(pid[candidate])
    maybe_heavy = candidate[candidate_pid > 400]  # lightest b/c hadron: D+ (411)
    keep[maybe_heavy] = is_heavy_flavour_hadron(np.abs(pid[maybe_heavy]))

    # Match the event record's copies of the hard process to the hard block. Resonance decays
    # may come in another order (Vincia), so match by (event, PDG id), stable in record order:
    # equal ids only occur for a hard outgoing parton and a resonance daughter, whose relative
    # order both records share. Failed events have no record entries and are not checked.
    record_hard = np.flatnonzero(is_hard)
    n_hard_record = np.bincount(event[record_hard], minlength=n_events)
    hard_counts = hard.counts
    hard_offsets = hard.offsets
    hard_event = np.repeat(np.arange(n_events), hard_counts)
    hard_local = np.arange(int(hard_offsets[-1])) - hard_offsets[hard_event]
    hard_pid = hard.columns["PID"].astype(np.int64)
    checked = particles.valid[hard_event]
    key_record = event[record_hard] * 100_000_000 + pid[record_hard]
    key_block = (hard_event * 100_000_000 + hard_pid)[checked]
    order_record = np.argsort(key_record, kind="stable")
    order_block = np.argsort(key_block, kind="stable")
    if not (
        np.array_equal(n_hard_record[particles.valid], hard_counts[particles.valid])
        and np.array_equal(key_record[order_record], key_block[order_block])
    ):
        raise RS3LError("showered event record does not contain the hard process it was fed")

    new_index = np.full(len(status), -1, np.int64)
    new_index[record_hard[order_record]] = hard_local[checked][order_block]
    kept = np.flatnonzero(keep)
    kept_event = event[kept]
    # Rank among the event's kept entries = position in ``kept`` minus that of the event's
    # first kept entry (``kept`` is sorted; 3x cheaper than a cumsum over every entry).
    first_kept = np.searchsorted(kept, offsets[:-1])
    new_index[kept] = hard_counts[kept_event] + np.arange(kept.size) - first_kept[valid_event[kept]]

    # M1: nearest stored ancestor along the first-mother chain (mother1 = 0 is the system).
    mother1 = particles.mother1
    parent = np.where(mother1 > 0, mother1 + offsets[valid_event], -1)
    stored_above = _nearest_stored_ancestor(parent, new_index >= 0)
    kept_parent = parent[kept]
    ancestor = np.where(kept_parent >= 0, stored_above[np.maximum(kept_parent, 0)], -1)
    m1 = np.where(ancestor >= 0, new_index[np.maximum(ancestor, 0)], -1)

    px, py, pz = particles.px[kept], particles.py[kept], particles.pz[kept]
    e, m = particles.e[kept], particles.m[kept]
    vx, vy, vz = particles.vertex_of(kept)
    kept_pid = pid[kept]
    charge = charges(kept_pid)
    kept_status = status[kept]
    columns = {
        "PID": kept_pid,
        "Status": np.where(kept_status > 0, 1, 2),
        "M1": m1,
        "M2": np.full(kept.size, -1),
        "Charge": np.trunc(charge),
        "X": vx, "Y": vy, "Z": vz,
    }
    columns.update(_kinematics(px, py, pz, e, m))
    # Per event: hard block, then the kept entries. Interleave flat columns once.
    kept_counts = np.bincount(kept_event, minlength=n_events)
    out_counts = hard_counts + kept_counts
    out_offsets = offsets_from_counts(out_counts)
    # Both sets of positions increase along their columns, so boolean masks place them
    # (about twice as fast as assigning through the position arrays, for 16 columns).
    kept_slot = np.zeros(int(out_offsets[-1]), bool)
    kept_slot[out_offsets[kept_event] + new_index[kept]] = True
    hard_slot = ~kept_slot
    merged = {}
    for name in PARTICLE_FIELDS:
        column = np.empty(kept_slot.size, np.int32 if name in _INT_FIELDS else np.float32)
        column[hard_slot] = hard.columns[name]
        column[kept_slot] = columns[name]
        merged[name] = column

    final = np.flatnonzero(kept_status > 0)
    final_state = FinalStateParticles(
        counts=np.bincount(kept_event[final], minlength=n_events),
        pid=kept_pid[final], charge=charge[final],
        px=px[final], py=py[final], pz=pz[final], e=e[final], mass=m[final],
        vx=vx[final], vy=vy[final], vz=vz[final], index=new_index[kept][final],
        pt=columns["PT"][final], eta=columns["Eta"][final], phi=columns["Phi"][final],
    )
    return JaggedColumns(out_counts, merged), final_state
