"""The model an inspection entry point looks at (``vitlab-analyze``, ``vitlab-fewshot``): a training
checkpoint, pretrained weights or a random initialisation, with the preprocessing that belongs to it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitlab.checkpoint import eval_transform_for, load_classifier
from vitlab.data.transforms import Pipeline, eval_transform
from vitlab.models import VisionTransformer, create_model


def load_backbone(
    ckpt_path: str | Path | None,
    name: str,
    pretrained: str | None,
    options: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
) -> tuple[VisionTransformer, Pipeline]:
    """``(model in eval mode, its evaluation transform)``.

    A checkpoint brings its own model and preprocessing; otherwise ``create_model(name, pretrained,
    **options)`` without a classifier (random weights when ``pretrained`` is None), and images are
    prepared with ``preprocessing`` (``eval_transform``'s mean, std, resize_size).
    """
    if ckpt_path:
        module = load_classifier(ckpt_path)
        return module.model.eval(), eval_transform_for(module)
    model = create_model(name, pretrained=pretrained, **{**options, "num_classes": 0})
    return model.eval(), eval_transform(model.image_size, **preprocessing)


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other value as torch reads it."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
