"""Parameter groups and schedules follow the paper's optimisation recipe."""

import itertools
from functools import partial

import pytest
import torch

from vitlab.models import create_model
from vitlab.training.module import ViTClassifier
from vitlab.training.optim import parameter_groups, warmup_then_decay


def group_names(model: torch.nn.Module, groups: list[dict]) -> list[set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in group["params"]} for group in groups]


def test_no_weight_decay_on_biases_norms_position_embedding_and_class_token():
    model = create_model("vit_ti16", image_size=32, patch_size=8, num_classes=3, depth=2)
    decay_names, no_decay_names = group_names(model, parameter_groups(model))
    assert {
        "class_token",
        "position_embedding",
        "norm.weight",
        "blocks.0.norm1.weight",
        "head.bias",
    } <= no_decay_names
    assert {"blocks.0.attention.qkv.weight", "blocks.1.mlp.fc2.weight", "head.weight"} <= decay_names
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))


def test_the_no_decay_group_is_what_the_model_declares_stem_included():
    model = create_model("r50_vit_b16", image_size=32, depth=1, dim=64, heads=2, mlp_dim=128)
    decay_names, no_decay_names = group_names(model, parameter_groups(model))
    assert no_decay_names == model.no_weight_decay()
    assert {"stem.root.norm.weight", "stem.stages.2.blocks.8.norm3.bias"} <= no_decay_names
    assert {"stem.root.conv.weight", "stem.stages.0.blocks.0.downsample.conv.weight"} <= decay_names


@pytest.mark.parametrize(
    "options",
    [
        {"position_embedding": "sincos2d"},
        {"tokenizer": "shifted", "attention": "lsa", "position_embedding": "sincos2d", "pooling": "seq"},
        {"tokenizer": "conv", "pooling": "avg"},
    ],
)
def test_every_model_option_declares_only_parameters_it_has(options):
    model = create_model("vit_ti16", image_size=32, patch_size=8, num_classes=3, depth=1, **options)
    decay_names, no_decay_names = group_names(model, parameter_groups(model))
    fixed = options.get("position_embedding") == "sincos2d"
    assert ("position_embedding" in no_decay_names) is not fixed  # a fixed embedding is a buffer
    assert "position_embedding" in dict(model.named_buffers()) or not fixed
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))


class Declares(torch.nn.Module):
    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.scale = torch.nn.Parameter(torch.ones(2, 2))
        self.names = names

    def no_weight_decay(self) -> set[str]:
        return self.names


def test_parameter_groups_follow_any_models_declaration_not_parameter_names():
    model = Declares({"scale"})
    assert group_names(model, parameter_groups(model)) == [{"linear.weight", "linear.bias"}, {"scale"}]
    with pytest.raises(ValueError, match=r"no_weight_decay\(\) names \['scael'\], which are not parameters"):
        parameter_groups(Declares({"scael"}))


OPTIMIZERS = {
    "partial with weight_decay": (partial(torch.optim.Adam, lr=1e-3, weight_decay=0.1), 0.1),
    "plain function, AdamW's default decay": (lambda groups: torch.optim.AdamW(groups, lr=1e-3), 0.01),
    "SGD without decay": (partial(torch.optim.SGD, lr=0.1), 0.0),
}


@pytest.mark.parametrize("case", OPTIMIZERS)
def test_the_decay_group_takes_the_optimizers_own_weight_decay(case):
    factory, expected = OPTIMIZERS[case]
    module = ViTClassifier(
        "vit_ti16",
        num_classes=3,
        model_options={"image_size": 32, "patch_size": 8, "depth": 1},
        optimizer=factory,
    )
    decay, no_decay = module.configure_optimizers().param_groups
    assert decay["weight_decay"] == pytest.approx(expected)
    assert no_decay["weight_decay"] == 0.0
    assert group_names(module.model, [no_decay])[0] == module.model.no_weight_decay()


def test_frozen_parameters_are_left_out_of_the_groups():
    model = create_model("vit_ti16", image_size=32, patch_size=8, num_classes=3, depth=1)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head.")
    groups = parameter_groups(model)
    assert sum(len(g["params"]) for g in groups) == 2


def rates(decay: str, total_steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_then_decay(optimizer, total_steps=total_steps, decay=decay, **kwargs)
    values = []
    for _ in range(total_steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_warmup_cosine_rises_linearly_then_decays_to_the_floor():
    values = rates("cosine", 100, warmup_steps=10, min_lr_ratio=0.1)
    assert values[:3] == pytest.approx([0.1, 0.2, 0.3])
    assert values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=0.02)  # half way through the decay
    assert values[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_warmup_length_can_be_a_fraction_of_the_run():
    values = rates("linear", 200, warmup_fraction=0.1)
    assert values[19] == pytest.approx(1.0) and values[18] < 1.0
    assert values[-1] == pytest.approx(1 / 180, abs=1e-3)


def test_constant_schedule_keeps_the_rate():
    assert rates("constant", 20) == pytest.approx([1.0] * 20)


def test_a_run_without_steps_is_an_error():
    with pytest.raises(ValueError, match="total_steps=0"):
        rates("cosine", 0)


def test_an_unknown_decay_names_the_choices():
    with pytest.raises(
        ValueError, match="decay='step' is not a schedule: use one of cosine, linear, constant"
    ):
        rates("step", 10)
