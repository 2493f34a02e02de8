"""Symmetry augmentations on awkward jets and constituents (before building features).

Input layout (the one :func:`rs3l_coffea.features.build_features` reads): ``jets`` with
fields ``pt, eta, phi, mass`` (events × jets, or a flat list of jets) and ``constituents``
with ``pt, eta, phi, energy`` plus any numeric fields carried along (``charge, pdg_id, d0,
dz, ...``), one level deeper (events × jets × particles). The same augmentation objects as
for padded batches are used, with the exact jet η (no estimate needed).

Unlike the padded path, the returned jets are *recomputed*: each jet's four-momentum becomes
``p_jet + Σ p_i' − Σ p_i``, so its axis follows its constituents. Features built afterwards
are relative to that new axis: a translation then moves the whole jet (relative features only
change through the energies' cosh η), while rotations, smearing, splitting and dropout change
the jet axis only slightly. Constituents come back sorted by pT (descending).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import awkward as ak
import numpy as np
import torch

from rs3l_coffea.augment._random import GeneratorLike, RandomSource
from rs3l_coffea.augment.kinematics import JetBatch, wrap_phi
from rs3l_coffea.augment.symmetry import Augmentation
from rs3l_coffea.errors import ConfigError, RS3LError

JET_FIELDS = ("pt", "eta", "phi", "mass")
KINEMATIC_FIELDS = ("pt", "eta", "phi", "energy")
_MAX_ABS_ETA = 20.0  # beyond any detector; Delphes writes 999.9 for undefined tracks


def _require_fields(array: ak.Array, needed: tuple[str, ...], what: str) -> None:
    missing = [name for name in needed if name not in array.fields]
    if missing:
        raise ConfigError(
            f"{what} lack field(s) {', '.join(missing)}; have {', '.join(array.fields) or 'none'}"
        )


def _padded(values: ak.Array, width: int) -> np.ndarray:
    padded = ak.fill_none(ak.pad_none(values, width, axis=1, clip=True), 0)
    return ak.to_numpy(padded).astype(np.float64)


def augment_constituents(
    jets: ak.Array,
    constituents: ak.Array,
    augmentation: Augmentation,
    generator: GeneratorLike = None,
    *,
    max_particles: int = 100,
) -> tuple[ak.Array, ak.Array]:
    """Apply ``augmentation`` to awkward jets + constituents; return ``(jets', constituents')``.

    ``max_particles`` is the capacity collinear splitting fills up to (the padded length the
    features will be built with). Other jet fields are kept; constituent fields other than
    ``pt, eta, phi, energy`` are carried with their particle (copied to both halves of a
    split) and keep their dtype. Bad kinematics (non-finite, pT ≤ 0, |η| > 20) raise
    :class:`~rs3l_coffea.errors.ConfigError` naming the jet and particle.
    """
    if not isinstance(augmentation, Augmentation):
        raise ConfigError(f"augmentation must be an Augmentation, got {type(augmentation).__name__}")
    if max_particles < 1:
        raise ConfigError(f"max_particles must be at least 1, got {max_particles}")
    jets, constituents = ak.Array(jets), ak.Array(constituents)
    _require_fields(jets, JET_FIELDS, "jets")
    _require_fields(constituents, KINEMATIC_FIELDS, "constituents")
    if constituents.ndim != jets.ndim + 1 or jets.ndim not in (1, 2):
        raise ConfigError(
            f"expected jets (events × jets or jets) and constituents one level deeper, got "
            f"{jets.ndim} and {constituents.ndim} dimensions"
        )
    per_event = jets.ndim == 2
    if per_event:
        n_jets_per_event = ak.to_numpy(ak.num(jets, axis=1))
        if not np.array_equal(n_jets_per_event, ak.to_numpy(ak.num(constituents, axis=1))):
            raise ConfigError("jets and constituents disagree on the number of jets per event")
        flat_jets, flat_constituents = ak.flatten(jets, axis=1), ak.flatten(constituents, axis=1)
    else:
        flat_jets, flat_constituents = jets, constituents

    multiplicity = ak.to_numpy(ak.num(flat_constituents, axis=1))
    n_jets = len(multiplicity)
    width = max(int(multiplicity.max()) if n_jets else 0, max_particles)
    columns = {name: _padded(flat_constituents[name], width) for name in flat_constituents.fields}
    mask_np = np.arange(width)[None, :] < multiplicity[:, None]
    jet_values = {name: ak.to_numpy(flat_jets[name]).astype(np.float64) for name in JET_FIELDS}

    _check_kinematics(columns, mask_np, jet_values)

    carried_names = [name for name in flat_constituents.fields if name not in KINEMATIC_FIELDS]
    for name in carried_names:
        field_type = str(ak.type(flat_constituents[name]).content.content)
        if not (field_type in ("bool",) or field_type.startswith(("int", "uint", "float"))):
            raise ConfigError(
                f"constituent field {name!r} has type {field_type}; only numeric fields can be "
                "carried through augmentations"
            )
    carried_dtypes = {
        name: ak.to_numpy(ak.flatten(flat_constituents[name], axis=None)).dtype
        for name in carried_names
    }
    to_tensor = torch.from_numpy
    mask = to_tensor(mask_np)
    jet_eta, jet_phi = to_tensor(jet_values["eta"]), to_tensor(jet_values["phi"])
    jet_pt, jet_mass = to_tensor(jet_values["pt"]), to_tensor(jet_values["mass"])
    deta = torch.where(mask, to_tensor(columns["eta"]) - jet_eta[:, None], 0.0)
    dphi = torch.where(mask, wrap_phi(to_tensor(columns["phi"]) - jet_phi[:, None]), 0.0)
    carried = (
        torch.stack([to_tensor(columns[name]) for name in carried_names], dim=-1)
        if carried_names else torch.zeros((n_jets, width, 0), dtype=torch.float64)
    )
    batch = JetBatch(
        pt=to_tensor(columns["pt"]) * mask, deta=deta, dphi=dphi,
        energy=to_tensor(columns["energy"]) * mask, mask=mask, carried=carried,
        jet_eta=jet_eta, remainder=torch.zeros((n_jets, 4), dtype=torch.float64),
        capacity=max_particles,
    )
    jet_pz = jet_pt * torch.sinh(jet_eta)
    jet_energy = torch.sqrt(jet_mass**2 + jet_pt**2 + jet_pz**2)
    jet_four = torch.stack((jet_pt, torch.zeros_like(jet_pt), jet_pz, jet_energy), dim=-1)
    batch = replace(batch, remainder=jet_four - batch.four_momenta().sum(dim=1))

    batch = augmentation.apply(batch, RandomSource(generator, torch.device("cpu")))
    batch = batch.sorted_by_pt()

    new_jets = _jets_from_batch(flat_jets, batch, jet_phi)
    new_constituents = _constituents_from_batch(
        flat_constituents, batch, jet_phi, carried_names, carried_dtypes
    )
    if per_event:
        new_jets = ak.unflatten(new_jets, n_jets_per_event)
        new_constituents = ak.unflatten(new_constituents, n_jets_per_event)
    return new_jets, new_constituents


def _check_kinematics(
    columns: dict[str, np.ndarray], mask: np.ndarray, jets: dict[str, np.ndarray]
) -> None:
    for name, values in jets.items():
        bad = ~np.isfinite(values)
        if name == "pt":
            bad |= values <= 0
        if bad.any():
            jet = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"jet {jet} has invalid {name} = {float(values[jet])!r}")
    for name in KINEMATIC_FIELDS:
        values = columns[name]
        bad = ~np.isfinite(values)
        if name in ("pt", "energy"):
            bad |= values <= 0
        if name == "eta":
            bad |= np.abs(values) > _MAX_ABS_ETA
        bad &= mask
        if bad.any():
            jet, particle = (int(i) for i in np.argwhere(bad)[0])
            raise ConfigError(
                f"constituent {particle} of jet {jet} has invalid {name} = {float(values[jet, particle])!r}"
            )


def _jets_from_batch(flat_jets: ak.Array, batch: JetBatch, jet_phi: torch.Tensor) -> ak.Array:
    px, py, pz, energy = batch.jet_four_momentum().unbind(dim=-1)
    pt = torch.hypot(px, py)
    eta = torch.asinh(pz / pt.clamp(min=torch.finfo(torch.float64).tiny))
    phi = wrap_phi(jet_phi + torch.atan2(py, px))
    mass = torch.sqrt(torch.clamp(energy**2 - px**2 - py**2 - pz**2, min=0.0))
    result = flat_jets
    for name, values in (("pt", pt), ("eta", eta), ("phi", phi), ("mass", mass)):
        dtype = ak.to_numpy(flat_jets[name]).dtype
        result = ak.with_field(result, values.numpy().astype(dtype), name)
    return result


def _constituents_from_batch(
    flat_constituents: ak.Array,
    batch: JetBatch,
    jet_phi: torch.Tensor,
    carried_names: list[str],
    carried_dtypes: dict[str, np.dtype],
) -> ak.Array:
    mask = batch.mask.numpy()
    counts = mask.sum(axis=1)
    kinematics = {
        "pt": batch.pt,
        "eta": batch.jet_eta[:, None] + batch.deta,
        "phi": wrap_phi(jet_phi[:, None] + batch.dphi),
        "energy": batch.energy,
    }
    original_dtypes = {
        name: ak.to_numpy(ak.flatten(flat_constituents[name], axis=None)).dtype
        for name in KINEMATIC_FIELDS
    }
    fields: dict[str, Any] = {}
    for name in flat_constituents.fields:
        if name in kinematics:
            values, dtype = kinematics[name].numpy(), original_dtypes[name]
        else:
            values = batch.carried[..., carried_names.index(name)].numpy()
            dtype = carried_dtypes[name]
            if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                values = np.rint(values)
        fields[name] = ak.unflatten(values[mask].astype(dtype), counts)
    record_name = flat_constituents.layout.purelist_parameter("__record__")
    return ak.zip(fields, depth_limit=2, with_name=record_name, behavior=flat_constituents.behavior)


def augmented_features(
    jets: ak.Array,
    constituents: ak.Array,
    augmentation: Augmentation,
    generator: GeneratorLike = None,
    *,
    max_particles: int = 100,
) -> Any:
    """Augment jets + constituents, then build padded features with ``build_features``.

    Returns whatever :func:`rs3l_coffea.features.build_features` returns for the augmented
    jets (features and mask).
    """
    try:
        from rs3l_coffea.features import build_features
    except ImportError as error:
        raise RS3LError(
            "rs3l_coffea.features.build_features is not available; augment padded features "
            "with the augmentation object directly instead"
        ) from error
    new_jets, new_constituents = augment_constituents(
        jets, constituents, augmentation, generator, max_particles=max_particles
    )
    return build_features(new_jets, new_constituents, max_particles=max_particles)
