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


def test_default_augmentations_are_every_variant_but_nominal_in_code_order() -> None:
    # The default comes from the AugmentationName literal; VARIANT_CODES is the list of variants.
    from rs3l_coffea.variants import VARIANT_CODES

    expected = [name for name in VARIANT_CODES if name != "nominal"]
    assert load_config().data.augmentations == expected
    assert load_config().data.augmentations is not load_config().data.augmentations


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


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("optimizer.lr=.nan", ["optimizer.lr", "nan", "finite"]),
        ("optimizer.lr=.inf", ["optimizer.lr", "inf", "finite"]),
        ("optimizer.lr=inf", ["optimizer.lr", "inf", "finite"]),
        ("seed=-1", ["config key seed", "-1", ">= 0"]),
        ("data.split_salt=-3", ["data.split_salt", "-3", ">= 0"]),
        ("optimizer.momentum=-0.5", ["optimizer.momentum", "-0.5", ">= 0"]),
        ("loss.temperature=.nan", ["loss.temperature", "nan", "finite"]),
        ("scheduler.gamma=.nan", ["scheduler.gamma", "nan", "finite"]),
        ("loss.vicreg_variance=-1", ["loss.vicreg_variance", "-1", ">= 0"]),
        ("loss.vicreg_covariance=-0.1", ["loss.vicreg_covariance", ">= 0"]),
        ("finetune.lora_alpha=.nan", ["finetune.lora_alpha", "finite"]),
        ("epochs=true", ["config key epochs", "True", "integer"]),
        ("model={backbone: {k: 1000000000}}", ["config key model", "DGCNNConfig.k", "at most 1024"]),
    ],
)
def test_training_settings_that_would_crash_later_are_refused_naming_the_key(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_cli_sets_typed_fields_without_a_yaml_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths reach the config as given: the former ``key=repr(value)`` strings, parsed back as
    YAML, doubled the backslash of a file name and read ``--data 1e3`` as a number."""
    from typer.testing import CliRunner

    import rs3l_coffea.training.trainer as trainer
    from rs3l_coffea.cli import app

    seen = []

    class Done(Exception):
        pass

    def capture(config, **kwargs):
        seen.append((config, kwargs))
        raise Done

    monkeypatch.setattr(trainer, "train", capture)
    out = tmp_path / "run\\one"
    result = CliRunner().invoke(
        app,
        ["train", "pretrain", "--data", "1e3", "--data", str(tmp_path / "a'b.root"), "--out", str(out),
         "--lr", "0.002", "--seed", "7", "--augmentations", "seed,rotate", "--set", "loss.temperature=0.2"],
    )
    assert isinstance(result.exception, Done), result.output
    (config, kwargs), = seen
    assert config.data.files == ["1e3", str(tmp_path / "a'b.root")]
    assert config.out_dir == str(out)
    assert (config.optimizer.lr, config.seed, config.loss.temperature) == (0.002, 7, 0.2)
    assert (config.data.augmentations, config.data.symmetry_augmentations) == (["seed"], ["rotate"])
    assert config.data.partner == "resim+symmetry"
    assert kwargs["resume"] is False and kwargs["allow_changed_config"] is False


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_cli_refuses_a_non_finite_learning_rate_up_front(tmp_path: Path, value: str) -> None:
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["train", "pretrain", "--data", str(tmp_path), "--out", str(out), "--lr", value])
    assert result.exit_code == 2, result.output
    assert "optimizer.lr" in result.output and "finite" in result.output
    assert not out.exists()
