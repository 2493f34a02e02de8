"""RS3L through ``coffea.ml_tools.torch_wrapper`` (for analyses standardised on coffea's wrappers).

:class:`RS3LTorchWrapper` subclasses coffea's ``torch_wrapper``: ``prepare_awkward`` builds the
15 RS3L features (:func:`~rs3l_coffea.features.build_features`) from jets and constituents, the
TorchScript model (:func:`rs3l_coffea.nn.export_torchscript`) runs on them, and
``postprocess_awkward`` restores the event x jet structure. The output record matches
:class:`~rs3l_coffea.inference.tagger.RS3LTagger` (``embedding`` + one field per head score;
``None`` for jets without constituents).

Differences to :class:`RS3LTagger`, inherited from coffea's design: the whole partition goes
through the model in ONE call on the full ``max_particles`` padding (no multiplicity sorting,
no batching: memory grows with the chunk), and TorchScript files are required. A TorchScript
file carries code that ``torch.jit.load`` compiles and runs: pass only files you made
(:meth:`RS3LTorchWrapper.from_model` exports one from a safetensors model). Prefer
:class:`RS3LTagger` for production.

Two pitfalls of coffea's base class are fixed here (both resolved on the worker, like the tagger):

* the device: coffea moves the model to CUDA whenever one is visible and the inputs to its own
  ``device`` attribute (coffea issue 1568: a model and inputs on different devices fail). Here
  ``device`` is an option (``"auto"``, ``"cpu"``, ``"cuda:N"``), the TorchScript file is loaded
  straight onto it, and the inputs always go to the device the model's parameters live on.
* threads: torch's default intra-op pool uses every core in every dask worker, so N workers on N
  cores run N x N threads. ``threads=None`` means 1 thread per call inside dask workers and
  executor child processes (as :class:`RS3LTagger`), torch's default in the main process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from coffea.ml_tools.torch_wrapper import torch_wrapper

from rs3l_coffea._awkward import is_dask, typetracer_result
from rs3l_coffea.errors import ConfigError
from rs3l_coffea.features.builder import DEFAULT_MAX_PARTICLES
from rs3l_coffea.inference.engine import torch_threads
from rs3l_coffea.inference.tagger import EMBEDDING_FIELD, _in_worker_process


class RS3LTorchWrapper(torch_wrapper):
    """``wrapper(jets, constituents)`` -> RS3L record per jet (see module docstring).

    Args:
        torchscript_path: TorchScript file with ``forward(x, mask) -> (embedding, scores)``.
        head_names: score column names, in the model's order.
        embedding_dim: embedding width.
        max_particles: particle slots per jet (feature builder).
        device: ``"auto"`` (CUDA when the worker sees one), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        threads: torch CPU threads per call; ``None``: 1 in worker processes, else torch's default.
    """

    def __init__(
        self,
        torchscript_path: str | os.PathLike[str],
        *,
        head_names: tuple[str, ...] | list[str] = (),
        embedding_dim: int = 8,
        max_particles: int = DEFAULT_MAX_PARTICLES,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        path = Path(torchscript_path)
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript model {path} does not exist")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {threads}")
        _check_device_name(device)
        super().__init__(str(path.resolve()))
        self.head_names = tuple(head_names)
        self.embedding_dim = int(embedding_dim)
        self.max_particles = int(max_particles)
        self.device_name = device
        self.threads = threads

    @classmethod
    def from_model(
        cls,
        model_path: str | os.PathLike[str],
        torchscript_path: str | os.PathLike[str],
        *,
        max_particles: int | None = None,
        device: str = "auto",
        threads: int | None = None,
    ) -> RS3LTorchWrapper:
        """Export a native model (``NAME``) to TorchScript at ``torchscript_path`` and wrap it.

        ``max_particles=None`` takes the card's ``preprocessing.max_particles`` (as the tagger does).
        """
        from rs3l_coffea.inference.tagger import card_max_particles
        from rs3l_coffea.nn import export_torchscript, load_model
        from rs3l_coffea.nn.model_file import model_paths

        model, card = load_model(model_path)
        if max_particles is None:
            max_particles = card_max_particles(card, model_paths(model_path)[1])
        export_torchscript(model, torchscript_path)
        return cls(
            torchscript_path,
            head_names=tuple(card.head_names),
            embedding_dim=int(model.embedding_dim),
            max_particles=max_particles,
            device=device,
            threads=threads,
        )

    # -- coffea hooks -----------------------------------------------------------------------

    def _create_device(self) -> Any:
        """The device chosen by ``device`` (resolved where the wrapper runs, e.g. on a worker)."""
        import torch

        if self.device_name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device_name!r} requested but CUDA is not available here")
        return device

    def _create_model(self) -> Any:
        """The TorchScript model, loaded directly onto :meth:`_create_device`'s device."""
        import torch

        model = torch.jit.load(self.torch_jit, map_location=self.device)
        model.eval()
        return model

    def effective_threads(self) -> int | None:
        """Threads used in this process (see ``threads``)."""
        if self.threads is not None:
            return self.threads
        return 1 if _in_worker_process() else None

    def prepare_awkward(self, jets: Any, constituents: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Features of every jet as numpy-convertible awkward arrays: ``((x, mask), {})``."""
        builder = _FeatureArrays(self.max_particles)
        if is_dask(jets):
            import dask_awkward as dak

            meta = builder.typetracer(jets._meta, constituents._meta)
            packed = dak.map_partitions(builder, jets, constituents, meta=meta, label="rs3l-features")
        else:
            packed = builder(ak.Array(jets), ak.Array(constituents))
        return (packed["features"], packed["particle_mask"]), {}

    def validate_numpy_input(self, x: np.ndarray, mask: np.ndarray) -> None:
        if x.ndim != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"expected x (N, P, F) and mask (N, P), got {x.shape} and {mask.shape}")

    def numpy_call(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One model call on the whole input (coffea's convention); empty input short-cuts.

        Returns ``[embedding | scores]`` side by side, ``(N, embedding_dim + n_heads)``: coffea's
        dask path zips dict outputs with broadcasting, which would mix unequal widths.
        """
        import torch

        width = self.embedding_dim + len(self.head_names)
        if len(x) == 0:
            return np.zeros((0, width), dtype=np.float32)
        device = model_device(self.model)
        with torch_threads(self.effective_threads()), torch.no_grad():
            embedding, scores = self.model(
                # np.require copies read-only buffers (coffea hands them over from awkward)
                torch.from_numpy(np.require(x, np.float32, ["C", "W"])).to(device),
                torch.from_numpy(np.require(mask, np.bool_, ["C", "W"])).to(device),
            )
        return torch.cat([embedding, scores], dim=1).cpu().numpy()

    def postprocess_awkward(self, result: Any, jets: Any, constituents: Any) -> Any:
        """Per-jet record with the event x jet structure of ``jets``."""
        restructure = _Restructure(self.head_names, self.embedding_dim)
        if is_dask(jets):
            import dask_awkward as dak

            meta = restructure.typetracer(result._meta, jets._meta, constituents._meta)
            return dak.map_partitions(
                restructure, result, jets, constituents, meta=meta, label="rs3l-restructure"
            )
        return restructure(ak.Array(result), ak.Array(jets), ak.Array(constituents))


def model_device(model: Any) -> Any:
    """The device of a module's first parameter (or buffer); CPU for a module without either."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_device_name(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"device {device!r} is not a torch device (auto, cpu, cuda, cuda:N): {error}") from None


class _FeatureArrays:
    """Per partition: ``{features: (n_jets, P, 15), particle_mask: (n_jets, P)}`` (regular arrays)."""

    def __init__(self, max_particles: int) -> None:
        self.max_particles = max_particles

    def typetracer(self, jets: Any, constituents: Any) -> ak.Array:
        return typetracer_result(self, jets, constituents)

    def __call__(self, jets: ak.Array, constituents: ak.Array) -> ak.Array:
        from rs3l_coffea.features.builder import build_features

        if ak.backend(jets) == "typetracer":
            return self.typetracer(jets, constituents)
        x, mask = build_features(jets, constituents, max_particles=self.max_particles)
        return ak.zip(
            {
                "features": ak.from_numpy(x, regulararray=True),
                "particle_mask": ak.from_numpy(mask, regulararray=True),
            },
            depth_limit=1,
        )


class _Restructure:
    """Model outputs (flat jets) -> events x jets records, ``None`` for jets without particles."""

    def __init__(self, head_names: tuple[str, ...], embedding_dim: int) -> None:
        self.head_names = head_names
        self.embedding_dim = embedding_dim

    def typetracer(self, result: Any, jets: Any, constituents: Any) -> ak.Array:
        return typetracer_result(self, result, jets, constituents)

    def __call__(self, result: ak.Array, jets: ak.Array, constituents: ak.Array) -> ak.Array:
        if ak.backend(result) == "typetracer":
            return self.typetracer(result, jets, constituents)
        nested = jets.ndim == 2
        flat_constituents = ak.flatten(constituents, axis=1) if nested else constituents
        usable = np.asarray(ak.to_numpy(ak.num(flat_constituents, axis=1)) > 0)
        width = self.embedding_dim + len(self.head_names)
        values = np.asarray(ak.to_numpy(result), dtype=np.float32).reshape(-1, width)
        columns: dict[str, Any] = {
            EMBEDDING_FIELD: ak.from_numpy(
                np.ascontiguousarray(values[:, : self.embedding_dim]), regulararray=True
            )
        }
        for column, name in enumerate(self.head_names):
            columns[name] = ak.from_numpy(np.ascontiguousarray(values[:, self.embedding_dim + column]))
        record = ak.mask(ak.zip(columns, depth_limit=1), usable, valid_when=True)
        if nested:
            record = ak.unflatten(record, np.asarray(ak.to_numpy(ak.num(jets, axis=1))), axis=0)
        return record
