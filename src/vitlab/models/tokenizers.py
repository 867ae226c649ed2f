"""Tokenizers for small data, in place of the paper's linear patch embedding (``model.tokenizer``).

- ``ConvTokenizer``: a small convolutional stem (Hassani et al. 2021, CCT): conv 3x3 + ReLU + max-pool
  stride 2, repeated until the total stride equals the patch size. Locality and overlap are built in.
- ``ShiftedPatchTokenizer``: shifted patch tokenization (Lee et al. 2021, SPT): the image and its four
  diagonal shifts by half a patch, split into patches, LayerNorm, linear projection. Each token sees
  a wider receptive field than its own patch.

Both turn ``[B, C, H, W]`` into ``[B, N, D]`` with ``N = (H / patch_size)^2``, like ``PatchEmbedding``.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_grid(image_size: int, patch_size: int) -> None:
    if image_size % patch_size:
        raise ValueError(
            f"image_size={image_size} is not divisible by patch_size={patch_size}: pick an image size "
            f"that is a multiple of {patch_size}."
        )


class ConvTokenizer(nn.Module):
    """log2(patch_size) stages of conv 3x3 (stride 1, no bias) + ReLU + max-pool 3x3 stride 2."""

    def __init__(
        self, image_size: int, patch_size: int, in_channels: int, dim: int, hidden_channels: int = 64
    ) -> None:
        super().__init__()
        _check_grid(image_size, patch_size)
        stages = int(math.log2(patch_size)) if patch_size > 1 else 0
        if patch_size < 2 or 2**stages != patch_size:
            raise ValueError(
                f"tokenizer=conv halves the resolution per stage, so patch_size={patch_size} must be a power "
                f"of 2 (e.g. 8 or 16); use tokenizer=patch or shifted for other patch sizes."
            )
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        widths = [in_channels] + [hidden_channels] * (stages - 1) + [dim]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ]
        self.layers = nn.Sequential(*layers)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight)  # as CCT

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).flatten(2).transpose(1, 2)  # [B, N, D]


class ShiftedPatchTokenizer(nn.Module):
    """SPT: concat(image, 4 diagonal half-patch shifts) -> patches -> LayerNorm -> linear to ``dim``."""

    # (right, down) shift directions: left-up, right-up, left-down, right-down.
    DIRECTIONS = ((-1, -1), (1, -1), (-1, 1), (1, 1))

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        _check_grid(image_size, patch_size)
        if patch_size < 2:
            raise ValueError(
                f"tokenizer=shifted shifts by half a patch: patch_size={patch_size} must be >= 2."
            )
        self.patch_size = patch_size
        self.shift = patch_size // 2
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        patch_dim = (1 + len(self.DIRECTIONS)) * in_channels * patch_size**2
        self.norm = nn.LayerNorm(patch_dim, eps=1e-6)
        self.projection = nn.Linear(patch_dim, dim)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        fan_in = self.projection.in_features
        std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # LeCun normal, as the patch projection
        nn.init.trunc_normal_(self.projection.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.projection.bias)

    def shifted_images(self, x: Tensor) -> Tensor:
        """``[B, 5C, H, W]``: the image, then its shifts by ``patch_size // 2`` pixels (zeros fill in)."""
        s = self.shift
        # F.pad with (left, right, top, bottom): a positive side pads, a negative one crops.
        shifted = [F.pad(x, (s * dx, -s * dx, s * dy, -s * dy)) for dx, dy in self.DIRECTIONS]
        return torch.cat([x, *shifted], dim=1)

    def patches(self, x: Tensor) -> Tensor:
        """``[B, N, 5C * P * P]``: each patch of the stacked images, flattened channel-major."""
        return F.unfold(self.shifted_images(x), self.patch_size, stride=self.patch_size).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.norm(self.patches(x)))  # [B, N, D]
