"""The Table 1 registry: shapes, parameter counts, the hybrid, and the model config's shape."""

import inspect

import pytest
import torch

from vitlab.models import MODEL_SIZES, ModelConfig, VisionTransformer, available_models, create_model
from vitlab.models.variants import ARCHITECTURE_OPTIONS


def count_parameters(name: str, **overrides) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "paper_millions"), [("vit_b16", 86), ("vit_l16", 307), ("vit_h14", 632)])
def test_parameter_counts_match_table_1_within_one_percent(name, paper_millions):
    assert count_parameters(name, num_classes=1000) == pytest.approx(paper_millions * 1e6, rel=0.01)


def test_vit_b16_has_torchvisions_published_parameter_count():
    assert count_parameters("vit_b16") == 86_567_656


@pytest.mark.parametrize(
    ("size", "row"),
    [("b", (12, 768, 3072, 12)), ("l", (24, 1024, 4096, 16)), ("h", (32, 1280, 5120, 16))],
)
def test_model_sizes_are_table_1_rows(size, row):
    s = MODEL_SIZES[size]
    assert (s.depth, s.dim, s.mlp_dim, s.heads) == row


def test_every_size_combines_with_any_patch_size():
    model = create_model("vit_s16", patch_size=32, num_classes=3, image_size=64)
    assert model.patch_embedding.num_patches == 4
    assert model.dim == 384
    assert create_model("vit_ti8", image_size=32, num_classes=2).patch_size == 8


def test_overrides_reach_the_model():
    model = create_model("vit_ti16", num_classes=7, image_size=96, dropout=0.1, drop_path=0.2)
    assert model.head.out_features == 7
    assert model.position_embedding.shape == (1, 37, 192)
    assert model.blocks[-1].drop_path.p == pytest.approx(0.2)
    assert model.blocks[0].mlp.dropout.p == pytest.approx(0.1)


def test_hybrid_feeds_the_resnet_feature_map_as_1x1_patches():
    model = create_model("r50_vit_b16", num_classes=3, image_size=64, depth=1).eval()
    assert model.patch_embedding.patch_size == 1
    assert model.patch_embedding.in_channels == 1024
    assert model.patch_size == 16
    with torch.no_grad():
        assert model.embed(torch.randn(1, 3, 64, 64)).shape == (1, 17, 768)  # (64/16)^2 + 1 tokens


def test_unknown_variant_and_option_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'vit_x16'.*vit_b16"):
        create_model("vit_x16")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['patchsize'\]"):
        create_model("vit_b16", patchsize=8)
    assert {
        "vit_ti16",
        "vit_s16",
        "vit_b16",
        "vit_b32",
        "vit_l16",
        "vit_l32",
        "vit_h14",
        "r50_vit_b16",
    } <= set(available_models())


def test_architecture_options_are_vision_transformers_own_keyword_arguments():
    """One source: a new argument of VisionTransformer is a create_model and config option at once."""
    arguments = {
        p.name
        for p in inspect.signature(VisionTransformer.__init__).parameters.values()
        if p.kind == p.KEYWORD_ONLY
    }
    assert arguments - {"stem"} == ARCHITECTURE_OPTIONS  # the stem is the hybrid name's to build
    assert ModelConfig.keys() == (ARCHITECTURE_OPTIONS - {"num_classes"}) | {
        "name",
        "pretrained",
        "pretrained_file",
        "freeze_backbone",
    }


def test_model_config_builds_what_create_model_builds_with_the_same_arguments():
    node = {"_target_": "ignored", "name": "vit_ti16", "image_size": 32, "patch_size": 8, "depth": 2}
    node |= {"pooling": "avg", "representation_size": None, "freeze_backbone": True, "pretrained": None}
    spec = ModelConfig.from_config(node)
    assert (spec.name, spec.freeze_backbone, spec.weights) == ("vit_ti16", True, None)
    torch.manual_seed(0)
    built = spec.create(num_classes=3)
    torch.manual_seed(0)
    direct = create_model("vit_ti16", num_classes=3, image_size=32, patch_size=8, depth=2, pooling="avg")
    assert built.state_dict().keys() == direct.state_dict().keys()
    for key, value in direct.state_dict().items():
        torch.testing.assert_close(built.state_dict()[key], value, rtol=0, atol=0)


def test_model_config_names_an_unknown_key_and_prefers_the_local_weights_file():
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['num_classes'\]"):
        ModelConfig.from_config({"name": "vit_ti16", "num_classes": 3})  # the data's to say
    spec = ModelConfig.from_config({"name": "vit_ti16", "pretrained": "timm:x", "pretrained_file": "x.pth"})
    assert spec.weights == "x.pth"


@pytest.mark.parametrize("name", available_models())
def test_a_model_configs_patch_size_is_the_built_models_unless_overridden(name):
    with torch.device("meta"):  # H/14 and the hybrids, without their memory
        built = ModelConfig(name=name).create(num_classes=3, load_weights=False)
    assert ModelConfig(name=name).patch_size == built.patch_size == int(name[-2:])
    assert ModelConfig(name=name, options={"patch_size": 32}).patch_size == 32
