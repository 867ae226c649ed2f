"""Attention rollout (Abnar & Zuidema, 2020), the method behind the paper's attention figures, and
its overlays on the images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.transforms.v2 import functional as F_v2

from vitlab.models.vit import VisionTransformer


@torch.no_grad()
def attention_rollout(model: VisionTransformer, images: Tensor, residual_weight: float = 0.5) -> Tensor:
    """How much each patch feeds the class token, through all layers: ``[B, grid, grid]``, sums to 1.

    Each layer's head-averaged attention is mixed with the identity (the residual connection),
    re-normalised, and the layers' matrices are multiplied (paper Appendix D.8).
    """
    rollout = None
    for probabilities in model.attention_maps(images):  # [B, heads, N+1, N+1]
        attention = probabilities.mean(dim=1)
        identity = torch.eye(attention.shape[-1], device=attention.device, dtype=attention.dtype)
        attention = residual_weight * attention + (1 - residual_weight) * identity
        attention = attention / attention.sum(dim=-1, keepdim=True)
        rollout = attention if rollout is None else attention @ rollout
    to_patches = rollout[:, 0, 1:]  # class token's row, patch columns  [B, N]
    to_patches = to_patches / to_patches.sum(dim=-1, keepdim=True)
    return to_patches.reshape(-1, model.grid_size, model.grid_size)


def upsample_to_image(maps: Tensor, image_size: int | tuple[int, int]) -> Tensor:
    """Patch-grid maps ``[B, g, g]`` -> per-pixel maps ``[B, H, W]`` in [0, 1], for overlays
    (``image_size``: S for a square, or ``(H, W)``)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)


def attention_overlays(
    model: VisionTransformer, images: Tensor, pictures: Sequence[Tensor], alpha: float = 0.5
) -> list[Tensor]:
    """Each picture with its attention rollout laid over it (the ``jet`` colour map at ``alpha``):
    float ``[3, H, W]`` in [0, 1], one per image. The one drawing of an overlay, for the PNGs of
    ``save_attention_overlays`` and the W&B reports alike.

    ``images`` are the normalised model inputs ``[B, 3, S, S]``; ``pictures`` the same images for
    display (uint8 or float in [0, 1], ``[3, H, W]`` of any size: the rollout is stretched over each).
    """
    if len(images) != len(pictures):
        raise ValueError(f"{len(images)} images and {len(pictures)} pictures: pass one picture per image.")
    was_training = model.training
    model.eval()  # no dropout in the embeddings and blocks the rollout runs through
    device = next(model.parameters()).device
    maps = attention_rollout(model, images.to(device)).float().cpu()  # [B, g, g]
    model.train(was_training)
    overlays = []
    for picture, heat in zip(pictures, maps, strict=True):
        pixels = F_v2.to_dtype(picture.cpu(), torch.float32, scale=True).clamp(0, 1)  # [3, H, W]
        heat_pixels = upsample_to_image(heat[None], tuple(pixels.shape[1:]))[0]  # [H, W]
        colours = torch.from_numpy(colormaps["jet"](heat_pixels.numpy())[..., :3]).float().permute(2, 0, 1)
        overlays.append((1 - alpha) * pixels + alpha * colours)
    return overlays


def save_attention_overlays(
    model: VisionTransformer,
    images: Tensor,
    raw_images: Sequence[Tensor],
    paths: Sequence[Path | str],
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> list[Path]:
    """One PNG per image: the picture beside its attention rollout laid over it
    (``attention_overlays``; ``raw_images`` are its pictures)."""
    if not len(images) == len(raw_images) == len(paths):
        raise ValueError(
            f"{len(images)} images, {len(raw_images)} raw images and {len(paths)} paths: pass one of each per image."
        )
    overlays = attention_overlays(model, images, raw_images, alpha)
    titles = titles or ["attention rollout"] * len(paths)
    written = []
    for raw, overlaid, path, title in zip(raw_images, overlays, paths, titles, strict=True):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        overlay_figure(raw, overlaid, title).savefig(path)
        written.append(path)
    return written


def overlay_figure(picture: Tensor, overlay: Tensor, title: str) -> Figure:
    """One PNG of ``save_attention_overlays``: the picture (``[3, H, W]``, uint8 or float in [0, 1])
    beside its overlay (float ``[3, H, W]``), the overlay titled ``title``."""
    figure = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(F_v2.to_dtype(picture.cpu(), torch.float32, scale=True).clamp(0, 1).permute(1, 2, 0).numpy())
    left.set_title("image")
    right.imshow(overlay.permute(1, 2, 0).numpy())
    right.set_title(title, wrap=True)  # a long class name wraps instead of running off the right edge
    for axes in (left, right):
        axes.axis("off")
    return figure
