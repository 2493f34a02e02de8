"""Batched, bounded-memory inference for JetModels (torch or ONNX Runtime backends).

The engine sorts jets by their number of real particles, cuts them into batches whose padded
size (jets × largest multiplicity in the batch) stays under ``particle_budget``, trims each
batch's padding to that largest multiplicity, runs the model and restores the input order.
Sorting matters: with multiplicities of 10-100 a randomly composed batch is mostly padding,
and the EdgeConv cost grows with the padded size.

Reproducibility guarantees (docs/clusters.md, "Reproducibility"):

* the same call (same jets in the same order, same settings and thread count, same machine and
  software) gives the same bits: the batches, and so every kernel call, are the same;
* across batchings (other chunk sizes, dask partitions, executors, other jets in the call) the
  default sorted batches agree only to float32 rounding (~1e-6 relative; a kNN neighbour that
  is tied to that precision can flip): BLAS/oneDNN pick GEMM kernels by the number of rows and
  treat rows by their position in the register tiles, so a row's rounding depends on its
  batch-mates (measured with MKL forced to AVX2: a 128->128 ``Linear`` row changes in the last
  bits for most row counts below 40, and within one shape by its position);
* ``batch_invariant=True`` runs each jet in a model call of its own, trimmed to its own number
  of particles, on a fixed thread count: a jet's outputs are a function of that jet alone, so
  any chunking, partitioning, ordering or executor gives **bit-identical** results on a given
  machine and software stack. It costs the per-call overhead: 2.4-2.7x the CPU time per jet
  for the paper-size DGCNN at ~50 particles per jet on one thread (numbers and command in
  docs/clusters.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rs3l_coffea.errors import ConfigError, ModelFormatError
from rs3l_coffea.features.names import FEATURE_NAMES

if TYPE_CHECKING:
    from rs3l_coffea.nn.model_file import ModelCard

_PRECISIONS = ("float32", "bfloat16", "float16")
_BACKENDS = ("torch", "onnx")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set ``torch.set_num_threads(threads)`` inside the block and restore the old value after."""
    import torch

    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def plan_batches(multiplicity: np.ndarray, particle_budget: int, max_jets: int | None = None) -> list[np.ndarray]:
    """Jet indices per batch: sorted by decreasing multiplicity, each batch's padded size
    ``len(batch) * max(1, multiplicity of its first jet)`` at most ``particle_budget``
    (a single jet larger than the budget forms its own batch)."""
    order = np.argsort(-multiplicity, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        width = max(1, int(multiplicity[order[start]]))
        size = max(1, particle_budget // width)
        if max_jets is not None:
            size = min(size, max_jets)
        batches.append(order[start : start + size])
        start += size
    return batches


class InferenceEngine:
    """Run a model over arrays of any size: ``run(x, mask) -> (embedding, scores)``.

    Parameters
    ----------
    model:
        a :class:`~rs3l_coffea.nn.JetModel` (or any module with ``forward(x, mask) ->
        (embedding, scores)``), or for ``backend="onnx"`` also a path to an ``.onnx`` file.
        The engine keeps its own copy (later changes to ``model`` are not seen).
    device:
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    particle_budget:
        upper bound on padded particles (jets × slots) per model call: bounds memory (the
        temporaries grow linearly with it; see benchmarks/inference.py). The default 1024 was the fastest of
        256-4096 on this project's CPU (small batches stay in cache); raise it on GPUs.
    threads:
        CPU threads for the duration of each ``run`` (``None``: leave the setting alone).
    precision:
        ``"float32"``; ``"bfloat16"``/``"float16"`` only on CUDA (ConfigError otherwise).
    backend:
        ``"torch"`` or ``"onnx"`` (ONNX Runtime; the model is exported in memory if needed).
    batch_invariant:
        ``True``: one jet per model call, so a jet's outputs do not depend on the other jets
        of the input (bit-identical under any chunking, ordering or executor; see the module
        docstring); ``threads=None`` then means 1 thread, since the rounding of a multi-threaded
        GEMM can depend on the thread count (measured with MKL forced to AVX2). ``False``
        (default): sorted batches within ``particle_budget`` (faster; agreement across
        batchings to float32 rounding only).
    max_jets_per_batch:
        upper bound on jets per call in batched mode.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str = "auto",
        particle_budget: int = 1024,
        threads: int | None = None,
        precision: str = "float32",
        backend: str = "torch",
        max_jets_per_batch: int | None = None,
        batch_invariant: bool = False,
    ) -> None:
        import torch

        if backend not in _BACKENDS:
            raise ConfigError(f"backend {backend!r} is not one of {list(_BACKENDS)}")
        if precision not in _PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {list(_PRECISIONS)}")
        if particle_budget < 1:
            raise ConfigError(f"particle_budget must be >= 1, got {particle_budget}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {threads}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        if precision != "float32" and self.device.type != "cuda":
            raise ConfigError(f"precision {precision!r} is only supported on CUDA; this engine runs on {self.device}")
        if precision != "float32" and backend == "onnx":
            raise ConfigError("the ONNX backend runs in float32 only")
        self.batch_invariant = bool(batch_invariant)
        self.backend = backend
        self.precision = precision
        self.particle_budget = int(particle_budget)
        # A fixed thread count is part of the bit-identity guarantee (see batch_invariant).
        self.threads = 1 if threads is None and self.batch_invariant else threads
        self.max_jets_per_batch = max_jets_per_batch
        self._session: Any = None  # onnxruntime.InferenceSession (onnxruntime has no type hints)
        self._model: torch.nn.Module | None = None
        #: The model card, for an engine made by :meth:`from_path` from a native model file.
        self.card: ModelCard | None = None
        if backend == "onnx":
            self._init_onnx(model)
        else:
            if isinstance(model, (str, os.PathLike)):
                raise ConfigError("for the torch backend pass a model object, or use InferenceEngine.from_path")
            self._dtype = getattr(torch, precision)
            # A snapshot: converting device/dtype or switching to eval must not touch the caller's model.
            self._model = copy.deepcopy(model).to(device=self.device, dtype=self._dtype).eval()
            self.input_dim = int(getattr(model, "input_dim", len(FEATURE_NAMES)))
            self.head_names = list(getattr(model, "head_names", []))
            self.embedding_dim = int(getattr(model, "embedding_dim", 0)) or self._probe_embedding_dim()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: Any) -> InferenceEngine:
        """Engine for a saved model: ``*.onnx`` (ONNX backend) or a native model
        (``NAME``/``NAME.safetensors``/``NAME.json``, torch backend unless ``backend="onnx"``)."""
        path = Path(path)
        if path.suffix == ".onnx":
            kwargs.setdefault("backend", "onnx")
            if kwargs["backend"] != "onnx":
                raise ConfigError(f"{path} is an ONNX file: use backend='onnx'")
            return cls(path, **kwargs)
        from rs3l_coffea.nn.model_file import load_model

        model, card = load_model(path)
        engine = cls(model, **kwargs)
        engine.card = card
        return engine

    # -- backends ---------------------------------------------------------------------------

    def _init_onnx(self, model: Any) -> None:
        import onnxruntime as ort

        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX model {path} does not exist")
            payload: bytes | str = str(path)
            source = str(path)
        else:
            from rs3l_coffea.nn.export import onnx_model_proto

            payload = onnx_model_proto(model).SerializeToString()
            source = type(model).__name__
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(payload, sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own, un-exported exception types
            raise ModelFormatError(f"{source}: ONNX Runtime cannot load the model: {error}") from error
        inputs = {i.name: i for i in self._session.get_inputs()}
        if set(inputs) != {"x", "mask"}:
            raise ModelFormatError(f"{source}: ONNX model inputs are {sorted(inputs)}, expected ['mask', 'x']")
        meta = self._session.get_modelmeta().custom_metadata_map
        n_features = inputs["x"].shape[-1]
        self.input_dim = int(n_features) if isinstance(n_features, int) else len(FEATURE_NAMES)
        self.head_names = json.loads(meta.get("head_names", "[]"))
        width = self._session.get_outputs()[0].shape[-1]
        self.embedding_dim = int(width) if isinstance(width, int) else self._probe_embedding_dim()

    def _probe_embedding_dim(self) -> int:
        x = np.zeros((1, 1, self.input_dim), dtype=np.float32)
        return int(self._call(x, np.ones((1, 1), dtype=bool))[0].shape[1])

    def _call(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._session is not None:
            embedding, scores = self._session.run(None, {"x": x, "mask": mask})
            return embedding, scores
        import torch

        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if self.device.type == "cpu" and self._dtype == torch.float32:
                # A torch-allocated (64-byte aligned) copy: MKL may take another code path for
                # another alignment of the same numbers (Intel's reproducibility notes), and
                # numpy's buffers need not be 64-byte aligned.
                xt = xt.clone()
            xt = xt.to(device=self.device, dtype=self._dtype, non_blocking=True)
            mt = torch.from_numpy(mask).to(device=self.device, non_blocking=True)
            assert self._model is not None  # the torch backend sets it in __init__
            embedding, scores = self._model(xt, mt)
            return (
                embedding.to(dtype=torch.float32).cpu().numpy(),
                scores.to(dtype=torch.float32).cpu().numpy(),
            )

    # -- public -----------------------------------------------------------------------------

    def run(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(N, D)`` and head scores ``(N, H)`` (float32) for ``x (N, P, F)``, ``mask (N, P)``.

        Real particles may sit anywhere along the particle axis. Values of padded slots are
        ignored. ``N = 0`` and jets without particles are fine (see the backbone docs for what
        an empty jet maps to). Non-finite features of real particles raise ``ValueError``.
        """
        x = np.asarray(x)
        mask = np.asarray(mask)
        if x.ndim != 3:
            raise ValueError(f"x must have shape (jets, particles, features), got {x.shape}")
        if x.shape[2] != self.input_dim:
            raise ValueError(
                f"x has {x.shape[2]} features per particle; expected {self.input_dim}"
                + (f" ({', '.join(FEATURE_NAMES)})" if self.input_dim == len(FEATURE_NAMES) else "")
            )
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match x shape {x.shape[:2]}")
        if mask.dtype != np.bool_:
            raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
        n_jets = x.shape[0]
        embedding = np.zeros((n_jets, self.embedding_dim), dtype=np.float32)
        scores = np.zeros((n_jets, len(self.head_names)), dtype=np.float32)
        if n_jets == 0:
            return embedding, scores
        multiplicity = mask.sum(axis=1)
        packed = bool(np.array_equal(mask, np.arange(mask.shape[1]) < multiplicity[:, None]))
        max_jets = 1 if self.batch_invariant else self.max_jets_per_batch
        with torch_threads(self.threads if self._session is None else None):
            for batch in plan_batches(multiplicity, self.particle_budget, max_jets):
                width = max(1, int(multiplicity[batch[0]]))
                xb, mb = self._slice(x, mask, batch, width, packed)
                bad = mb[..., None] & ~np.isfinite(xb)
                if bad.any():
                    jet, particle, feature = (int(i[0]) for i in np.nonzero(bad))
                    name = FEATURE_NAMES[feature] if self.input_dim == len(FEATURE_NAMES) else str(feature)
                    raise ValueError(
                        f"non-finite feature {name!r} = {xb[jet, particle, feature]} in jet {int(batch[jet])}"
                    )
                embedding[batch], scores[batch] = self._call(xb, mb)
        return embedding, scores

    @staticmethod
    def _slice(
        x: np.ndarray, mask: np.ndarray, batch: np.ndarray, width: int, packed: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The batch's jets, real particles moved to the front, padding trimmed to ``width``."""
        if packed:
            xb, mb = x[batch, :width], mask[batch, :width]
        else:
            positions = np.argsort(~mask[batch], axis=1, kind="stable")[:, :width]
            xb = np.take_along_axis(x[batch], positions[..., None], axis=1)
            mb = np.take_along_axis(mask[batch], positions, axis=1)
        if xb.shape[1] < width:  # fewer slots than 1 (input with P = 0)
            xb = np.zeros((len(batch), width, x.shape[2]), dtype=x.dtype)
            mb = np.zeros((len(batch), width), dtype=bool)
        return np.ascontiguousarray(xb, dtype=np.float32), np.ascontiguousarray(mb)
