"""Pythia8 side of the re-simulation: hard process once, then one shower instance per variant.

The hard process (pTHat 400-600 GeV, mass windows, optional |eta| window on the boson/parton)
is generated once with ``PartonLevel:all = off`` and ``HadronLevel:all = off``, kept in memory
as plain arrays, and fed to every variant's Pythia instance through :class:`HardProcessFeed`,
an in-memory ``LHAup`` (``Beams:frameType = 5``). Each variant instance is seeded with its
chunk's seed (``rndm.init`` right after ``init()``); initialised instances are kept per thread
and reused, reseeded, for the next chunk with the same settings. The nominal instance records its random state at the start
of every event (a user hook, attached only when ``rehadronize`` is requested: a Python
``UserHooks`` costs ~30-60 us per event in virtual-call overhead, without changing the
events); ``rehadronize`` uses the nominal settings, restores that state at
each event start, so its parton shower is exactly the nominal one, and switches to its own
random stream once the parton level is complete (``doVetoPartonLevel``), so hadronization and
decays differ (the Rieck et al. "same shower, new hadronization" pairs).

``pythia8mc`` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea.errors import RS3LError

HARD_COLUMNS = ("id", "status", "mother1", "mother2", "col", "acol", "px", "py", "pz", "e", "m")
_QUIET = ("Next:numberCount = 0", "Print:quiet = on", "Print:verbosity = 0",
          "Init:showChangedSettings = off",
          "Init:showProcesses = off", "Init:showChangedParticleData = off")


@dataclass
class HardEvents:
    """Hard-process records (like Pythia ``process`` entries 3.., without system and beams).

    ``particles[i]`` is an ``(n_i, 11)`` float64 array with columns :data:`HARD_COLUMNS`
    (indices in ``mother1``/``mother2`` refer to the Pythia process record, beams = 1, 2).
    """

    particles: list[np.ndarray]
    scale: np.ndarray
    alpha_em: np.ndarray
    alpha_s: np.ndarray

    def __len__(self) -> int:
        return len(self.particles)

    def lhe_particles(self, k: int) -> list[tuple]:
        """``LHAup.addParticle`` arguments of event ``k`` (converted once, shared by variants)."""
        cache = self.__dict__.get("_lhe_cache")
        if cache is None:  # convert every event at once: one numpy pass, one tolist()
            cache = self.__dict__["_lhe_cache"] = self._lhe_table()
        return cache[k]

    def _lhe_table(self) -> list[list[tuple]]:
        if not self.particles:
            return []
        rows = np.concatenate(self.particles, axis=0)
        sizes = [len(event) for event in self.particles]
        status = rows[:, 1]
        # Les Houches status: -1 incoming, 2 intermediate resonance, 1 outgoing; Les Houches
        # indices start at 1 for the first incoming parton (Pythia index 3).
        lhe_status = np.where(status == -21, -1, np.where(status < 0, 2, 1))
        scale = np.repeat(np.asarray(self.scale, np.float64), sizes)
        integers = np.stack(
            [rows[:, 0], lhe_status, np.maximum(rows[:, 2] - 2, 0), np.maximum(rows[:, 3] - 2, 0),
             rows[:, 4], rows[:, 5]], axis=1,
        ).astype(np.int64).tolist()
        floats = np.column_stack([rows[:, 6:11], np.zeros(len(rows)), np.full(len(rows), 9.0),
                                  scale]).tolist()
        table = [(*i, *f) for i, f in zip(integers, floats, strict=True)]
        starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        return [table[a:b] for a, b in itertools.pairwise(starts)]


def pythia_version() -> str:
    """Version of the installed pythia8mc wheel."""
    from importlib.metadata import version

    return version("pythia8mc")


_PRISTINE: list[Any] = []  # per process: one never-modified instance, the settings template


def _new_pythia(settings: list[str]) -> Any:
    import pythia8mc

    # Reading the XML settings and particle database costs ~70 ms per instance (one hard-process
    # and one per variant in every chunk); copying them from a pristine instance costs ~2 ms.
    # The template is never configured or initialised, so every copy starts from the defaults.
    if not _PRISTINE:
        _PRISTINE.append(pythia8mc.Pythia("", False))
    template = _PRISTINE[0]
    pythia = pythia8mc.Pythia(template.settings, template.particleData, False)
    for line in settings:
        if not pythia.readString(line):
            raise RS3LError(f"Pythia rejected the setting {line!r}")
    return pythia


def hard_settings(process_settings: tuple[str, ...], seed: int) -> list[str]:
    """Settings of the hard-process instance: no showers, MPI, primordial kT or hadronization.

    The parton level stays on only so that resonances are decayed and the event record (read
    in bulk by ``nextBatch``) holds the hard process; without showers, MPI and primordial kT
    it leaves the hard-process kinematics untouched.
    """
    return [
        *_QUIET,
        *process_settings,
        "PartonLevel:ISR = off",
        "PartonLevel:FSR = off",
        "PartonLevel:MPI = off",
        "BeamRemnants:primordialKT = off",
        "HadronLevel:all = off",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
    ]


def _hard_rows(batch: ak.Array) -> tuple[list[np.ndarray], np.ndarray]:
    """Hard-process rows (:data:`HARD_COLUMNS`) of each event of a shower-less ``nextBatch``.

    Hard entries are those with |status| 21-23, renumbered 3, 4, ... in record order (as in a
    Pythia process record); incoming partons get beam mothers 1, 2; every other entry's
    mother is its nearest hard ancestor (resonance daughters hang below bookkeeping copies of
    their resonance in the event record). Also returns the shower starting scale sqrt(Q2Fac).
    """
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    event = np.repeat(np.arange(len(counts)), counts)
    flat = ak.flatten(prt)
    status = ak.to_numpy(flat.status).astype(np.int64)
    mother1 = ak.to_numpy(flat.mother1).astype(np.int64)
    mother2 = ak.to_numpy(flat.mother2).astype(np.int64)
    hard = (np.abs(status) >= 21) & (np.abs(status) <= 23)
    rank = np.cumsum(hard) - 1
    rank = rank - np.concatenate([[0], np.cumsum(hard)])[offsets[:-1]][event]
    new_index = np.where(hard, rank + 3, 0)  # process-record numbering: 3, 4, ...

    ancestor = np.where(mother1 > 0, mother1 + offsets[event], -1)
    pending = np.flatnonzero(hard & (ancestor >= 0))
    while pending.size:
        pending = pending[~hard[ancestor[pending]]]
        nxt = mother1[ancestor[pending]]
        ancestor[pending] = np.where(nxt > 0, nxt + offsets[event[pending]], -1)
        pending = pending[ancestor[pending] >= 0]
    m1 = np.where(ancestor >= 0, new_index[np.maximum(ancestor, 0)], 0)
    direct2 = np.where(mother2 > 0, mother2 + offsets[event], 0)
    m2 = np.where((mother2 > 0) & hard[direct2], new_index[direct2], 0)
    incoming = status == -21
    m1 = np.where(incoming, rank + 1, m1)  # first incoming from beam 1, second from beam 2
    m2 = np.where(incoming, 0, m2)

    p = flat.p
    columns = [
        ak.to_numpy(flat.id), np.where(status == -23, 23, status), m1, m2,
        ak.to_numpy(flat.col), ak.to_numpy(flat.acol),
        ak.to_numpy(p.px), ak.to_numpy(p.py), ak.to_numpy(p.pz), ak.to_numpy(p.e),
        ak.to_numpy(flat.m),
    ]
    rows = np.stack([np.asarray(c, np.float64)[hard] for c in columns], axis=1)
    ends = np.cumsum(np.bincount(event[hard], minlength=len(counts))).tolist()
    per_event = [rows[a:b] for a, b in itertools.pairwise([0, *ends])]  # views
    scale = np.sqrt(ak.to_numpy(batch.info.Q2Fac))
    return per_event, scale


def generate_hard_events(
    process_settings: tuple[str, ...],
    target_ids: tuple[int, ...],
    n_events: int,
    seed: int,
    eta_max: float | None = None,
    max_tries_per_event: int = 10_000,
) -> HardEvents:
    """Generate ``n_events`` hard processes; reject those whose target fails ``|eta| < eta_max``.

    The target is the first outgoing entry (status 22 or 23) whose |PDG id| is in
    ``target_ids``: the boson for zh_bb/wz_qq/wj_qq, the recoiling parton for zj. The window
    is applied here, before any showering, so no shower time is spent on rejected events.
    """
    pythia = _new_pythia(hard_settings(process_settings, seed))
    if not pythia.init():
        raise RS3LError("Pythia failed to initialise the hard process")
    targets = np.asarray(target_ids)
    particles: list[np.ndarray] = []
    scales, alpha_em, alpha_s = [], [], []
    tries = 0
    while len(particles) < n_events:
        need = n_events - len(particles)
        tries += need
        if tries > max_tries_per_event * n_events:
            raise RS3LError(
                f"hard-process |eta| window {eta_max} accepts too few events "
                f"({len(particles)} of {tries} tries)"
            )
        batch = pythia.nextBatch(min(need if eta_max is None else 2 * need, 2000), "none")
        batch = ak.drop_none(batch, axis=0)
        rows, scale = _hard_rows(batch)
        batch_alpha_em = ak.to_numpy(batch.info.alphaEM)
        batch_alpha_s = ak.to_numpy(batch.info.alphaS)
        for k, event_rows in enumerate(rows):
            if eta_max is not None:
                outgoing = np.isin(event_rows[:, 1], (-22, 23)) & np.isin(
                    np.abs(event_rows[:, 0]), targets
                )
                if not outgoing.any():
                    raise RS3LError(f"hard process has no particle with |PDG id| in {target_ids}")
                px, py, pz = event_rows[outgoing][0, 6:9]
                if abs(np.arcsinh(pz / np.hypot(px, py))) >= eta_max:
                    continue
            if len(particles) == n_events:
                break
            particles.append(event_rows)
            scales.append(scale[k])
            alpha_em.append(batch_alpha_em[k])
            alpha_s.append(batch_alpha_s[k])
    return HardEvents(particles, np.asarray(scales), np.asarray(alpha_em), np.asarray(alpha_s))


def _make_feed_class() -> type:
    import pythia8mc

    class HardProcessFeed(pythia8mc.LHAup):
        """In-memory Les Houches feed handing out the stored hard events in order."""

        def __init__(self, hard: HardEvents, beam_energy: float) -> None:
            super().__init__(3)
            self.hard = hard
            self.beam_energy = beam_energy
            self.next_index = 0

        def restart(self, hard: HardEvents) -> None:
            """Hand out ``hard`` from its first event on (the beams must not change)."""
            self.hard = hard
            self.next_index = 0

        def setInit(self) -> bool:
            self.setBeamA(2212, self.beam_energy)
            self.setBeamB(2212, self.beam_energy)
            self.setStrategy(3)  # unweighted events
            self.addProcess(9999, 1.0, 0.0, 1.0)
            return True

        def setEvent(self, process_id: int = 0) -> bool:
            if self.next_index >= len(self.hard):
                return False
            k = self.next_index
            self.next_index += 1
            scale = float(self.hard.scale[k])
            self.setProcess(9999, 1.0, scale, float(self.hard.alpha_em[k]),
                            float(self.hard.alpha_s[k]))
            for arguments in self.hard.lhe_particles(k):
                self.addParticle(*arguments)
            return True

    return HardProcessFeed


def _make_hook_class() -> type:
    import pythia8mc

    class SeedHook(pythia8mc.UserHooks):
        """Records (nominal) or replays (rehadronize) the random state at each event start.

        ``replay`` maps hard-event index -> random state recorded at the start of that event in
        the nominal instance. When given, every event starts from the nominal state (so the
        parton shower is the nominal one); once the parton level is done the generator switches
        to a separate hadronization stream, continued from event to event.
        """

        def __init__(self, rndm: Any, feed: Any, replay: dict[int, Any] | None,
                     hadronization_seed: int | None) -> None:
            super().__init__()
            self.rndm = rndm
            self.feed = feed
            self.restart(replay, hadronization_seed)

        def restart(self, replay: dict[int, Any] | None, hadronization_seed: int | None) -> None:
            """Forget the previous run; new dicts, so callers may keep the old ones."""
            if replay is not None and hadronization_seed is None:
                raise RS3LError("replaying a shower needs a hadronization seed")
            self.replay = replay
            self.recorded: dict[int, Any] = {}
            self.parton_level_size: dict[int, int] = {}
            self.hadronization_seed = hadronization_seed
            self.hadronization_state: Any = None

        def onBeginEvent(self) -> None:
            # The feed has not been read yet: the event about to start is feed.next_index.
            k = self.feed.next_index
            if self.replay is None:
                self.recorded[k] = self.rndm.getState()  # a copy (~1 us); init() costs ~140 us
                return
            if self.hadronization_state is None:  # first event: start the hadronization stream
                self.rndm.init(self.hadronization_seed)
            self.hadronization_state = self.rndm.getState()
            if k not in self.replay:
                raise RS3LError(f"no nominal random state recorded for hard event {k}")
            self.rndm.setState(self.replay[k])

        def canVetoPartonLevel(self) -> bool:
            return True

        def doVetoPartonLevel(self, event: Any) -> bool:
            self.parton_level_size[self.feed.next_index - 1] = event.size()
            if self.replay is not None:
                self.rndm.setState(self.hadronization_state)
            return False

    return SeedHook


@dataclass
class VariantShower:
    """A variant's initialised Pythia instance, its hard-process feed and seed hook (or None)."""

    pythia: Any
    feed: Any
    hook: Any | None
    settings: list[str]

    def restart(
        self,
        hard: HardEvents,
        seed: int,
        replay: dict[int, Any] | None,
        hadronization_seed: int | None,
    ) -> None:
        """Start a new run on ``hard`` from the random state of a fresh ``seed``.

        Called on every instance right after ``init()`` as well as on reuse, so a reused
        instance and a fresh one start from the same random state (``init()`` itself may draw
        random numbers after seeding).
        """
        self.feed.restart(hard)
        if self.hook is not None:
            self.hook.restart(replay, hadronization_seed)
        elif replay is not None:
            raise RS3LError("replaying the nominal shower needs an instance with a seed hook")
        self.pythia.rndm.init(seed)

    def next_batch(self, n: int) -> tuple[ak.Array, np.ndarray]:
        """Shower the next ``n`` hard events; return (nextBatch records, hard-event indices).

        Failed events come back as ``None`` entries (they are kept so event i stays aligned
        with hard event i across variants).
        """
        start = self.feed.next_index
        batch = self.pythia.nextBatch(n, "none")
        consumed = self.feed.next_index - start
        if consumed != len(batch):
            raise RS3LError(
                f"Pythia read {consumed} hard events for {len(batch)} output events: an event "
                "failure desynchronised the variant; rerun this chunk with another seed"
            )
        return batch, np.arange(start, start + consumed)


def shower_settings(
    variant_settings: tuple[str, ...], isr: bool, mpi: bool, seed: int
) -> list[str]:
    """Settings of a variant's shower instance (reading the in-memory Les Houches feed)."""
    return [
        *_QUIET,
        "Beams:frameType = 5",
        f"PartonLevel:ISR = {'on' if isr else 'off'}",
        f"PartonLevel:MPI = {'on' if mpi else 'off'}",
        "ParticleDecays:limitTau0 = on",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        *variant_settings,
    ]


# Initialised shower instances of this thread, by (settings without the seed, beam energy,
# replaying?). ``init()`` costs ~0.2 s (Vincia ~0.3 s) per variant; reusing the instance from
# chunk to chunk pays it once per worker. Only shower instances are reused: their hard process
# comes from the in-memory feed (unweighted, no phase-space maximum that adapts during a run),
# so a reused instance reseeded with ``rndm.init(seed)`` generates exactly what a fresh one
# does (checked file-for-file: serial runs reuse, pool/dask workers start fresh). Per thread,
# because a dask worker may run several chunks at once in threads of one process, and one
# Pythia instance must never serve two of them.
_THREAD_LOCAL = threading.local()


def _shower_cache() -> dict[tuple[Any, ...], VariantShower]:
    """This thread's cache of initialised shower instances (created on first use)."""
    cache = getattr(_THREAD_LOCAL, "showers", None)
    if cache is None:
        cache = _THREAD_LOCAL.showers = {}
    return cache


def clear_shower_cache() -> None:
    """Drop this thread's initialised shower instances (the next chunk initialises afresh)."""
    _shower_cache().clear()


def _seed_setting(settings: list[str]) -> tuple[tuple[str, ...], int]:
    """(settings without the ``Random:seed`` line, that seed)."""
    seeds = [line for line in settings if line.replace(" ", "").startswith("Random:seed=")]
    if len(seeds) != 1:
        raise RS3LError(f"shower settings need exactly one 'Random:seed = N' line, got {seeds}")
    rest = tuple(line for line in settings if line not in seeds)
    return rest, int(seeds[0].split("=", 1)[1])


def make_variant_shower(
    hard: HardEvents,
    settings: list[str],
    beam_energy: float,
    replay: dict[int, Any] | None = None,
    hadronization_seed: int | None = None,
    reuse: bool = False,
    record_states: bool = False,
) -> VariantShower:
    """An initialised variant instance reading ``hard`` from memory, seeded from ``settings``.

    ``record_states=True`` attaches the seed hook, which records the random state at every
    event start in ``hook.recorded`` (and the parton-level sizes in
    ``hook.parton_level_size``); ``replay`` (a nominal instance's ``hook.recorded``) plus
    ``hadronization_seed`` make a re-hadronization instance: same parton shower as nominal,
    new hadronization and decays. Without either there is no hook (same events, faster).
    ``reuse=True`` takes the instance from this process' cache when one with the same settings
    (up to the seed) exists, restarted on ``hard``; the returned object is then shared with
    earlier calls, so read its hook's dicts before the next call (they are replaced, not
    cleared). The output is the same either way.
    """
    settings_key, seed = _seed_setting(settings)
    hooked = record_states or replay is not None
    key = (settings_key, beam_energy, hooked, replay is not None)
    shower = _shower_cache().get(key) if reuse else None
    if shower is None:
        pythia = _new_pythia(settings)
        feed = _make_feed_class()(hard, beam_energy)
        pythia.setLHAupPtr(feed)
        hook = None
        if hooked:
            hook = _make_hook_class()(pythia.rndm, feed, replay, hadronization_seed)
            pythia.setUserHooksPtr(hook)  # before init(): Pythia hands hooks to its parts in init()
        if not pythia.init():
            raise RS3LError(f"Pythia failed to initialise with settings {settings}")
        shower = VariantShower(pythia, feed, hook, settings)
        if reuse:
            _shower_cache()[key] = shower
    shower.settings = settings
    shower.restart(hard, seed, replay, hadronization_seed)
    return shower


class ChargeTable:
    """PDG id -> electric charge from Pythia's particle data, one gather through a dense table.

    Pythia is asked once per new |id| (charge(-id) = -charge(id)); ids with |id| below
    ``dense_size`` (every SM hadron except a few excited states) are looked up by index,
    rarer ones through a small sorted table.
    """

    def __init__(self, pythia: Any, dense_size: int = 1 << 14) -> None:
        self._data = pythia.particleData
        self._dense = np.full(dense_size, np.nan)
        self._ids = np.zeros(0, np.int64)
        self._charges = np.zeros(0, np.float64)

    def _charge_of(self, abs_ids: np.ndarray) -> np.ndarray:
        return np.array([float(self._data.charge(int(pid))) for pid in abs_ids.tolist()])

    def __call__(self, pids: np.ndarray) -> np.ndarray:
        pids = np.asarray(pids, np.int64)
        abs_ids = np.abs(pids)
        dense = abs_ids < self._dense.size
        if dense.all():
            charges = self._dense_lookup(abs_ids)
        else:
            charges = np.empty(pids.size)
            charges[dense] = self._dense_lookup(abs_ids[dense])
            charges[~dense] = self._sparse(abs_ids[~dense])
        return np.where(pids < 0, -charges, charges)

    def _dense_lookup(self, abs_ids: np.ndarray) -> np.ndarray:
        charges = self._dense[abs_ids]
        unknown = np.isnan(charges)
        if unknown.any():  # ask Pythia once per new |id|
            new = np.unique(abs_ids[unknown])
            self._dense[new] = self._charge_of(new)
            charges = self._dense[abs_ids]
        return charges

    def _sparse(self, abs_ids: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self._ids, abs_ids)
        known = position < self._ids.size
        known[known] = self._ids[position[known]] == abs_ids[known]
        if not known.all():
            new = np.unique(abs_ids[~known])
            ids = np.concatenate([self._ids, new])
            order = np.argsort(ids)
            self._ids = ids[order]
            self._charges = np.concatenate([self._charges, self._charge_of(new)])[order]
            position = np.searchsorted(self._ids, abs_ids)
        return self._charges[position]
