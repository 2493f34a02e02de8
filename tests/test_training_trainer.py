"""The trainer on a learnable toy: pretraining, fine-tuning modes, supervised, resume, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.training.config import load_config
from rs3l_coffea.training.dataset import JetStream, expand_files, inspect_shards
from rs3l_coffea.training.ntuple import write_shards
from rs3l_coffea.training.toy import toy_pair_rows
from rs3l_coffea.training.trainer import Trainer, train

torch.set_num_threads(1)

TINY_MODEL = "model={backbone: {width: 16, k: 8, conv_layers: 1, output_hidden: [16], output_dim: 8}}"


@pytest.fixture(scope="module")
def toy_ntuple(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy_ntuple")
    write_shards(toy_pair_rows(700, seed=11, variants=("seed",)), out, shard_size=250)
    return out


def _config(ntuple: Path, out: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.files=[{ntuple}]",
            f"out_dir={out}",
            "data.batch_size=24",
            "data.shuffle_buffer=96",
            "data.step_size=100",
            "threads=1",
            "progress=false",
            "data.test_fraction=0.3",
            TINY_MODEL,
            *overrides,
        ],
    )


def _backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def _test_auc(model_path: Path, ntuple: Path) -> float:
    from sklearn.metrics import roc_auc_score

    from rs3l_coffea.nn import load_model

    model, _card = load_model(model_path)
    stream = JetStream(
        inspect_shards(expand_files([str(ntuple)])), mode="jets", split="test", pool="finetune",
        batch_size=64, drop_last=False, use_partner_jets=False, test_fraction=0.3,
    )
    scores, labels = [], []
    with torch.no_grad():
        for batch in stream:
            scores.append(model(batch["x"], batch["mask"])[1][:, 0])
            labels.append(batch["label"])
    return float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))


def test_pretraining_learns_and_fixed_head_separates_classes(toy_ntuple: Path, tmp_path: Path) -> None:
    pretrain = train(_config(toy_ntuple, tmp_path / "pre", "epochs=4", "scheduler.name=cosine"))
    history = pretrain.progress.history
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    # The paper's diagnostics are recorded per epoch: positive pairs align, classes separate.
    assert history[-1]["pos_cos/all"] > history[-1]["neg_cos/all"]
    assert "class_mean_cos/0_1" in history[-1] and "pos_cos/1" in history[-1]
    assert (tmp_path / "pre" / "metrics.csv").read_text().startswith("epoch,step,train_loss")
    assert len((tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()) == 4

    from rs3l_coffea.nn import load_model

    pretrained, _ = load_model(pretrain.model_path)
    config = _config(
        toy_ntuple, tmp_path / "fixed", "task=finetune", "epochs=4", f"finetune.backbone={pretrain.model_path}",
        "optimizer.lr=0.01",
    )
    trainer = Trainer(config)
    before = _backbone_state(trainer.model)
    for key, value in _backbone_state(pretrained).items():
        torch.testing.assert_close(before[key], value)
    result = trainer.fit()
    for key, value in _backbone_state(trainer.model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)  # frozen
    assert _test_auc(result.model_path, toy_ntuple) > 0.75


def test_floating_lora_and_supervised_train_what_they_should(toy_ntuple: Path, tmp_path: Path) -> None:
    from rs3l_coffea.nn import load_model
    from rs3l_coffea.nn.lora import has_lora

    pretrain = train(_config(toy_ntuple, tmp_path / "pre", "epochs=1", "max_steps_per_epoch=3"))
    base = _backbone_state(load_model(pretrain.model_path)[0])
    short = ("epochs=1", "max_steps_per_epoch=4", f"finetune.backbone={pretrain.model_path}")

    floating = Trainer(_config(toy_ntuple, tmp_path / "floating", "task=finetune", "finetune.mode=floating", *short))
    floating.fit()
    changed = [k for k, v in _backbone_state(floating.model).items() if not torch.equal(v, base[k])]
    assert changed  # the backbone moved

    lora = Trainer(_config(toy_ntuple, tmp_path / "lora", "task=finetune", "finetune.mode=lora", *short))
    trainable = {n for n, p in lora.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("heads.") for n in trainable)
    result = lora.fit()
    model, card = load_model(result.model_path)
    assert has_lora(model) and card.config["lora"]["rank"] == 4
    assert card.training["task"] == "finetune"

    supervised = train(_config(toy_ntuple, tmp_path / "sup", "task=supervised", "epochs=1", "max_steps_per_epoch=4"))
    model, card = load_model(supervised.model_path)
    assert card.head_names == ("score",)
    scores = model(torch.zeros(3, 100, 15), torch.ones(3, 100, dtype=torch.bool))[1]
    assert scores.shape == (3, 1) and bool(((scores >= 0) & (scores <= 1)).all())


def test_interrupted_run_resumes_with_identical_losses(toy_ntuple: Path, tmp_path: Path) -> None:
    overrides = ("epochs=2", "checkpoint_every=4", "data.partner=resim")
    reference = train(_config(toy_ntuple, tmp_path / "ref", *overrides))
    losses = reference.progress.step_losses
    assert len(losses) > 10

    class Interrupt(Exception):
        pass

    def stop_at(step: int, loss: float) -> None:
        if step == 6:  # two steps after the checkpoint at step 4, mid-epoch 0
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_config(toy_ntuple, tmp_path / "cut", *overrides), on_step=stop_at)
    resumed = train(_config(toy_ntuple, tmp_path / "cut", *overrides), resume=True)
    assert resumed.progress.step_losses == losses
    from rs3l_coffea.nn import load_model

    a, _ = load_model(reference.model_path)
    b, _ = load_model(resumed.model_path)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    steps = (tmp_path / "cut" / "steps.csv").read_text().splitlines()
    assert len(steps) == len(losses) + 1


def test_bad_setups_fail_before_the_first_step(toy_ntuple: Path, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="15 features per particle but the model expects 12"):
        Trainer(_config(toy_ntuple, tmp_path / "a", "model={backbone: {input_dim: 12, width: 8, k: 4}}"))
    with pytest.raises(InputFileError, match="does not exist"):
        Trainer(_config(tmp_path / "missing", tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"finetune\.backbone"):
        Trainer(_config(toy_ntuple, tmp_path / "c", "task=finetune"))
    with pytest.raises(InputFileError, match="pretrained backbone file"):
        Trainer(_config(toy_ntuple, tmp_path / "d", "task=finetune", f"finetune.backbone={tmp_path / 'x.safetensors'}"))
    with pytest.raises(ConfigError, match=r"data\.n_classes = 3"):
        Trainer(_config(toy_ntuple, tmp_path / "e", "task=supervised", "data.n_classes=3",
                        "model={backbone: {width: 8, k: 4}, heads: [{name: s}]}"))
    with pytest.raises(ConfigError, match="symmetry_augmentations"):
        Trainer(_config(toy_ntuple, tmp_path / "f", "data.partner=symmetry"))
    assert not (tmp_path / "a").exists()


def test_symmetry_partner_hook_is_used(toy_ntuple: Path, tmp_path: Path) -> None:
    calls = []

    def flip_eta(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
        calls.append(int(torch.randint(0, 1000, (1,), generator=generator)))
        x = x.clone()
        x[..., 2] = -x[..., 2]
        return x, mask

    from rs3l_coffea.training.partners import make_partner_fn

    config = _config(toy_ntuple, tmp_path / "sym", "epochs=1", "max_steps_per_epoch=3", "data.partner=symmetry")
    result = train(config, partner_fn=make_partner_fn("symmetry", augmentation=flip_eta))
    assert len(result.progress.step_losses) == 3
    assert len(calls) >= 3 and len(set(calls)) > 1  # a fresh generator state per step
    batch = {
        "x": torch.ones(2, 100, 15), "mask": torch.ones(2, 100, dtype=torch.bool),
        "x_partner": torch.zeros(2, 100, 15), "mask_partner": torch.ones(2, 100, dtype=torch.bool),
    }
    both = make_partner_fn("resim+symmetry", augmentation=flip_eta)
    x_a, _, x_b, _ = both(batch, torch.Generator().manual_seed(0))
    assert torch.equal(x_a, batch["x"]) and torch.equal(x_b, -torch.zeros(2, 100, 15).index_fill(2, torch.tensor([2]), 0))
    assert np.isfinite(result.progress.step_losses).all()


def test_bucketed_forward_equals_padded_forward() -> None:
    from rs3l_coffea.nn import build_model
    from rs3l_coffea.training.trainer import TrainingView

    torch.manual_seed(0)
    model = build_model({"backbone": {"width": 16, "k": 8, "conv_layers": 2, "output_hidden": [16]},
                         "heads": [{"name": "score"}]})
    rows = toy_pair_rows(40, seed=2)
    x, mask = torch.from_numpy(rows["features"]), torch.from_numpy(rows["mask"])
    mask[3] = False  # an empty jet is allowed too
    mask[5, 2] = False  # and masks with holes (real particles after a padded slot):
    x[6, 90:], mask[6] = x[0, :10], False
    mask[6, 90:] = True  # jet 6: ten particles in the last ten slots
    padded_embedding, padded_logits = model.backbone(x, mask), model(x, mask)[1]
    for bucket in (None, 7, 64):
        embedding, logits = TrainingView(model, bucket)(x, mask)
        torch.testing.assert_close(embedding, padded_embedding, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.sigmoid(logits), padded_logits, rtol=1e-5, atol=1e-6)


def test_step_schedule_and_early_stopping(toy_ntuple: Path, tmp_path: Path) -> None:
    # SGD with a vanishing rate leaves the weights unchanged, so the validation loss never
    # improves after the first epoch: patience 1 stops after the second of five epochs.
    result = train(_config(
        toy_ntuple, tmp_path / "es", "epochs=5", "max_steps_per_epoch=2", "optimizer.name=sgd",
        "optimizer.lr=1e-30", "optimizer.momentum=0.0", "scheduler.step_size=1", "scheduler.gamma=0.5",
        "early_stopping_patience=1",
    ))
    assert result.stopped_early
    history = result.progress.history
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0]["val_loss"] == history[1]["val_loss"]
    assert [h["lr"] for h in history] == pytest.approx([1e-30, 0.5e-30])
    assert result.progress.best_epoch == 0


# --- reliability round 2 -----------------------------------------------------------------------


def test_resume_with_another_configuration_is_refused_unless_asked(toy_ntuple: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(_config(toy_ntuple, out, "epochs=1", "max_steps_per_epoch=3"))
    assert first.progress.global_step == 3
    changed = ("epochs=2", "max_steps_per_epoch=3", "optimizer.lr=0.005", "data.batch_size=12", "seed=4")
    with pytest.raises(ConfigError) as info:
        train(_config(toy_ntuple, out, *changed), resume=True)
    message = str(info.value)
    for key in ("optimizer.lr: 0.001 -> 0.005", "data.batch_size: 24 -> 12", "seed: 0 -> 4", "--resume-with-changes"):
        assert key in message
    assert "epochs" not in message.split("(")[1].split(")")[0]  # more epochs is a plain resume
    # more epochs (or another read cache: memory, not results) resumes; an explicit override
    # resumes with the new learning rate applied
    resumed = train(_config(toy_ntuple, out, "epochs=2", "max_steps_per_epoch=3", "data.read_cache_mb=0"), resume=True)
    assert resumed.progress.global_step == 6
    trainer = Trainer(_config(toy_ntuple, out, "epochs=3", "max_steps_per_epoch=3", "optimizer.lr=0.005"),
                      allow_changed_config=True)
    result = trainer.fit(resume=True)
    assert result.progress.global_step == 9
    assert result.progress.history[-1]["lr"] == pytest.approx(0.005)
    assert result.progress.config["optimizer"]["lr"] == pytest.approx(0.005)


def test_non_finite_loss_stops_training_naming_the_step(toy_ntuple: Path, tmp_path: Path) -> None:
    from rs3l_coffea.errors import RS3LError
    from rs3l_coffea.training.trainer import build_task_model

    config = _config(toy_ntuple, tmp_path / "nan", "epochs=1", "max_steps_per_epoch=3")
    model = build_task_model(config)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(RS3LError, match=r"non-finite training loss nan at step 1 \(epoch 0, batch 1\)"):
        train(config, model=model)
    assert not (tmp_path / "nan" / "model.safetensors").exists()


def test_finetune_accepts_the_pretrain_output_directory(toy_ntuple: Path, tmp_path: Path) -> None:
    pretrained = train(_config(toy_ntuple, tmp_path / "pre", "epochs=1", "max_steps_per_epoch=2"))
    tuned = train(_config(toy_ntuple, tmp_path / "tune", "task=finetune", f"finetune.backbone={tmp_path / 'pre'}",
                          "epochs=1", "max_steps_per_epoch=2"))
    from rs3l_coffea.nn import load_model

    backbone, _ = load_model(pretrained.model_path)
    model, _ = load_model(tuned.model_path)
    for name, tensor in backbone.backbone.state_dict().items():  # fixed mode: backbone unchanged
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"directory .*empty holds no trained model: .*model\.safetensors.*expected"):
        Trainer(_config(toy_ntuple, tmp_path / "x", "task=finetune", f"finetune.backbone={tmp_path / 'empty'}"))
    with pytest.raises(InputFileError, match=r"pretrained backbone file .*nowhere does not exist; expected the output directory"):
        Trainer(_config(toy_ntuple, tmp_path / "x", "task=finetune", f"finetune.backbone={tmp_path / 'nowhere'}"))
