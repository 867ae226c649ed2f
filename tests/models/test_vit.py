"""The ViT forward pass walks the paper's shapes and behaves as a trainable classifier should."""

import pytest
import torch
from torch import nn

from vitlab.models import create_model
from vitlab.models.vit import Attention, VisionTransformer


def tiny_vit(**overrides) -> VisionTransformer:
    options = dict(image_size=32, patch_size=8, num_classes=5, depth=2, dim=64, mlp_dim=128, heads=4)
    return VisionTransformer(**{**options, **overrides})


def test_vit_b16_walks_the_papers_shapes_from_image_to_logits():
    torch.manual_seed(0)
    model = create_model("vit_b16", num_classes=1000).eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        patches = model.patch_embedding(images)
        assert patches.shape == (1, 196, 768)  # N = HW / P^2 = 224^2 / 16^2
        z = model.embed(images)
        assert z.shape == (1, 197, 768)  # class token prepended
        for block in model.blocks:
            z = block(z)
            assert z.shape == (1, 197, 768)
        assert model.forward_features(images).shape == (1, 768)
        assert model(images).shape == (1, 1000)


def test_features_and_head_compose_to_forward():
    model = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_head(model.forward_features(x)), model(x))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = tiny_vit(representation_size=16, drop_path=0.1)
    nn.init.normal_(model.head.weight)  # the zero-initialised head would block gradients upstream
    model(torch.randn(4, 3, 32, 32)).logsumexp(dim=1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_attention_rows_sum_to_one_for_every_layer():
    model = tiny_vit().eval()
    maps = model.attention_maps(torch.randn(2, 3, 32, 32))
    assert len(maps) == 2
    for probabilities in maps:
        assert probabilities.shape == (2, 4, 17, 17)  # [B, heads, N+1, N+1]
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 4, 17))


def test_fused_attention_equals_the_explicit_softmax_path():
    torch.manual_seed(0)
    attention = Attention(dim=64, heads=4).eval()
    x = torch.randn(2, 17, 64)
    probabilities = attention.attention_probabilities(x)
    *_, v = attention._split_heads(x)
    explicit = attention._merge_heads(probabilities @ v)
    torch.testing.assert_close(attention(x), explicit, atol=1e-5, rtol=1e-5)


def test_eval_mode_is_deterministic_and_dropout_acts_only_in_training():
    torch.manual_seed(0)
    model = tiny_vit(dropout=0.3, attn_dropout=0.3, drop_path=0.3)
    nn.init.normal_(model.head.weight)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


def test_average_pooling_uses_the_patch_tokens():
    model = tiny_vit(pooling="avg").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), model.encode_images(x)[:, 1:].mean(1))


def test_representation_layer_is_a_tanh_hidden_layer_before_the_head():
    model = tiny_vit(representation_size=16).eval()
    nn.init.normal_(model.head.weight)
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    hidden = model.pre_logits(features)
    assert hidden.shape == (2, 16) and hidden.abs().max() <= 1
    assert model.head.in_features == 16


def test_reset_classifier_gives_a_zero_head_of_the_new_size():
    model = tiny_vit(representation_size=16)
    model.reset_classifier(3)
    assert model.head.weight.shape == (3, 64) and model.head.weight.abs().sum() == 0
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_initialisation_follows_the_reference_code():
    model = tiny_vit()
    assert model.class_token.abs().sum() == 0
    assert model.head.weight.abs().sum() == 0 and model.head.bias.abs().sum() == 0
    assert 0.015 < model.position_embedding.std() < 0.025
    qkv = model.blocks[0].attention.qkv.weight
    assert qkv.abs().max() <= (6 / (64 + 64)) ** 0.5  # xavier bound on each D x D q/k/v matrix
    assert model.blocks[0].mlp.fc1.bias.abs().max() < 1e-4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(image_size=30, patch_size=8), "not divisible by patch_size=8"),
        (dict(dim=64, heads=5), "not divisible by heads=5"),
        (dict(pooling="max"), "pooling='max'"),
        (dict(dropout=1.5), "dropout=1.5"),
    ],
)
def test_bad_construction_arguments_raise_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_vit(**options)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 32, 32), r"got \[1, 1, 32, 32\]"),
        ((1, 3, 64, 64), r"expected images of shape \[B, 3, 32, 32\]"),
    ],
)
def test_inputs_of_the_wrong_channels_or_size_raise_a_clear_error(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_vit()(torch.randn(*shape))
