"""The config tree composes for every group option, and bad values fail at once, naming the option."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from vitlab.cli.command import composition_message
from vitlab.cli.validate import validate
from vitlab.errors import ConfigError
from vitlab.models import ModelConfig
from vitlab.training.trainer import resolve_precision

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    """A group's options; ``_*.yaml`` are shared parts that the options build on."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={name}"
        for group in (
            "data",
            "model",
            "optimizer",
            "scheduler",
            "trainer",
            "logger",
            "callbacks",
            "experiment",
            "launcher",
            "debug",
        )
        for name in options(group)
    ]
    + ["hparams_search=optuna"],
)
def test_every_group_option_composes_and_validates(compose_config, override):
    required = {
        "data=imagefolder": "data.root=/tmp/x",
        "data=streaming": "data.input_dir=/tmp/x",
        "experiment=foodvision_small_data_v3": "model.pretrained=/tmp/mpp_last.ckpt",
    }
    cfg = compose_config(override, required.get(override, "seed=1"), tiny=False)
    validate(cfg)
    assert cfg.model.image_size % ModelConfig.from_config(cfg.model).patch_size == 0


def test_image_size_follows_the_model_into_the_data(compose_config):
    cfg = compose_config("data=foodvision_mini", "model.image_size=384", tiny=False)
    assert cfg.data.image_size == 384


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.image_size=100",
            r"model.image_size=100 is not divisible by model.patch_size=8.*model.image_size=96",
        ),
        ("optimizer.lr=-0.1", r"^optimizer.lr=-0.1: Invalid learning rate"),
        ("optimizer.weight_decay=-1", r"^optimizer.weight_decay=-1: Invalid weight_decay"),
        ("model.dropout=1.2", r"model.dropout=1.2 must lie in \[0, 1\)"),
        ("data.batch_size=0", r"^data.batch_size=0: must be at least 1"),
        ("preprocessing.resize_size=16", r"preprocessing.resize_size=16 is smaller than data.image_size=32"),
        ("preprocessing.mean=[0.5,0.5]", r"preprocessing.mean=\[0.5, 0.5\] must hold 3 values"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
        ("label_smoothing=1.5", "label_smoothing=1.5"),
        ("model.name=vit_q16", r"model.name=vit_q16: unknown model 'vit_q16'"),
        ("model.pooling=max", r"model.pooling='max' is not supported"),
        ("trainer.max_epochs=x", r"trainer.max_epochs='x' is invalid"),
        ("test_ckpt=worst", r"test_ckpt='worst' is invalid: expected best or last"),
    ],
)
def test_invalid_values_raise_naming_the_option(compose_config, override, message):
    cfg = compose_config(override)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+trainer.max_epoch=1",
            r"^trainer.max_epoch is not an option of .*Trainer: did you mean trainer.max_epochs\?",
        ),
        ("+data.batchsize=8", r"^data.batchsize is not an option of .*: did you mean data.batch_size\?"),
        ("+model.patchsize=8", r"^model.patchsize is not an option: did you mean model.patch_size\?"),
        (
            "+optimizer.betas2=1",
            r"^optimizer.betas2 is not an option of torch.optim.Adam: did you mean optimizer.betas\?",
        ),
    ],
)
def test_added_keys_are_checked_against_what_they_build_with_the_closest_names(
    compose_config, override, message
):
    cfg = compose_config(override)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("model.patchsize=8", ConfigCompositionException),
        ("model=vit_q16", ConfigCompositionException),
        ("optimizer=lamb", ConfigCompositionException),
    ],
)
def test_unknown_keys_and_options_fail_at_composition(compose_config, override, error):
    with pytest.raises(error) as raised:
        compose_config(override)
    assert override.split("=")[0].split(".")[-1] in str(raised.value) or override.split("=")[1] in str(
        raised.value
    )


def test_the_data_groups_old_preprocessing_options_point_at_preprocessing(compose_config):
    with pytest.raises(ConfigCompositionException) as raised:
        compose_config("data.mean=[0.5,0.5,0.5]")
    assert composition_message(raised.value).startswith(
        "data.mean is not an option: did you mean preprocessing.mean?"
    )
    with pytest.raises(
        ConfigError, match=r"^data.std is not an option of .*: did you mean preprocessing.std\?"
    ):
        validate(compose_config("+data.std=[0.5,0.5,0.5]"))


def test_auto_precision_is_bf16_only_where_the_hardware_is_fast(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto") == "32-true"
    assert resolve_precision("16-mixed") == "16-mixed"


def test_resolved_config_has_no_missing_values(compose_config):
    from omegaconf import OmegaConf

    cfg = compose_config()
    assert not OmegaConf.missing_keys(cfg)


def test_the_shared_model_options_are_the_models_own_defaults(compose_config):
    """conf/model/_options.yaml names each option as the model does, and its non-null defaults are
    VisionTransformer's: the default model is the architecture's own."""
    import inspect

    import yaml

    from vitlab.models import ModelConfig, VisionTransformer

    shared = yaml.safe_load((CONF / "model" / "_options.yaml").read_text())
    assert set(shared) <= ModelConfig.keys()
    defaults = inspect.signature(VisionTransformer.__init__).parameters
    for key, value in shared.items():
        if key in defaults and value is not None:
            assert value == defaults[key].default, key
    for name in options("model"):
        cfg = compose_config(f"model={name}", tiny=False)
        assert set(shared) | {"name"} == set(cfg.model)  # every variant: the same shape, only its name
        assert cfg.model.patch_size is None  # Table 1's patch sizes are stated once, in the registry


def test_analyses_and_eval_share_the_model_group_and_eval_needs_no_model_placeholder(compose_config):
    train = compose_config(tiny=False)
    for config_name in ("analyze", "fewshot"):
        assert compose_config(config_name=config_name).model == train.model
    assert "model" not in compose_config("ckpt_path=x.ckpt", config_name="eval")


def test_a_users_own_variant_config_takes_the_shared_options_as_the_readme_says(compose_config, tmp_path):
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "my_vit.yaml").write_text(
        "defaults: [_options, _self_]\nname: vit_ti16\npatch_size: 8\ndepth: 2\n"
    )
    cfg = compose_config(f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "model=my_vit")
    validate(cfg)
    assert (cfg.model.name, cfg.model.depth, cfg.model.pooling) == ("vit_ti16", 2, "token")
    assert cfg.data.image_size == cfg.model.image_size
