"""The small-data recipes compose: every ablation overlay on the old recipe, v2 as the old recipe plus
conf/ablation/combined.yaml, and the pre-training experiment that v2 chains from."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vitlab.cli.validate import validate

ABLATIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "ablation").glob("*.yaml"))


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_composes_on_the_old_recipe_and_validates(compose_config, ablation, monkeypatch):
    monkeypatch.setenv("VITLAB_MPP_CKPT", "mpp.ckpt")
    monkeypatch.setenv("VITLAB_MPP_COMBINED_CKPT", "mpp_combined.ckpt")
    old = compose_config("experiment=foodvision_small_data", tiny=False)
    cfg = compose_config("experiment=foodvision_small_data", f"+ablation={ablation}", tiny=False)
    validate(cfg)
    changed = {
        key
        for key in ("model", "data", "callbacks")
        if OmegaConf.to_container(cfg[key], resolve=True) != OmegaConf.to_container(old[key], resolve=True)
    }
    assert bool(changed) == (ablation != "baseline")  # each overlay changes something; baseline nothing


def test_v2_is_the_old_recipe_plus_the_combined_techniques(compose_config):
    v2 = compose_config("experiment=foodvision_small_data_v2", tiny=False)
    combined = compose_config("experiment=foodvision_small_data", "+ablation=combined", tiny=False)
    for key in ("model", "data", "optimizer", "scheduler", "callbacks"):
        assert v2[key] == combined[key], key
    # only its schedule is shorter: 250 epochs fit the 30 minutes on 2 CPU cores (docs/results/from_scratch.md)
    assert {k: v for k, v in v2.trainer.items() if k != "max_epochs"} == {
        k: v for k, v in combined.trainer.items() if k != "max_epochs"
    }
    assert v2.trainer.max_epochs < combined.trainer.max_epochs
    assert v2.test_ckpt == "last" and "ema" in v2.callbacks
    assert v2.model.tokenizer == "shifted" and v2.model.attention == "lsa"


def test_mpp_pretraining_never_validates_or_tests_and_fits_v2s_backbone(compose_config):
    pretrain = compose_config("experiment=foodvision_mpp_pretrain", "+ablation=combined", tiny=False)
    v2 = compose_config("experiment=foodvision_small_data_v2", tiny=False)
    assert pretrain.task.name == "mpp" and pretrain.test is False
    assert pretrain.trainer.limit_val_batches == 0
    shape = ("name", "image_size", "patch_size", "depth", "tokenizer", "attention", "position_embedding")
    assert all(pretrain.model[key] == v2.model[key] for key in shape)
    validate(pretrain)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.tokenizer=convolutional"], "tokenizer='convolutional' is not supported"),
        (["model.tokenizer=conv", "model.image_size=48", "model.patch_size=12"], "must be a power of 2"),
        (["model.attention=local"], "attention='local' is not supported"),
    ],
)
def test_bad_model_options_stop_the_run_naming_the_option(compose_config, overrides, message):
    from vitlab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(compose_config(*overrides))


def test_v3_is_the_old_recipe_fine_tuned_from_mpp_pretraining_of_the_same_backbone(compose_config):
    v3 = compose_config("experiment=foodvision_small_data_v3", "model.pretrained=mpp.ckpt", tiny=False)
    old = compose_config("experiment=foodvision_small_data", tiny=False)
    pretrain = compose_config("experiment=foodvision_mpp_pretrain", tiny=False)
    assert {k: v for k, v in v3.model.items() if k != "pretrained"} == {
        k: v for k, v in old.model.items() if k != "pretrained"
    }
    assert v3.model.pretrained == "mpp.ckpt" and old.model.pretrained is None
    for key in ("data", "optimizer", "scheduler", "callbacks"):
        assert v3[key] == old[key], key
    # the validated budget: 100 epochs of pre-training, then 100 of fine-tuning (docs/results/from_scratch.md)
    assert v3.trainer.max_epochs == pretrain.trainer.max_epochs == 100
    assert v3.test_ckpt == "last"
    assert pretrain.model == {**old.model}


def test_v3_without_its_pretraining_checkpoint_says_which_option_to_give(compose_config, monkeypatch):
    from vitlab.errors import ConfigError

    monkeypatch.delenv("VITLAB_MPP_CKPT", raising=False)
    with pytest.raises(ConfigError, match=r"model\.pretrained: .*VITLAB_MPP_CKPT.*give model\.pretrained="):
        validate(compose_config("experiment=foodvision_small_data_v3", tiny=False))
