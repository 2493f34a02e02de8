"""Load checkpoints of the published RS3L code (jeffkrupa/deepjet-geometric) into our DGCNN."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from rs3l_coffea.errors import ModelFormatError
from rs3l_coffea.nn.build import build_model
from rs3l_coffea.nn.config import DGCNNConfig, ModelConfig
from rs3l_coffea.nn.jet_model import JetModel

# published name → our name; the published conv{n} is 1-based
_RENAMES = (
    (re.compile(r"^pf_encode\.(\d+)\.(weight|bias)$"), r"embed.\1.\2"),
    (re.compile(r"^conv(\d+)\.nn\.0\.(weight|bias)$"), None),
    (re.compile(r"^output\.(\d+)\.(weight|bias)$"), r"output.\1.\2"),
)


def _rename(key: str) -> str | None:
    for pattern, target in _RENAMES:
        match = pattern.match(key)
        if match is None:
            continue
        if target is None:
            return f"convs.{int(match.group(1)) - 1}.message.0.{match.group(2)}"
        return match.expand(target)
    return None


def load_published_rs3l(path: str | os.PathLike[str], *, edge_path: str = "algebraic") -> JetModel:
    """Load a published RS3L backbone checkpoint (``{"model": state_dict, ...}``) as a JetModel.

    Read with ``torch.load(weights_only=True)`` (no arbitrary unpickling). The output dimension
    (8, or 128 for ``*_128outputdims.pt``) is taken from the checkpoint. The returned model has
    no heads and is in eval mode; ``edge_path`` selects the EdgeConv implementation.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ModelFormatError(f"{path}: not a loadable (weights-only) torch checkpoint: {error}") from error
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelFormatError(f"{path}: expected a dict with a 'model' state dict, got {type(checkpoint).__name__}")
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = _rename(key)
        if new_key is None:
            raise ModelFormatError(f"{path}: unexpected key {key!r} for the published RS3L DGCNN")
        renamed[new_key] = value
    if "output.6.weight" not in renamed:
        raise ModelFormatError(f"{path}: no 'output.6.weight': not the published RS3L DGCNN layout")
    output_dim = int(renamed["output.6.weight"].shape[0])
    config = ModelConfig(backbone=DGCNNConfig(output_dim=output_dim, edge_path=edge_path))
    model = build_model(config)
    expected = model.backbone.state_dict()
    for key, tensor in expected.items():
        if key not in renamed:
            raise ModelFormatError(f"{path}: missing tensor for {key!r}")
        if tuple(renamed[key].shape) != tuple(tensor.shape):
            raise ModelFormatError(
                f"{path}: tensor {key!r} has shape {tuple(renamed[key].shape)}, expected {tuple(tensor.shape)}"
            )
    model.backbone.load_state_dict(renamed, strict=True)
    return model.eval()
