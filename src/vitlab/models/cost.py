"""What a model costs, counted rather than estimated by formula: parameters and forward MACs. The
compute axis of Table 1, Figure 5 and every run's ``results.json``; timing lives in ``vitlab.bench``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vitlab.models.variants import create_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image (GFLOPs = 2 x GMACs), as
    ``torch.utils.flop_counter`` counts them: convolutions and matrix products, as in torchvision's
    published figures.

    Works on the meta device (no memory, no compute), which is how big variants should be counted.
    Attention runs on the math SDPA backend while counting because the flop counter has no formula
    for the fused CPU attention kernel, whose products would otherwise go uncounted.
    """
    size = image_size or getattr(model, "image_size", None)
    if size is None:
        raise ValueError(
            f"{type(model).__name__} has no image_size attribute: pass count_macs(model, image_size=...)."
        )
    parameter = next(model.parameters())
    images = torch.empty(
        1, getattr(model, "in_channels", 3), size, size, device=parameter.device, dtype=parameter.dtype
    )
    was_training = model.training
    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(images)
    model.train(was_training)
    return counter.get_total_flops() // 2


def variant_cost(
    name: str, image_size: int = 224, num_classes: int = 1000, **overrides: Any
) -> tuple[int, int]:
    """``(parameters, forward MACs per image)`` of a variant, built on the meta device: instant even
    for ViT-H/14."""
    with torch.device("meta"):
        model = create_model(name, image_size=image_size, num_classes=num_classes, **overrides)
    return count_parameters(model), count_macs(model)
