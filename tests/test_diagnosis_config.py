"""The diagnosis configuration: the shipped one is valid, bad ones fail up front naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rs3l_coffea.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_diagnosis_builds_every_variant_from_the_at_scale_study() -> None:
    from rs3l_coffea.study import load_study_config
    from rs3l_coffea.study.diagnosis import load_diagnosis_config, variant_config

    diagnosis = load_diagnosis_config(REPO / "studies" / "at_scale_diagnosis.yaml")
    study = load_study_config(diagnosis.study_config)
    assert diagnosis.study_config.resolve() == (REPO / "studies" / "at_scale.yaml").resolve()
    for name, overrides in diagnosis.variants.items():
        config = variant_config(study, diagnosis, name)
        # narrowed to the diagnosis's tasks, one size, one seed; generation and split untouched
        assert config.classifier.tasks == ["hbb", "wqq"] == diagnosis.tasks and config.classifier.seeds == [0]
        assert config.split.labelled_sizes == [max(study.split.labelled_sizes)]
        assert config.generation == study.generation
        for key, value in overrides.get("pretrain", {}).items():
            if key != "extra":
                assert getattr(config.pretrain, key) == value, (name, key)
    assert variant_config(study, diagnosis, "temperature_0.5").pretrain.temperature == pytest.approx(0.5)
    assert variant_config(study, diagnosis, "wider").model["backbone"]["width"] == 64


@pytest.mark.parametrize(("text", "message"), [
    ({"name": "x", "study_config": "s.yaml", "variants": {}}, "at least one variant"),
    ({"name": "x", "study_config": "s.yaml", "variants": {"a b": {}}}, "variant name 'a b'"),
    ({"name": "x", "study_config": "s.yaml", "variants": {"a": {"split": {}}}}, r"overrides \['split'\]"),
    ({"name": "x", "study_config": "s.yaml", "variants": {"a": {}}, "tasks": ["zz"]}, "tasks"),
    ({"name": "x", "study_config": "s.yaml", "variants": {"a": {}}, "tasks": ["hbb", "hbb"]}, "repeat a task"),
    ({"name": "x", "study_config": "s.yaml", "variants": {"a": {}}, "tasks": []}, "tasks"),
    ({"name": "x", "study_config": "s.yaml", "variants": {"a": {}}, "typo": 1}, "typo"),
])
def test_bad_diagnosis_configs_are_refused_naming_the_problem(tmp_path: Path, text: dict, message: str) -> None:
    from rs3l_coffea.study.diagnosis import load_diagnosis_config

    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(text))
    with pytest.raises(ConfigError, match=message):
        load_diagnosis_config(path)


def test_an_override_the_study_schema_refuses_names_the_variant(tmp_path: Path) -> None:
    from rs3l_coffea.study import load_study_config
    from rs3l_coffea.study.diagnosis import load_diagnosis_config, variant_config

    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "study_config": str(REPO / "studies" / "at_scale.yaml"),
                                    "variants": {"neg": {"pretrain": {"temperature": -1}}}}))
    diagnosis = load_diagnosis_config(path)
    with pytest.raises(ConfigError, match="neg"):
        variant_config(load_study_config(diagnosis.study_config), diagnosis, "neg")
