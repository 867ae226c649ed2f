"""Fixed 2-D sin-cos position embeddings (Beyer et al. 2022, "Better plain ViT baselines"; MAE)."""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_2d_position_embedding(
    grid_size: int, dim: int, class_token: bool, temperature: float = 10_000.0
) -> Tensor:
    """``[1, N(+1), dim]``: a quarter of the dims are sin(x w), cos(x w), sin(y w), cos(y w) for the
    patch at column x and row y (row-major, as patches are flattened), with frequencies ``w`` from 1 to
    1/temperature. Nothing is learned, so nearby patches start out similar. A class token gets zeros."""
    if dim % 4:
        raise ValueError(f"dim={dim} is not divisible by 4: 2-D sin-cos embeddings need a multiple of 4.")
    y, x = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / max(dim // 4 - 1, 1))
    x = x.flatten()[:, None] * omega  # [N, dim/4]
    y = y.flatten()[:, None] * omega
    embedding = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # [N, dim]
    if class_token:
        embedding = torch.cat([torch.zeros(1, dim), embedding])
    return embedding[None].float()
