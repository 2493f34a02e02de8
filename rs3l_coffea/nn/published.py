"""Load checkpoints of the published RS3L code (jeffkrupa/deepjet-geometric) into our DGCNN.

Input convention of the published checkpoints
---------------------------------------------
The published networks were trained on the ``features`` array of their h5 files (read by
``CLV2`` in ``deepjet_geometric/datasets/cl_v2_dataset.py``), 15 columns per particle built by
their merge script from the ntuple branches ``pfcand_pt, pfcand_relpt, pfcand_eta, pfcand_phi,
pfcand_e, pfcand_rele, pfcand_charge, pfcand_d0, pfcand_dz, pfcand_dr`` followed by the flags
``is_photon, is_muon (|pdg| == 13), is_electron (|pdg| == 11), is_ch, is_nh``. The lepton
flags are therefore in *our* order; only the ROOT inference loader ``CLV1ROOT``
(``cl_v1root_dataset.py``, not used for training) names and fills them the other way round.

The ntuple producer is not public, so the units and transforms of the ten continuous
features were read off the checkpoints themselves: Adam's second-moment estimate of the first
layer's weight gradient (``opt.state[0].exp_avg_sq``, shape 128 x 15) scales per input column
with the typical size of that input. Relative to the ``is_ch`` flag column, all four published
checkpoints agree (median over units): log-sized pT and E (3.4-3.6; ours 3.1 / 3.4, linear
GeV would be 40-54), log pT ratio (4.8-5.3; ours 7.4), axis-relative η and φ (0.26-0.37;
ours 0.32-0.33, absolute η / φ would be 1.2 / 2.7), ΔR (0.32-0.38; ours 0.46), and a *linear*
energy ratio E / E_jet (0.135-0.154; ours as a log 7.4, linear 0.075). The flag columns give
the particle mix: photons / charged 0.94-0.99 (ours 0.97), neutral hadrons 0.48-0.53 (ours
0.51), column 12 above column 11 (0.20-0.22 vs 0.16-0.18, ours 0.13 vs 0.09: electrons outnumber
muons), which confirms the lepton order. Numbers:
``docs/published.md``.

So :class:`PublishedInputAdapter` feeds a published backbone our features with one change:
``log_e_rel`` becomes ``E / E_jet = exp(log_e_rel)``. The impact parameters stay ``tanh(d0 /
mm)``, ``tanh(dz / mm)``: their published columns are detector-dependent (d0 0.3-0.8 x the
size of ours, dz about +-1 for charged particles, as from a per-event vertex offset the
network learnt to ignore: first-layer weight norm 2.2 in mar20_run0, charge 1.4, the other
columns 4.9-22, d0 351), not a
convention we can map.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from rs3l_coffea.errors import InputFileError, ModelFormatError
from rs3l_coffea.features.names import FEATURE_INDEX, FEATURE_NAMES
from rs3l_coffea.nn.build import build_model
from rs3l_coffea.nn.config import DGCNNConfig, ModelConfig
from rs3l_coffea.nn.jet_model import JetModel

PUBLISHED_FEATURE_NAMES: tuple[str, ...] = (
    "log_pt", "log_pt_rel", "deta", "dphi", "log_e", "e_rel", "charge", "tanh_d0", "tanh_dz",
    "delta_r", "is_photon", "is_muon", "is_electron", "is_charged_hadron", "is_neutral_hadron",
)
"""What a published backbone sees after :class:`PublishedInputAdapter` (``e_rel = E / E_jet``).

Index 11 is ``|pdg| == 13`` and index 12 ``|pdg| == 11``, as in the published training h5
files (and in :data:`~rs3l_coffea.features.names.FEATURE_NAMES`).
"""

PUBLISHED_INPUT_CONVENTION: dict[str, object] = {
    "source": "jeffkrupa/deepjet-geometric checkpoints (mar20_*), trained on CLV2 h5 'features'",
    "inputs": list(FEATURE_NAMES),
    "seen_by_backbone": list(PUBLISHED_FEATURE_NAMES),
    "transforms": {"log_e_rel": "e_rel = exp(log_e_rel) = E / E_jet (linear in the published features)"},
    "lepton_flags": "index 11 is_muon (|pdg| == 13), index 12 is_electron (|pdg| == 11): unchanged",
    "unmapped": (
        "tanh_d0 / tanh_dz passed unchanged; the published d0 / dz columns are detector-dependent "
        "(see rs3l_coffea.nn.published and docs/published.md)"
    ),
}
"""The adapter, as recorded in exports and in :func:`published_model_card`."""


class PublishedInputAdapter(nn.Module):
    """Our 15 features (``FEATURE_NAMES``) → the convention of the published checkpoints.

    ``forward(x (B, P, 15), mask (B, P)) -> (B, P, 15)``: ``log_e_rel`` becomes
    ``E / E_jet = exp(log_e_rel)`` on real particles (padded slots stay 0); every other column,
    the lepton flags included, is passed through.
    """

    def __init__(self) -> None:
        super().__init__()
        self.e_rel_index = FEATURE_INDEX["log_e_rel"]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        i = self.e_rel_index
        real = mask.unsqueeze(-1)
        e_rel = torch.where(real[..., 0:1], torch.exp(x[..., i : i + 1]), torch.zeros_like(x[..., i : i + 1]))
        return torch.cat((x[..., :i], e_rel, x[..., i + 1 :]), dim=-1)


def from_published_features(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :class:`PublishedInputAdapter`: published-convention features → ours.

    For rows read from the published h5 files (``features``): ``e_rel`` becomes
    ``log_e_rel = log(e_rel)`` on real particles (padded slots stay 0). A non-positive
    ``e_rel`` on a real particle raises :class:`~rs3l_coffea.errors.InputFileError` naming the
    jet and particle (such rows are not in the published convention).
    """
    i = FEATURE_INDEX["log_e_rel"]
    column = x[..., i]
    bad = mask & ~(column > 0)
    if bool(bad.any()):
        jet, particle = (int(v) for v in torch.nonzero(bad)[0])
        raise InputFileError(
            f"published features: e_rel = {float(column[jet, particle])!r} at jet {jet}, "
            f"particle {particle} is not positive (not the published E / E_jet column?)"
        )
    log_e_rel = torch.where(mask, torch.log(torch.where(mask, column, torch.ones_like(column))), 0.0)
    out = x.clone()
    out[..., i] = log_e_rel
    return out


class PublishedBackbone(nn.Module):
    """A published DGCNN behind :class:`PublishedInputAdapter`: takes our features.

    ``forward(x, mask) = dgcnn(adapter(x, mask), mask)``; ``config``, ``input_dim`` and
    ``output_dim`` are the DGCNN's, so :class:`~rs3l_coffea.nn.jet_model.JetModel` and the
    exporters treat it like any backbone.
    """

    def __init__(self, dgcnn: nn.Module) -> None:
        super().__init__()
        self.adapter = PublishedInputAdapter()
        self.dgcnn = dgcnn
        self.config = dgcnn.config
        self.input_dim = int(dgcnn.input_dim)
        self.output_dim = int(dgcnn.output_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.dgcnn(self.adapter(x, mask), mask)

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


def load_published_rs3l(
    path: str | os.PathLike[str], *, edge_path: str = "algebraic", adapt_inputs: bool = True
) -> JetModel:
    """Load a published RS3L backbone checkpoint (``{"model": state_dict, ...}``) as a JetModel.

    Read with ``torch.load(weights_only=True)`` (no arbitrary unpickling). The output dimension
    (8, or 128 for ``*_128outputdims.pt``) is taken from the checkpoint. The returned model has
    no heads and is in eval mode; ``edge_path`` selects the EdgeConv implementation.

    With ``adapt_inputs`` (default) the model takes our features (``FEATURE_NAMES``) and its
    backbone is a :class:`PublishedBackbone`, which converts them to the convention the
    checkpoint was trained on (see the module docstring); ``model.input_convention`` records
    that. ``adapt_inputs=False`` gives the bare DGCNN, for inputs already in the published
    convention (``PUBLISHED_FEATURE_NAMES``) and for parity tests against the published code.
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
    if adapt_inputs:
        model.backbone = PublishedBackbone(model.backbone)
        model.input_convention = dict(PUBLISHED_INPUT_CONVENTION)
    else:
        model.input_convention = {
            **PUBLISHED_INPUT_CONVENTION, "inputs": list(PUBLISHED_FEATURE_NAMES), "transforms": {},
        }
    return model.eval()


def published_model_card(path: str | os.PathLike[str], model: JetModel | None = None):
    """A :class:`~rs3l_coffea.nn.model_file.ModelCard` describing a published checkpoint.

    ``preprocessing`` records the input convention (:data:`PUBLISHED_INPUT_CONVENTION`, or
    the model's own ``input_convention`` when given) so an export or a report states which
    features the published weights see.
    """
    from rs3l_coffea.nn.model_file import ModelCard

    convention = getattr(model, "input_convention", None) or PUBLISHED_INPUT_CONVENTION
    return ModelCard(
        description=f"published RS3L backbone {Path(path).name} (jeffkrupa/deepjet-geometric)",
        preprocessing={"input_convention": dict(convention)},
        config=(model.config.to_dict() if model is not None else {}),
    )
