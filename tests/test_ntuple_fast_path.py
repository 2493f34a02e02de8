"""The ntuple builder does only the work its rows need, and its rows are those of the full path.

The full path (every partner jet with all observables and truth labels, paired by
``build_pair_rows``) is rebuilt here from ``features_from_file`` defaults and compared branch by
branch, exactly (the fast path must select the same jets and copy the same arrays).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "rs3l_coffea" / "data" / "samples"
VARIANTS = ("nominal", "seed", "fsr_up", "fsr_down", "vincia")


def _full_path_rows(process: str) -> dict[str, np.ndarray]:
    from rs3l_coffea.features import JetSelection
    from rs3l_coffea.features.pipeline import features_from_file
    from rs3l_coffea.training.build import _table_from_features, process_event_offset
    from rs3l_coffea.training.ntuple import build_pair_rows

    offset = process_event_offset(process)

    def table(variant: str, selection: JetSelection):
        result = features_from_file(SAMPLES / f"{process}_{variant}_00000.root", source="delphes",
                                    recluster_radius=0.8, selection=selection)
        assert {"msd", "n2", "label"} <= set(result)  # the full path computes everything
        return _table_from_features(result, np.asarray(result["hard_event_id"], np.int64) + offset, ("H_BB",), None)

    every_jet = JetSelection(pt_min=0.0, abs_eta_max=5.0, min_constituents=1)
    partners = {v: table(v, every_jet) for v in VARIANTS[1:]}
    return build_pair_rows(table("nominal", JetSelection.generated()), partners)


@pytest.mark.parametrize("process", ["zh_bb", "zj"])
def test_ntuple_rows_equal_the_full_path(process: str, tmp_path: Path) -> None:
    from rs3l_coffea.study.splits import read_ntuple
    from rs3l_coffea.training.build import build_ntuples

    files = [SAMPLES / f"{process}_{v}_00000.root" for v in VARIANTS]
    build_ntuples(files, tmp_path, selection="generated", shard_size=1000)
    fast = read_ntuple(tmp_path)
    full = _full_path_rows(process)
    assert len(fast["variant"]) > 0 and (fast["variant"] >= 0).any()  # real pairs, not only lonely jets
    assert set(full) == set(fast)
    for branch, expected in full.items():
        np.testing.assert_array_equal(fast[branch], np.asarray(expected).astype(fast[branch].dtype), err_msg=branch)


def test_kinematics_and_truth_options_subset_the_full_result() -> None:
    from rs3l_coffea.features import JetSelection
    from rs3l_coffea.features.pipeline import features_from_file

    path = SAMPLES / "zh_bb_nominal_00000.root"
    options = {"source": "delphes", "recluster_radius": 0.8, "selection": JetSelection.generated()}
    full = features_from_file(path, **options)
    light = features_from_file(path, observables="kinematics", truth=False, **options)
    assert "n2" not in light and "msd" not in light and "label" not in light  # absent, never zero-filled
    for name in ("pt", "eta", "phi", "mass", "n_constituents", "features", "mask", "event", "jet", "hard_event_id"):
        np.testing.assert_array_equal(light[name], full[name], err_msg=name)
    with pytest.raises(ValueError, match="observables must be"):
        features_from_file(path, observables="n2", **options)


def test_near_jets_keeps_exactly_the_jets_within_delta_r_of_a_nominal_jet_of_their_event() -> None:
    import awkward as ak

    from rs3l_coffea.training.build import NearJets
    from rs3l_coffea.training.ntuple import JetTable

    offset = 7 << 40
    nominal = JetTable(
        hard_event_id=np.array([offset + 5, offset + 2]), jet_index=np.zeros(2, np.int32),
        pt=np.ones(2), eta=np.array([0.0, 1.0]), phi=np.array([3.1, 0.0]), mass=np.ones(2),
        features=np.zeros((2, 1, 15), np.float32), mask=np.ones((2, 1), bool), label=np.zeros(2, np.int32),
    )
    jets = ak.Array([
        [{"eta": 0.0, "phi": -3.1}, {"eta": 0.39, "phi": 3.1}, {"eta": 0.41, "phi": 3.1}],  # event 5: phi wraps
        [{"eta": 1.0, "phi": 0.0}],  # event 3: no nominal jet there
        [{"eta": 1.2, "phi": 0.3}, {"eta": 1.0, "phi": 0.1}],  # event 2: dR 0.36 and 0.1
        [],
    ])
    kept = NearJets(nominal, offset, 0.4)(jets, np.array([5, 3, 2, 9]))
    # Independent check: ΔR by hand (Δφ across ±π for the first jet is 2π - 6.2 = 0.083).
    assert kept.tolist() == [[True, True, False], [False], [True, True], []]
