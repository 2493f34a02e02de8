"""``RS3LTagger``: RS3L embeddings and head scores as a coffea column producer.

>>> tagger = RS3LTagger.load("models/my_model")                       # doctest: +SKIP
>>> jets, constituents = jets_from_events(events, source="pfnano")     # doctest: +SKIP
>>> events["FatJet", "rs3l"] = tagger(jets, constituents)              # doctest: +SKIP
>>> events.FatJet.rs3l.embedding, events.FatJet.rs3l.score             # doctest: +SKIP

The tagger works on eager, virtual (``NanoEventsFactory`` default) and dask-awkward inputs:

* eager/virtual: features are built with :func:`~rs3l_coffea.features.build_features` and run
  through the bounded-memory :class:`~rs3l_coffea.inference.InferenceEngine`;
* dask: one ``dask_awkward.map_partitions`` call with an explicit typetracer ``meta``. The
  tagger object in the graph carries only the model *path* and settings: each worker process
  loads the model the first time it needs it (and keeps it in a per-process cache), so neither
  the torch module nor its weights are ever pickled into the graph;
* typetracer input gives a typetracer of the output type without running the model.

Reproducibility: by default a jet's record agrees across chunkings, dask partitionings and
executors to float32 rounding (~1e-6 relative). With ``batch_invariant=True`` each jet runs in
a model call of its own (see :mod:`rs3l_coffea.inference.engine`), so its record is
bit-identical whatever the chunking, partitioning, executor or the other jets of the call,
at ~2.5x the CPU time (docs/clusters.md).

Output: a record array with the event x jet structure of ``jets`` and fields ``embedding``
(regular, ``embedding_dim`` float32) plus one float32 field per head score column (e.g.
``score``), and, when the model card records the training range (``validity_range``), a
boolean ``in_range``: False for a jet outside it (its score is an extrapolation). A jet
without constituents (or a ``None`` jet) gets a ``None`` record: the model is undefined on an
empty particle set.

The per-process engine cache is keyed on the model files' identity (size, inode, ctime and
mtime of both files), so a model replaced in place is reloaded even when its modification
time was preserved (``cp -p``, ``rsync -a``).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from rs3l_coffea._awkward import is_dask, typetracer_result
from rs3l_coffea.errors import ConfigError, ModelFormatError
from rs3l_coffea.features.builder import DEFAULT_MAX_PARTICLES

DEFAULT_PARTICLE_BUDGET = 4096
FEATURE_BLOCK_JETS = 4096  # jets whose dense features exist at once inside one call
EMBEDDING_FIELD = "embedding"
IN_RANGE_FIELD = "in_range"
DEFAULT_MODEL_NAME = "default"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# One engine per (model file, settings) per process: dask workers and futures processes each
# load the model once, however many tasks (and unpickled tagger copies) they run.
_ENGINE_CACHE: dict[tuple[Any, ...], Any] = {}
_ENGINE_LOCK = threading.Lock()


def default_model_candidates() -> tuple[Path, ...]:
    """Where :meth:`RS3LTagger.default` looks, in order.

    1. ``$RS3L_DEFAULT_MODEL`` (a model stem or file name), when set;
    2. package data ``rs3l_coffea/data/models/default``: the one copy of the shipped model,
       seen by source checkouts and installed wheels alike.
    """
    candidates = []
    override = os.environ.get("RS3L_DEFAULT_MODEL")
    if override:
        candidates.append(Path(override))
    candidates.append(_PACKAGE_ROOT / "data" / "models" / DEFAULT_MODEL_NAME)
    return tuple(candidates)


def _in_worker_process() -> bool:
    """True inside a dask worker or a multiprocessing child (futures executor)."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return True
    distributed = sys.modules.get("distributed")
    if distributed is None:  # a dask worker has imported it; importing it here costs ~1 s
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


class RS3LTagger:
    """Attach RS3L embeddings and head scores to jets (see module docstring).

    Construct with :meth:`load` or :meth:`default`. Parameters:

    * ``device``: ``"auto"`` (CUDA when the process sees a GPU, else CPU), ``"cpu"``, ``"cuda:0"``.
      Resolved on the worker, so a CPU client can drive GPU workers.
    * ``threads``: torch CPU threads per call. ``None`` (default): 1 inside dask workers and
      executor child processes (one thread per worker thread, no oversubscription), torch's
      default in the main process; with ``batch_invariant`` 1 everywhere (bit-identity needs a
      fixed count).
    * ``particle_budget``: padded particles per model call (jets x slots): bounds memory.
    * ``max_particles``: leading-pT particles kept per jet (feature builder). ``None``
      (default): the model card's ``preprocessing.max_particles`` (what the model was trained
      with), else 100.
    * ``batch_invariant``: one jet per model call, bit-identical records under any chunking,
      partitioning or executor, at ~2.5x the CPU time (default ``False``; see
      :class:`~rs3l_coffea.inference.InferenceEngine`).
    * ``backend``: ``"torch"`` or ``"onnx"`` (ONNX Runtime, exported in memory on the worker).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str = "auto",
        threads: int | None = None,
        particle_budget: int = DEFAULT_PARTICLE_BUDGET,
        max_particles: int | None = None,
        backend: str = "torch",
        batch_invariant: bool = False,
    ) -> None:
        from rs3l_coffea.nn.model_file import check_model_files, model_paths, validity_range

        weights, card_path = model_paths(model_path)
        for file in (weights, card_path):
            if not file.is_file():
                raise FileNotFoundError(f"model file {file} does not exist")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {threads}")
        if particle_budget < 1:
            raise ConfigError(f"particle_budget must be >= 1, got {particle_budget}")
        if max_particles is not None and (isinstance(max_particles, bool) or max_particles < 1):
            raise ConfigError(f"max_particles must be >= 1, got {max_particles}")
        if backend not in ("torch", "onnx"):
            raise ConfigError(f"backend {backend!r} is not one of ['torch', 'onnx']")
        # Card, architecture bounds, and the weights' header (names, shapes, dtypes) now, in the
        # process that builds the graph: milliseconds, no tensor data read.
        card, _config = check_model_files(weights, card_path)
        self.model_path = str(weights.with_suffix("").resolve())
        self.head_names: tuple[str, ...] = tuple(card.head_names)
        backbone = dict(card.config.get("backbone", {}))
        self.embedding_dim = int(backbone.get("output_dim", 8))
        self.validity = validity_range(card)
        for reserved in (EMBEDDING_FIELD, IN_RANGE_FIELD):
            if reserved in self.head_names:
                raise ModelFormatError(
                    f"{card_path}: a head score column is called {reserved!r}, which clashes "
                    f"with the {reserved} field; rename the head"
                )
        self.device = device
        self.threads = threads
        self.particle_budget = int(particle_budget)
        self.max_particles = int(max_particles) if max_particles is not None else card_max_particles(card, card_path)
        self.backend = backend
        self.batch_invariant = batch_invariant
        self._engine: Any = None
        self._engine_key: tuple[Any, ...] | None = None

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        threads: int | None = None,
        particle_budget: int = DEFAULT_PARTICLE_BUDGET,
        max_particles: int | None = None,
        backend: str = "torch",
        batch_invariant: bool = False,
    ) -> RS3LTagger:
        """Tagger for a native model (``NAME``, ``NAME.safetensors`` or ``NAME.json``).

        Only the card (JSON) and the weights' header are read and checked here; the weights
        are loaded on first use, in the process that uses them (:meth:`check_model` loads
        them once up front, finite-value check included).
        """
        return cls(
            path,
            device=device,
            threads=threads,
            particle_budget=particle_budget,
            max_particles=max_particles,
            backend=backend,
            batch_invariant=batch_invariant,
        )

    @classmethod
    def default(cls, **kwargs: Any) -> RS3LTagger:
        """Tagger for the shipped default model (see :func:`default_model_candidates`)."""
        from rs3l_coffea.nn.model_file import model_paths

        candidates = default_model_candidates()
        for stem in candidates:
            weights, card = model_paths(stem)
            if weights.is_file() and card.is_file():
                return cls.load(stem, **kwargs)
        looked = ", ".join(f"{model_paths(s)[0]}" for s in candidates)
        raise ModelFormatError(
            f"no default RS3L model found (looked for {looked}); train one with `rs3l train`, "
            "set RS3L_DEFAULT_MODEL, or use RS3LTagger.load(path)"
        )

    # -- pickling: path and settings only ---------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = None
        state["_engine_key"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"RS3LTagger({self.model_path!r}, device={self.device!r}, threads={self.threads}, "
            f"particle_budget={self.particle_budget}, max_particles={self.max_particles}, "
            f"backend={self.backend!r}, batch_invariant={self.batch_invariant})"
        )

    # -- engine -----------------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """Output field names: ``embedding``, the head score columns, ``in_range`` (when the
        card records a training range)."""
        extra = (IN_RANGE_FIELD,) if self.validity is not None else ()
        return (EMBEDDING_FIELD, *self.head_names, *extra)

    def check_model(self) -> None:
        """Load the model once here (card, header, dtypes, finite weights) and drop it: a command
        calls this before its long work so a bad model is reported as the model's fault, not
        as a failure of the first data file a worker opens."""
        from rs3l_coffea.nn.model_file import load_model

        load_model(self.model_path)

    def effective_threads(self) -> int | None:
        """Threads used in this process (see class docstring)."""
        if self.threads is not None:
            return self.threads
        return 1 if _in_worker_process() else None

    @property
    def engine(self) -> Any:
        """The :class:`InferenceEngine`, created (and cached per process) on first access."""
        model_path = self._local_model_path()
        threads = self.effective_threads()
        key = (model_path, _file_identity(model_path), self.device, threads, self.particle_budget, self.backend,
               self.batch_invariant)
        if self._engine is None or self._engine_key != key:
            with _ENGINE_LOCK:
                engine = _ENGINE_CACHE.get(key)
                if engine is None:
                    from rs3l_coffea.inference.engine import InferenceEngine

                    engine = InferenceEngine.from_path(
                        model_path,
                        device=self.device,
                        particle_budget=self.particle_budget,
                        threads=threads,
                        backend=self.backend,
                        batch_invariant=self.batch_invariant,
                    )
                    if tuple(engine.head_names) != self.head_names:
                        raise ModelFormatError(
                            f"{self.model_path}: head names {engine.head_names} differ from the "
                            f"card's {list(self.head_names)} (file changed under us?)"
                        )
                    for stale in [k for k in _ENGINE_CACHE if k[0] == key[0] and k[1] != key[1]]:
                        del _ENGINE_CACHE[stale]  # the file changed: its old engine is never used again
                    _ENGINE_CACHE[key] = engine
            self._engine, self._engine_key = engine, key
        return self._engine

    def _local_model_path(self) -> str:
        """The model path in this process: ``model_path``, or, on a dask worker where that path
        does not exist, the copies uploaded with ``client.upload_file`` (worker directory)."""
        from rs3l_coffea.nn.model_file import model_paths

        weights, card = model_paths(self.model_path)
        if weights.is_file() and card.is_file():
            return self.model_path
        distributed = sys.modules.get("distributed")
        if distributed is not None:
            try:
                directory = Path(distributed.get_worker().local_directory)
            except ValueError:  # not inside a worker
                directory = None
            if directory is not None and all((directory / f.name).is_file() for f in (weights, card)):
                return str(directory / weights.with_suffix("").name)
        raise FileNotFoundError(
            f"model file {weights} does not exist in this process (a dask/batch worker needs the "
            "model on a shared file system, in the installed package, or uploaded with "
            "client.upload_file; see docs/clusters.md)"
        )

    # -- the column producer ----------------------------------------------------------------

    def __call__(self, jets: Any, constituents: Any) -> Any:
        """RS3L record per jet (same event x jet structure as ``jets``; see module docstring).

        ``jets``: events x jets (or flat jets) with ``pt, eta, phi, mass``; ``constituents``:
        events x jets x particles (or jets x particles) in the uniform layout of
        :mod:`rs3l_coffea.io`. Both eager/virtual awkward or both dask-awkward.
        """
        jets_dask, constituents_dask = is_dask(jets), is_dask(constituents)
        if jets_dask != constituents_dask:
            raise TypeError("jets and constituents must both be dask-awkward or both awkward arrays")
        if jets_dask:
            import dask_awkward as dak

            meta = self._typetracer_result(jets._meta, constituents._meta)
            return dak.map_partitions(
                _TaggerPartition(self), jets, constituents, label="rs3l-tagger", meta=meta
            )
        jets, constituents = ak.Array(jets), ak.Array(constituents)
        if ak.backend(jets) == "typetracer" or ak.backend(constituents) == "typetracer":
            return self._typetracer_result(jets, constituents)
        return self._evaluate(jets, constituents)

    def from_events(
        self,
        events: Any,
        *,
        source: str = "auto",
        jets: str | None = None,
        recluster_radius: float | None = None,
        origin: str | None = None,
    ) -> Any:
        """Read jets from NanoEvents (:func:`rs3l_coffea.io.jets_from_events`) and tag them.

        Returns the reader's jets (``pt, eta, phi, mass``, events x jets) with the RS3L record
        added as field ``rs3l``. For a stored collection (``jets="FatJet"``) the structure is
        that of ``events.FatJet``, so ``events["FatJet", "rs3l"] = tagged.rs3l`` attaches it.
        """
        from rs3l_coffea.io import jets_from_events

        jet_array, constituents = jets_from_events(
            events, source=source, jets=jets, recluster_radius=recluster_radius, origin=origin
        )
        tags = self(jet_array, constituents)
        if is_dask(jet_array):
            import dask_awkward as dak

            return dak.with_field(jet_array, tags, "rs3l")
        return ak.with_field(jet_array, tags, "rs3l")

    # -- internals --------------------------------------------------------------------------

    def _typetracer_result(self, jets: Any, constituents: Any) -> ak.Array:
        """The output type for (typetracer) inputs, computed on length-zero stand-ins."""
        return typetracer_result(
            lambda j, c: self._evaluate(j, c, run_model=False), ak.Array(jets), ak.Array(constituents)
        )

    def _evaluate(self, jets: ak.Array, constituents: ak.Array, run_model: bool = True) -> ak.Array:
        from rs3l_coffea.features.builder import build_features

        if jets.ndim not in (1, 2):
            raise ValueError(f"jets must be events x jets or flat jets, got type {jets.type}")
        if constituents.ndim != jets.ndim + 1:
            raise ValueError(
                f"constituents (type {constituents.type}) must have one more list level than "
                f"jets (type {jets.type})"
            )
        nested = jets.ndim == 2
        counts = np.asarray(ak.to_numpy(ak.num(jets, axis=1)), dtype=np.int64) if nested else None
        flat_jets = ak.flatten(jets, axis=1) if nested else jets
        flat_constituents = ak.flatten(constituents, axis=1) if nested else constituents
        if len(flat_jets) != len(flat_constituents):
            raise ValueError(
                f"{len(flat_jets)} jets but {len(flat_constituents)} constituent lists: jets and "
                "constituents must come from the same reader call"
            )
        n_jets = len(flat_jets)
        # None jets (e.g. after ak.mask) and jets without particles get a None record.
        present = ~np.asarray(ak.to_numpy(ak.is_none(flat_jets.pt, axis=0)), dtype=bool)
        n_particles = np.asarray(
            ak.to_numpy(ak.fill_none(ak.num(flat_constituents, axis=1), 0)), dtype=np.int64
        )
        usable = present & (n_particles > 0)
        embedding = np.zeros((n_jets, self.embedding_dim), dtype=np.float32)
        scores = np.zeros((n_jets, len(self.head_names)), dtype=np.float32)
        index = np.flatnonzero(usable)
        # Dense features cost ~13 kB per jet (benchmarks/memory.py): build and run them one
        # block of jets at a time, so a call's working memory does not grow with its size.
        for first in range(0, len(index) if run_model else 0, FEATURE_BLOCK_JETS):
            block = index[first : first + FEATURE_BLOCK_JETS]
            x, mask = build_features(
                flat_jets[block], flat_constituents[block], max_particles=self.max_particles
            )
            # build_features drops non-finite particles: a jet may end up with none left.
            has_particles = mask.any(axis=1)
            usable[block[~has_particles]] = False
            keep = np.flatnonzero(has_particles)
            if len(keep):
                result_embedding, result_scores = self.engine.run(x[keep], mask[keep])
                embedding[block[keep]] = result_embedding
                scores[block[keep]] = result_scores
        columns: dict[str, Any] = {EMBEDDING_FIELD: ak.from_numpy(embedding, regulararray=True)}
        for column, name in enumerate(self.head_names):
            columns[name] = ak.from_numpy(np.ascontiguousarray(scores[:, column]))
        if self.validity is not None:
            pt = ak.to_numpy(ak.fill_none(flat_jets.pt, np.nan), allow_missing=False)
            eta = ak.to_numpy(ak.fill_none(flat_jets.eta, np.nan), allow_missing=False)
            columns[IN_RANGE_FIELD] = ak.from_numpy(self.validity.contains(pt, eta))
        record = ak.zip(columns, depth_limit=1, with_name=None)
        record = ak.mask(record, usable, valid_when=True)
        if nested:
            record = ak.unflatten(record, counts, axis=0)
        return record


def card_max_particles(card: Any, card_path: Path) -> int:
    """``preprocessing.max_particles`` of a model card (the cap the model was trained with), or
    the feature builder's default when the card does not say."""
    value = card.preprocessing.get("max_particles", DEFAULT_MAX_PARTICLES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFormatError(
            f"{card_path}: preprocessing.max_particles must be a positive integer, got {value!r}"
        )
    return value


class _TaggerPartition:
    """Callable shipped in the dask graph: the tagger (path + settings only) per partition."""

    def __init__(self, tagger: RS3LTagger) -> None:
        self.tagger = tagger

    def __call__(self, jets: ak.Array, constituents: ak.Array) -> ak.Array:
        return self.tagger(jets, constituents)


def _file_identity(model_path: str) -> tuple[int, ...]:
    """Size, inode, ctime and mtime of the weights and the card: a file replaced in place or by
    a rename changes its ctime (which ``os.utime``, ``cp -p`` and ``rsync -a`` cannot set back)
    or its inode, even when its mtime is preserved."""
    from rs3l_coffea.nn.model_file import model_paths

    identity: list[int] = []
    for file in model_paths(model_path):
        stat = os.stat(file)
        identity += [stat.st_size, stat.st_ino, stat.st_dev, stat.st_ctime_ns, stat.st_mtime_ns]
    return tuple(identity)
