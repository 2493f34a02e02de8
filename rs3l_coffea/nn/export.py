"""Export a JetModel to TorchScript or ONNX with dynamic batch and particle axes.

Both exports work on a copy: LoRA adapters are merged and the model is put in eval mode. For
ONNX the EdgeConv row chunking is switched off (a Python loop over a symbolic size cannot be
exported) and kNN distances come from an explicit (B, P, P, C) difference tensor (ONNX has no
cdist); bound memory by batching inputs instead (the inference engine does). The ONNX graph
comes from the dynamo exporter (opset 18): unlike the legacy exporter and ``torch.jit.trace``
it keeps ``k`` symbolic, so batches with fewer than ``k`` particle slots work.

A model with an ``input_convention`` (published checkpoints from
:func:`~rs3l_coffea.nn.published.load_published_rs3l`) carries its input adapter inside the
exported graph, and the convention is written next to the feature names: ONNX metadata key
``input_convention``, TorchScript extra file ``input_convention.json``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from rs3l_coffea.atomic import atomic_open, atomic_path
from rs3l_coffea.features.names import FEATURE_NAMES
from rs3l_coffea.nn.edge_conv import DenseDynamicEdgeConv
from rs3l_coffea.nn.lora import merge_lora


def _prepared_copy(model: nn.Module, *, chunking: bool) -> nn.Module:
    model = merge_lora(copy.deepcopy(model)).eval()
    if not chunking:
        for module in model.modules():
            if isinstance(module, DenseDynamicEdgeConv):
                module.gather_budget = 0
                module.export_mode = True
    return model


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of a prepared copy of ``model``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # JetModel.head_names is plain Python metadata; TorchScript warns that it cannot type it.
        warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)
        return torch.jit.script(_prepared_copy(model, chunking=True))


def export_torchscript(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a TorchScript file (``forward(x, mask) -> (embedding, scores)``) atomically.

    ``feature_names.json`` (and ``input_convention.json`` for published checkpoints) are
    stored as extra files (``torch.jit.load(path, _extra_files=...)``).
    """
    scripted = script_model(model)
    extra = {"feature_names.json": json.dumps(list(FEATURE_NAMES))}
    convention = getattr(model, "input_convention", None)
    if convention:
        extra["input_convention.json"] = json.dumps(convention)
    path = Path(path)
    with atomic_path(path) as tmp:
        scripted.save(str(tmp), _extra_files=extra)
    return path


def onnx_program(model: nn.Module, *, n_features: int | None = None, opset: int = 18):
    """The ``torch.onnx.ONNXProgram`` with inputs ``x``, ``mask`` and outputs ``embedding``, ``scores``."""
    prepared = _prepared_copy(model, chunking=False)
    n_features = n_features or int(getattr(model, "input_dim", 15))
    example = (torch.zeros(2, 30, n_features), torch.ones(2, 30, dtype=torch.bool))
    batch = torch.export.Dim("batch")
    particles = torch.export.Dim("particles")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.onnx.export(
            prepared,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=["x", "mask"],
            output_names=["embedding", "scores"],
            dynamic_shapes={"x": {0: batch, 1: particles}, "mask": {0: batch, 1: particles}},
            verbose=False,
        )


def onnx_model_proto(model: nn.Module, *, opset: int = 18):
    """The exported ``onnx.ModelProto`` with metadata: ``feature_names``, ``head_names`` (JSON)."""
    proto = onnx_program(model, opset=opset).model_proto
    metadata = {
        "format": "rs3l-coffea-onnx",
        "feature_names": json.dumps(list(FEATURE_NAMES)),
        "head_names": json.dumps(list(getattr(model, "head_names", []))),
    }
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        metadata["config"] = json.dumps(config.to_dict())
    convention = getattr(model, "input_convention", None)
    if convention:
        metadata["input_convention"] = json.dumps(convention)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def export_onnx(model: nn.Module, path: str | os.PathLike[str], *, opset: int = 18) -> Path:
    """Write an ONNX file (inputs ``x`` float32 (B, P, F), ``mask`` bool (B, P); outputs
    ``embedding``, ``scores``) atomically; metadata carries feature and head names."""
    payload = onnx_model_proto(model, opset=opset).SerializeToString()
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        handle.write(payload)
    return path
