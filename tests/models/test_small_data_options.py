"""The small-data model options do what their papers say, and cost nothing when off."""

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vitlab.models import create_model
from vitlab.models.posembed import sincos_2d
from vitlab.models.tokenizers import ConvTokenizer, ShiftedPatchTokenizer
from vitlab.models.vit import VisionTransformer
from vitlab.models.weights import load_pretrained


def tiny_vit(**overrides) -> VisionTransformer:
    options = dict(image_size=32, patch_size=8, num_classes=5, depth=2, dim=64, mlp_dim=128, heads=4)
    return VisionTransformer(**{**options, **overrides})


ALL_ON = dict(tokenizer="shifted", attention="lsa", position_embedding="sincos2d", pooling="seq")
OPTIONS = [
    {"tokenizer": "conv"},
    {"tokenizer": "shifted"},
    {"attention": "lsa"},
    {"position_embedding": "sincos2d"},
    {"pooling": "seq"},
    {**ALL_ON, "tokenizer": "conv"},
]


def test_default_options_build_exactly_the_papers_model():
    torch.manual_seed(0)
    implicit = tiny_vit()
    torch.manual_seed(0)
    explicit = tiny_vit(
        tokenizer="patch", attention="standard", position_embedding="learned", pooling="token"
    )
    assert [name for name, _ in implicit.named_parameters()] == [n for n, _ in explicit.named_parameters()]
    for (name, a), b in zip(implicit.state_dict().items(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not any("temperature" in n or "pool_scorer" in n for n in implicit.state_dict())


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(map(str, o.values())))
def test_every_option_trains_end_to_end_and_reloads_its_own_weights(options, tmp_path: Path):
    torch.manual_seed(0)
    model = tiny_vit(**options)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.head.weight.normal_()  # the zero-initialised head would pass no gradient to the backbone
    model(images).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    reloaded = tiny_vit(**options)
    load_pretrained(reloaded, tmp_path / "weights.pt")
    assert torch.equal(model.eval()(images), reloaded.eval()(images))


@pytest.mark.parametrize("name", ["tokenizer", "attention", "position_embedding", "pooling"])
def test_unknown_option_values_are_refused_with_the_choices(name):
    with pytest.raises(ValueError, match=f"{name}='nope' is not supported: use one of"):
        tiny_vit(**{name: "nope"})


# LSA (Lee et al. 2021): no attention to itself, a learned temperature started at sqrt(d).


def test_locality_self_attention_masks_the_diagonal_of_every_map():
    torch.manual_seed(0)
    model = tiny_vit(attention="lsa").eval()
    for probabilities in model.attention_maps(torch.randn(2, 3, 32, 32)):
        assert torch.equal(probabilities.diagonal(dim1=-2, dim2=-1), torch.zeros(2, 4, 17))
        assert torch.allclose(probabilities.sum(-1), torch.ones(2, 4, 17))
    standard = tiny_vit().eval().attention_maps(torch.randn(2, 3, 32, 32))[0]
    assert (standard.diagonal(dim1=-2, dim2=-1) > 0).all()


def test_locality_self_attention_temperature_starts_at_sqrt_head_dim_and_learns():
    torch.manual_seed(0)
    model = tiny_vit(attention="lsa", num_classes=0)
    attention = model.blocks[0].attention
    assert attention.log_temperature.exp().item() == pytest.approx(math.sqrt(64 // 4))
    model(torch.randn(2, 3, 32, 32)).square().sum().backward()
    assert attention.log_temperature.requires_grad and attention.log_temperature.grad.abs() > 0


def test_locality_self_attention_fused_path_equals_its_explicit_softmax():
    torch.manual_seed(0)
    attention = tiny_vit(attention="lsa").blocks[0].attention
    with torch.no_grad():
        attention.log_temperature.fill_(0.3)  # away from sqrt(d), so the scale used is the learned one
        x = torch.randn(2, 17, 64)
        _, _, v = attention._split_heads(x)
        explicit = attention._merge_heads(attention.attention_probabilities(x) @ v)
        assert torch.allclose(attention(x), explicit, atol=1e-5)


# SPT (Lee et al. 2021): tokens of the image and its four diagonal half-patch shifts.


def test_shifted_patch_tokens_hold_the_image_and_its_four_diagonal_half_patch_shifts():
    tokenizer = ShiftedPatchTokenizer(image_size=16, patch_size=8, in_channels=3, dim=32)
    image = torch.rand(1, 3, 16, 16)
    patches = tokenizer.patches(image)  # [1, N, 5 * 3 * 8 * 8]
    assert patches.shape == (1, 4, 5 * 3 * 64)
    # Folding the patches back gives five images: the original and its shifts by 4 px, zero-filled.
    stacked = F.fold(patches.transpose(1, 2), output_size=16, kernel_size=8, stride=8)
    copies = stacked.reshape(5, 3, 16, 16)
    assert torch.equal(copies[0], image[0])
    for copy, (dx, dy) in zip(copies[1:], ShiftedPatchTokenizer.DIRECTIONS, strict=True):
        expected = torch.zeros(3, 16, 16)
        rows, cols = slice(max(dy * 4, 0), 16 + min(dy * 4, 0)), slice(max(dx * 4, 0), 16 + min(dx * 4, 0))
        source_rows = slice(max(-dy * 4, 0), 16 + min(-dy * 4, 0))
        source_cols = slice(max(-dx * 4, 0), 16 + min(-dx * 4, 0))
        expected[:, rows, cols] = image[0][:, source_rows, source_cols]
        assert torch.equal(copy, expected), (dx, dy)
    # Right-down shift: the top-left pixel moves to (4, 4).
    assert torch.equal(copies[4][:, 4, 4], image[0, :, 0, 0])


def test_shifted_patch_tokens_are_layer_normed_before_the_projection():
    tokenizer = ShiftedPatchTokenizer(image_size=16, patch_size=8, in_channels=3, dim=32)
    image = torch.rand(2, 3, 16, 16)
    normed = tokenizer.norm(tokenizer.patches(image))
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(tokenizer(image), tokenizer.projection(normed))


# Convolutional tokenizer (CCT): same grid as the patches it replaces.


@pytest.mark.parametrize(("image_size", "patch_size"), [(32, 8), (64, 16), (80, 8), (32, 4)])
def test_conv_tokenizer_gives_as_many_tokens_as_patches(image_size, patch_size):
    images = torch.randn(2, 3, image_size, image_size)
    patch = tiny_vit(image_size=image_size, patch_size=patch_size)
    conv = tiny_vit(image_size=image_size, patch_size=patch_size, tokenizer="conv")
    assert isinstance(conv.patch_embedding, ConvTokenizer)
    assert conv.patch_tokens(images).shape == patch.patch_tokens(images).shape
    assert conv.embed(images).shape == (2, (image_size // patch_size) ** 2 + 1, 64)


def test_conv_tokenizer_asks_for_a_power_of_two_patch_size():
    with pytest.raises(ValueError, match="patch_size=12 must be a power of 2"):
        tiny_vit(image_size=48, patch_size=12, tokenizer="conv")


def test_conv_tokenizer_tokens_see_beyond_their_own_patch():
    """Unlike the patch projection, a conv stem's receptive field overlaps neighbouring patches."""
    torch.manual_seed(0)
    conv = tiny_vit(tokenizer="conv").eval()
    image = torch.zeros(1, 3, 32, 32)
    poked = image.clone()
    poked[..., 8, 8] = 1.0  # first pixel of patch (1, 1)
    changed = (conv.patch_tokens(poked) - conv.patch_tokens(image)).abs().sum(-1)[0]  # [N]
    assert changed[0] > 0  # patch (0, 0) sees it too


# 2-D sin-cos position embeddings (Beyer et al. 2022): fixed, and similar for nearby patches.


def test_sincos_position_embeddings_are_fixed_neither_trained_nor_saved():
    model = tiny_vit(position_embedding="sincos2d")
    assert "position_embedding" not in dict(model.named_parameters())
    assert "position_embedding" not in model.state_dict()
    assert not model.position_embedding.requires_grad
    expected = torch.cat([torch.zeros(1, 64), sincos_2d(4, 64)])[None]
    assert torch.equal(model.position_embedding, expected)
    assert torch.equal(expected[0, 0], torch.zeros(64))  # the class token has no position


def test_sincos_similarity_falls_with_grid_distance():
    grid = 8
    embedding = F.normalize(sincos_2d(grid, 192), dim=-1)
    similarity = embedding @ embedding.T  # [N, N]
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    position = torch.stack([y.flatten(), x.flatten()], dim=1).float()
    distance = torch.cdist(position, position)
    means = [similarity[(distance - d).abs() < 0.5].mean() for d in range(6)]
    assert all(near > far for near, far in itertools.pairwise(means)), means
    # Along a row, from a corner: every step further is less similar, for the first half of the grid.
    row = similarity[0, :grid]
    assert (row[1 : grid // 2] < row[: grid // 2 - 1]).all()


def test_sincos_needs_a_dim_divisible_by_four():
    with pytest.raises(ValueError, match="dim=66: a 2-D sin-cos embedding needs a multiple of 4"):
        sincos_2d(4, 66)


# Sequence pooling (CCT): a learned softmax over the tokens weights their mean.


def test_sequence_pooling_weights_sum_to_one_and_weight_the_patch_tokens():
    torch.manual_seed(0)
    model = tiny_vit(pooling="seq").eval()
    tokens = model.encode_images(torch.randn(2, 3, 32, 32))
    weights = model.pooling_weights(tokens)
    assert weights.shape == (2, 16) and (weights > 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    expected = (weights[..., None] * tokens[:, 1:]).sum(1)
    assert torch.allclose(model.pool(tokens), expected, atol=1e-6)


def test_options_reach_the_model_through_create_model():
    model = create_model("vit_ti16", image_size=32, patch_size=8, depth=1, num_classes=3, **ALL_ON)
    assert isinstance(model.patch_embedding, ShiftedPatchTokenizer)
    assert model.blocks[0].attention.log_temperature is not None
    assert model.pool_scorer is not None and not isinstance(model.position_embedding, torch.nn.Parameter)
