"""Figure 7's analyses give the known answers of constructed cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vitlab.models import create_model
from vitlab.models.posembed import sincos_2d
from vitlab.viz.figure7 import (
    embedding_filter_components,
    mean_attention_distance,
    plot_attention_distance,
    plot_embedding_filters,
    plot_position_similarity,
    position_similarity,
)


def test_sincos_similarity_falls_with_grid_distance():
    grid = 8
    similarity = position_similarity(sincos_2d(grid, 64)).reshape(grid * grid, grid * grid)
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    cells = torch.stack([rows.flatten(), columns.flatten()], 1).float()
    distance = torch.cdist(cells, cells).round()
    by_distance = [similarity[distance == d].mean().item() for d in distance.unique()]
    assert all(a > b for a, b in itertools.pairwise(by_distance))
    others = similarity - 2 * torch.eye(grid * grid)  # a patch's most similar other patch is a neighbour
    nearest = distance.gather(1, others.argmax(dim=1, keepdim=True))
    assert (nearest == 1).all()


def test_sincos_needs_channels_in_fours():
    with pytest.raises(ValueError, match="dim=30"):
        sincos_2d(4, 30)


def test_position_similarity_takes_the_models_table_without_the_class_token():
    model = create_model("vit_ti16", image_size=64, patch_size=16)
    with torch.no_grad():
        model.position_embedding[0, 1:] = sincos_2d(4, 192)
        model.position_embedding[0, 0] = 100.0  # would dominate if the class token were kept
    similarity = position_similarity(model.position_embedding)
    assert similarity.shape == (4, 4, 4, 4)
    torch.testing.assert_close(similarity, position_similarity(sincos_2d(4, 192)))
    assert plot_position_similarity(similarity).axes[0].get_xlabel() == "Input patch column"


def attention(weights: torch.Tensor, batch: int = 2, heads: int = 3, layers: int = 2) -> list[torch.Tensor]:
    return [weights.expand(batch, heads, *weights.shape).clone() for _ in range(layers)]


def test_attention_on_the_diagonal_has_mean_distance_zero():
    tokens = 1 + 5 * 5
    distances = mean_attention_distance(attention(torch.eye(tokens)), patch_size=16)
    assert distances.shape == (2, 2, 3)
    assert distances.abs().max().item() == 0.0


def test_uniform_attention_over_patches_gives_the_mean_pairwise_patch_distance():
    grid, patch = 5, 16
    tokens = 1 + grid * grid
    uniform = torch.full((tokens, tokens), 1.0 / tokens)  # the class token's share is left out
    distances = mean_attention_distance(attention(uniform), patch_size=patch)
    cells = list(itertools.product(range(grid), repeat=2))
    expected = sum(patch * math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    torch.testing.assert_close(distances, torch.full_like(distances, expected))


def test_mean_attention_distance_of_a_real_model_is_per_image_layer_and_head():
    model = create_model("vit_ti16", image_size=32, patch_size=8, depth=2).eval()
    distances = mean_attention_distance(model.attention_maps(torch.randn(3, 3, 32, 32)), model.patch_size)
    assert distances.shape == (3, 2, 3)
    farthest = 8 * math.dist((0, 0), (3, 3))
    assert ((distances > 0) & (distances < farthest)).all()
    figure = plot_attention_distance(distances.mean(0), image_size=32)
    plotted = torch.tensor([c.get_offsets()[:, 1].tolist() for c in figure.axes[0].collections])  # [H, L]
    torch.testing.assert_close(plotted, distances.mean(0).T)


def test_filter_components_recover_a_planted_filter():
    model = create_model("vit_ti16", image_size=32, patch_size=8)
    pattern = torch.randn(3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every filter: a multiple of one pattern, plus a little noise
        scales = torch.randn(192, 1, 1, 1, generator=generator) * 5
        noise = 0.01 * torch.randn(192, 3, 8, 8, generator=generator)
        model.patch_embedding.projection.weight.copy_(scales * pattern + noise)
    components = embedding_filter_components(model, count=28)
    assert components.shape == (28, 3, 8, 8)
    cosine = torch.nn.functional.cosine_similarity(components[0].flatten(), pattern.flatten(), dim=0)
    assert abs(cosine.item()) > 0.999
    assert len(plot_embedding_filters(components).axes) == 1


def test_hybrid_filters_are_refused_with_the_reason():
    model = create_model("r50_vit_b16", image_size=32, depth=1, dim=64, heads=2, mlp_dim=128)
    with pytest.raises(ValueError, match="hybrid's patch embedding sees 1x1 patches"):
        embedding_filter_components(model)


@pytest.mark.parametrize(("layers", "heads", "grid"), [(1, 3, 2), (2, 3, 4), (12, 12, 14)])
def test_each_panel_is_readable_and_depth_is_ticked_at_whole_layers(
    layers, heads, grid, shown_ticks, assert_readable
):
    generator = torch.Generator().manual_seed(0)
    distances = 224 * torch.rand(layers, heads, generator=generator)
    figure = plot_attention_distance(distances, image_size=224)
    ticks = shown_ticks(figure.axes[0].xaxis)
    assert ticks and all(tick.isdigit() and 1 <= int(tick) <= layers for tick in ticks), ticks
    assert_readable(figure)
    assert_readable(
        plot_position_similarity(position_similarity(torch.randn(grid * grid, 64, generator=generator)))
    )
    assert_readable(plot_embedding_filters(torch.randn(28, 3, 16, 16, generator=generator)))
