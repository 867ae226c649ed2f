"""Fixed 2-D sine-cosine position embeddings.

The paper learns its position embeddings and finds 2-D-aware variants no better (appendix D.4); its
Figure 7 shows that the learned ones come to encode the 2-D grid anyway. A fixed 2-D sin-cos table
is that structure given up front: MAE (He et al. 2022) and "Better plain ViT baselines" (Beyer et al.
2022, big_vision's ``posemb_sincos_2d``) use it, and it serves as a known answer for the Figure 7
analyses and as the small-data recipe's embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_2d(grid_size: int, dim: int, temperature: float = 10_000.0) -> Tensor:
    """``[grid_size**2, dim]`` embeddings of a square grid of patches, row by row.

    Beyer et al.'s form: a quarter of the channels each for sin(x w), cos(x w), sin(y w), cos(y w),
    with ``dim / 4`` frequencies w = temperature^(-k / (dim/4 - 1)), x the column and y the row.
    """
    if dim % 4 or dim < 8:
        raise ValueError(f"dim={dim}: a 2-D sin-cos embedding needs a multiple of 4 channels, at least 8.")
    if grid_size < 1:
        raise ValueError(f"grid_size={grid_size} must be at least 1.")
    quarter = dim // 4
    omega = temperature ** -(torch.arange(quarter, dtype=torch.float64) / (quarter - 1))  # [dim/4]
    y, x = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    x_angles = x.flatten()[:, None] * omega[None, :]  # [N, dim/4]
    y_angles = y.flatten()[:, None] * omega[None, :]
    table = torch.cat([x_angles.sin(), x_angles.cos(), y_angles.sin(), y_angles.cos()], dim=1)
    return table.float()
