"""The pretraining trains on its whole pool except validation: the pool's "test" share is never
tested on (test sets come from the fine-tuning pool), so leaving it out would waste generated jets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tiny", "at_scale"])
def test_pretraining_trains_on_its_pool_except_validation(name: str, tmp_path: Path) -> None:
    from rs3l_coffea.study import load_study_config
    from rs3l_coffea.study.layout import StudyLayout
    from rs3l_coffea.study.trainings import pretrain_config
    from rs3l_coffea.training.dataset import assign_split

    config = load_study_config(REPO / "studies" / f"{name}.yaml")
    sp = config.split
    data = pretrain_config(config, "resim", StudyLayout(tmp_path)).data
    ids = np.arange(200_000, dtype=np.int64) * 7919 + 3
    study_pool, _ = assign_split(ids, sp.pretrain_fraction, sp.val_fraction, sp.test_fraction, sp.salt)
    pool, split = assign_split(ids, data.pretrain_fraction, data.val_fraction, data.test_fraction, data.split_salt)
    np.testing.assert_array_equal(pool, study_pool)  # the same hard events are pretraining events
    in_pool = pool == "pretrain"
    assert not np.any(split[in_pool] == "test")
    trained = np.mean(split[in_pool] == "train")
    assert trained == pytest.approx(1 - sp.val_fraction, abs=0.01)


def test_extra_pairs_join_the_pretraining_files_and_are_checked_up_front(tmp_path: Path) -> None:
    from rs3l_coffea.errors import InputFileError
    from rs3l_coffea.study import load_study_config
    from rs3l_coffea.study.diagnosis import load_diagnosis_config, variant_config
    from rs3l_coffea.study.layout import StudyLayout
    from rs3l_coffea.study.trainings import pretrain_config, pretrain_settings

    study = load_study_config(REPO / "studies" / "at_scale.yaml")
    layout = StudyLayout(tmp_path / "study")
    # A study without the option depends on the same settings as before it existed.
    assert "extra_pairs" not in pretrain_settings(study)
    assert pretrain_config(study, "resim", layout).data.files == [str(layout.pretrain_data())]

    pairs = tmp_path / "wz_qq_pairs"
    pairs.mkdir()
    with_pairs = study.model_copy(update={"pretrain": study.pretrain.model_copy(update={"extra_pairs": [str(pairs)]})})
    assert pretrain_settings(with_pairs)["extra_pairs"] == [str(pairs)]  # a changed list reruns the pretraining
    assert pretrain_config(with_pairs, "resim", layout).data.files == [str(layout.pretrain_data()), str(pairs)]

    # The shipped W->qq variant names a directory made by hand first; missing, it is refused
    # before any stage runs, naming the path and how to make it.
    diagnosis = load_diagnosis_config(REPO / "studies" / "at_scale_diagnosis.yaml")
    w_pairs = variant_config(study, diagnosis, "w_pairs")
    assert w_pairs.pretrain.extra_pairs == ["~/rs3l-studies/wz_qq_pairs/ntuple"]
    missing = study.model_copy(update={"pretrain": study.pretrain.model_copy(
        update={"extra_pairs": [str(tmp_path / "nowhere")]})})
    with pytest.raises(InputFileError, match=r"pretrain\.extra_pairs: .*nowhere not found .*rs3l ntuple"):
        pretrain_config(missing, "resim", layout)
