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
