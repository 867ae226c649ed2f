"""The paper's look inside a ViT (section 4.5, Figure 7; appendix D.7), computed and drawn.

- ``embedding_filter_components``: the principal components of the patch-embedding filters (left);
- ``position_similarity``: the cosine similarity of each position embedding with all others (centre);
- ``mean_attention_distance``: per head and layer, the image-space distance across which attention
  integrates information (right), the ViT analogue of a CNN's receptive field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from vitlab.models.vit import VisionTransformer
from vitlab.viz.readable import integer_ticks


def embedding_filter_components(model: VisionTransformer, count: int = 28) -> Tensor:
    """The first ``count`` principal components of the D patch-embedding filters, ``[k, 3, P, P]``.

    Each of the D rows of the projection E (eq. 1) is a filter over a P x P RGB patch; their PCA
    shows the basis the model projects patches onto (Figure 7 left shows 28 for ViT-L/32).
    """
    if model.stem is not None:
        raise ValueError(
            "a hybrid's patch embedding sees 1x1 patches of ResNet feature channels, not RGB pixels: it has "
            "no image-space filters to show (the position similarity and attention distance still apply)."
        )
    weight = model.patch_embedding.projection.weight.detach().float()  # [D, C, P, P]
    if weight.shape[1] != 3:
        raise ValueError(f"the model takes {weight.shape[1]}-channel images: RGB filters need 3 channels.")
    filters = weight.flatten(1)  # [D, C*P*P]
    centred = filters - filters.mean(dim=0, keepdim=True)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)  # rows: directions, by variance
    count = min(count, components.shape[0])
    return components[:count].reshape(count, *weight.shape[1:])


def position_similarity(position_embedding: Tensor) -> Tensor:
    """Cosine similarity of every patch's position embedding with every other's, ``[g, g, g, g]``:
    entry [i, j] is the map of patch (row i, column j) against the whole grid. ``position_embedding``
    is ``[1, 1 + g*g, D]`` (class token first, as the model holds it) or ``[g*g, D]``."""
    table = position_embedding.detach().float()
    if table.ndim == 3:
        table = table[0, 1:]  # drop the class token's
    grid = math.isqrt(table.shape[0])
    if grid * grid != table.shape[0]:
        raise ValueError(f"{table.shape[0]} position embeddings do not form a square grid.")
    unit = F.normalize(table, dim=-1)
    return (unit @ unit.T).reshape(grid, grid, grid, grid)


def patch_distances(grid_size: int, patch_size: int) -> Tensor:
    """Euclidean distance in pixels between the centres of every pair of patches, ``[N, N]``."""
    y, x = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    centres = torch.stack([y.flatten(), x.flatten()], dim=1).float() * patch_size
    return torch.cdist(centres, centres)


def mean_attention_distance(attention_maps: Sequence[Tensor], patch_size: int) -> Tensor:
    """Per image, layer and head, ``[B, L, H]``: for each query patch the pixel distance to every
    patch weighted by the attention it pays it, averaged over the query patches (appendix D.7).

    ``attention_maps`` are per-layer ``[B, H, N+1, N+1]`` probabilities (``model.attention_maps``).
    The class token is left out as query and as key, and each query's weights on the patches are
    renormalised to sum to 1, so the result is a weighted mean of distances.
    """
    layers = []
    for maps in attention_maps:
        patches = maps[..., 1:, 1:].float()  # [B, H, N, N]
        weights = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        grid = math.isqrt(patches.shape[-1])
        distances = patch_distances(grid, patch_size).to(weights.device)  # [N, N]
        layers.append((weights * distances).sum(dim=-1).mean(dim=-1))  # [B, H]
    return torch.stack(layers, dim=1)


def _mosaic(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """Tiles ``[n, h, w(, 3)]`` into one image with NaN gaps (drawn as background)."""
    count, height, width = tiles.shape[:3]
    rows = math.ceil(count / columns)
    shape = (rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles.shape[3:])
    canvas = np.full(shape, np.nan, dtype=np.float32)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        canvas[top : top + height, left : left + width] = tile
    return canvas


def plot_embedding_filters(components: Tensor, columns: int = 7) -> Figure:
    """Figure 7 left: each component as an RGB patch, its values stretched to [0, 1]."""
    flat = components.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scaled = (components - low[:, None, None, None]) / (high - low).clamp_min(1e-12)[:, None, None, None]
    canvas = _mosaic(scaled.permute(0, 2, 3, 1).numpy(), columns)
    canvas = np.where(np.isnan(canvas), 1.0, canvas)  # white gaps
    rows = math.ceil(len(components) / columns)
    figure = Figure(figsize=(columns * 0.6 + 0.4, rows * 0.6 + 0.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    axes.imshow(canvas, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(f"RGB embedding filters (first {len(components)} principal components)", fontsize=8)
    return figure


def plot_position_similarity(similarity: Tensor) -> Figure:
    """Figure 7 centre: one small map per patch position, laid out on the patch grid."""
    grid = similarity.shape[0]
    canvas = _mosaic(similarity.reshape(grid * grid, grid, grid).numpy(), columns=grid, gap=2)
    figure = Figure(figsize=(6.4, 5.4), dpi=100, layout="constrained")
    axes = figure.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = axes.imshow(np.ma.masked_invalid(canvas), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ticks = np.arange(grid) * (grid + 2) + (grid - 1) / 2
    axes.set_xticks(ticks, [str(i + 1) if i % max(1, grid // 7) == 0 else "" for i in range(grid)])
    axes.set_yticks(ticks, [str(i + 1) if i % max(1, grid // 7) == 0 else "" for i in range(grid)])
    axes.tick_params(length=0, labelsize=7)
    axes.set_xlabel("Input patch column")
    axes.set_ylabel("Input patch row")
    axes.set_title("Position embedding similarity", fontsize=9)
    figure.colorbar(image, ax=axes, label="Cosine similarity", fraction=0.046, pad=0.04)
    return figure


def plot_attention_distance(distances: Tensor, image_size: int) -> Figure:
    """Figure 7 right: every head's mean attention distance (``[L, H]``, pixels) against depth."""
    layers, heads = distances.shape
    figure = Figure(figsize=(5.2, 3.4), dpi=100, layout="constrained")
    axes = figure.subplots()
    colours = matplotlib.colormaps["tab20"](np.linspace(0, 1, max(heads, 2)))
    for head in range(heads):
        axes.scatter(
            np.arange(1, layers + 1),
            distances[:, head].numpy(),
            s=10,
            color=colours[head],
            label=f"Head {head + 1}",
        )
    axes.set_xlabel("Network depth (layer)")
    axes.set_ylabel("Mean attention distance (pixels)")
    axes.set_ylim(0, image_size)
    axes.set_xlim(0.5, layers + 0.5)
    integer_ticks(axes.xaxis)
    if heads <= 16:  # beside the axes: inside, it hides the points of the deep layers
        axes.legend(
            fontsize=6, markerscale=0.8, handletextpad=0.1, loc="upper left", bbox_to_anchor=(1.01, 1)
        )
    return figure
