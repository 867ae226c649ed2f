"""Generated images with a learnable class signal: smoke tests and benchmarks with no files at all.

Class ``c`` is a shape (disc, square, triangle, ring: ``c % 4``) in a colour whose hue is
``c / num_classes`` of the colour wheel, at a random position and size on a noisy background.
Image ``i`` depends only on ``(seed, i)``, so every epoch, worker and run sees the same data.
"""

from __future__ import annotations

import torch
from torch import Tensor

SHAPES = ("disc", "square", "triangle", "ring")


def synthetic_class_names(num_classes: int) -> list[str]:
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
    return [f"{SHAPES[c % len(SHAPES)]}_{c}" for c in range(num_classes)]


def _hue_to_rgb(hue: float) -> Tensor:
    """Fully saturated colour of ``hue`` in [0, 1) as ``[3, 1, 1]`` floats in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue * 6) % 6
    return (1 - (torch.minimum(k, 4 - k).clamp(0, 1))).view(3, 1, 1)


class SyntheticImages:
    """Index -> (uint8 ``[3, S, S]`` image, label); a picklable ``load`` for ``LabelledImages``.

    ``offset`` keeps splits disjoint: the val split starts where train ends.
    """

    def __init__(self, num_classes: int, image_size: int, seed: int, offset: int = 0) -> None:
        self.num_classes, self.image_size, self.seed, self.offset = num_classes, image_size, seed, offset

    def label(self, index: int) -> int:
        return (self.offset + index) % self.num_classes

    def __call__(self, index: int) -> Tensor:
        label = self.label(index)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.offset + index)
        axis = torch.linspace(-1, 1, self.image_size)
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        centre = (torch.rand(2, generator=g) - 0.5) * 0.8
        radius = 0.3 + 0.3 * torch.rand(1, generator=g).item()
        dx, dy = x - centre[0], y - centre[1]
        distance = (dx**2 + dy**2).sqrt()
        shape = SHAPES[label % len(SHAPES)]
        if shape == "disc":
            mask = distance < radius
        elif shape == "square":
            mask = torch.maximum(dx.abs(), dy.abs()) < 0.8 * radius
        elif shape == "triangle":
            mask = (dy < 0.7 * radius) & (dy > 2 * dx.abs() - radius)
        else:
            mask = (distance - 0.7 * radius).abs() < 0.3 * radius
        background = 0.35 * torch.rand(3, 1, 1, generator=g)
        colour = _hue_to_rgb(label / self.num_classes) * (0.7 + 0.3 * torch.rand(1, generator=g))
        image = torch.where(mask, colour, background)
        image = image + 0.08 * torch.randn(3, self.image_size, self.image_size, generator=g)
        return (image.clamp(0, 1) * 255).round().to(torch.uint8)
