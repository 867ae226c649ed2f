"""Attention rollout (Abnar & Zuidema, 2020): the method behind the paper's attention figures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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


def upsample_to_image(maps: Tensor, image_size: int) -> Tensor:
    """Patch-grid maps ``[B, g, g]`` -> per-pixel maps ``[B, H, W]`` in [0, 1], for overlays."""
    maps = F.interpolate(maps[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)
