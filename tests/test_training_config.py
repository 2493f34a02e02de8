"""Training configuration: YAML, overrides, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from rs3l_coffea.errors import ConfigError
from rs3l_coffea.training.config import TrainConfig, load_config


def test_defaults_follow_the_paper() -> None:
    config = load_config()
    assert isinstance(config, TrainConfig)
    assert config.loss.name == "ntxent" and config.loss.temperature == 0.1
    assert config.data.batch_size == 100
    assert (config.optimizer.name, config.optimizer.lr) == ("adam", 1e-3)
    assert (config.scheduler.name, config.scheduler.step_size, config.scheduler.gamma) == ("step", 50, 0.5)


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("task: finetune\noptimizer: {lr: 0.01}\ndata: {augmentations: [seed]}\n")
    config = load_config(path, ["optimizer.lr=2e-4", "data.augmentations=seed,fsr_up", "finetune.mode=lora"])
    assert config.task == "finetune"
    assert config.optimizer.lr == 2e-4
    assert config.data.augmentations == ["seed", "fsr_up"]
    assert config.finetune.mode == "lora"
    assert config.to_dict()["finetune"]["mode"] == "lora"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["optimizer.lrr=1"], ["optimizer.lrr", "valid keys", "lr"]),
        (["finetune.mode=frozen"], ["finetune.mode", "frozen", "fixed", "floating", "lora"]),
        (["scheduler.name=linear"], ["scheduler.name", "linear", "cosine"]),
        (["data.augmentations=seed,herwig"], ["data.augmentations[1]", "herwig", "vincia"]),
        (["optimizer.lr=-1"], ["optimizer.lr", "-1", "> 0"]),
        (["epochs=two"], ["epochs", "two", "integer"]),
        (["data.val_fraction=0.6", "data.test_fraction=0.5"], ["val_fraction", "< 1"]),
        (["nonsense"], ["key.path=value"]),
    ],
)
def test_bad_values_name_key_value_and_choices(overrides: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_bad_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
