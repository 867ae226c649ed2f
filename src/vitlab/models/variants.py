"""Table 1 of the paper as data, and ``create_model``: the one way code builds a ViT."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from vitlab.models.hybrid import ResNetStem
from vitlab.models.vit import VisionTransformer


@dataclass(frozen=True)
class ModelSize:
    """One row of Table 1 (Ti and S are the DeiT sizes used as small ViTs)."""

    depth: int
    dim: int
    mlp_dim: int
    heads: int


MODEL_SIZES: dict[str, ModelSize] = {
    "ti": ModelSize(depth=12, dim=192, mlp_dim=768, heads=3),
    "s": ModelSize(depth=12, dim=384, mlp_dim=1536, heads=6),
    "b": ModelSize(depth=12, dim=768, mlp_dim=3072, heads=12),
    "l": ModelSize(depth=24, dim=1024, mlp_dim=4096, heads=16),
    "h": ModelSize(depth=32, dim=1280, mlp_dim=5120, heads=16),
}

# Named variants: (size, patch size). Any size also combines with any patch size through the
# ``patch_size`` override, or a name such as ``vit_s32``.
VARIANTS: dict[str, tuple[str, int]] = {
    "vit_ti16": ("ti", 16),
    "vit_s16": ("s", 16),
    "vit_b16": ("b", 16),
    "vit_b32": ("b", 32),
    "vit_l16": ("l", 16),
    "vit_l32": ("l", 32),
    "vit_h14": ("h", 14),
}
HYBRIDS: dict[str, str] = {"r50_vit_b16": "b"}  # ResNet-50 stem (stride 16) + ViT-B on 1x1 patches

_NAME = re.compile(r"^vit_(ti|s|b|l|h)(\d+)$")


def available_models() -> list[str]:
    return [*VARIANTS, *HYBRIDS]


def resolve_variant(name: str) -> tuple[ModelSize, int, bool]:
    """``name`` -> (size row, patch size in pixels, is hybrid); a clear error for unknown names."""
    if name in HYBRIDS:
        return MODEL_SIZES[HYBRIDS[name]], 16, True
    if name in VARIANTS:
        size, patch = VARIANTS[name]
        return MODEL_SIZES[size], patch, False
    match = _NAME.match(name)
    if match:
        return MODEL_SIZES[match[1]], int(match[2]), False
    raise ValueError(
        f"unknown model {name!r}: choose one of {', '.join(available_models())} "
        f"(or vit_<size><patch> with size in {', '.join(MODEL_SIZES)})."
    )


def model_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The ``VisionTransformer`` keyword arguments for a variant, before any weights are loaded."""
    size, patch_size, hybrid = resolve_variant(name)
    kwargs: dict[str, Any] = {**asdict(size), "patch_size": patch_size}
    unknown = set(overrides) - MODEL_OVERRIDES
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for create_model: allowed are {sorted(MODEL_OVERRIDES)}."
        )
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    if hybrid:
        if kwargs["patch_size"] % ResNetStem.stride:
            raise ValueError(
                f"{name}: patch_size={kwargs['patch_size']} must be a multiple of the ResNet stem's "
                f"stride {ResNetStem.stride}."
            )
        kwargs["patch_size"] //= ResNetStem.stride  # patches of the stem's feature map
        kwargs["stem"] = ResNetStem(in_channels=kwargs.get("in_channels", 3))
    return kwargs


# What create_model lets a caller change (a model config's other keys are not model shape options).
MODEL_OVERRIDES = {
    "num_classes",
    "image_size",
    "patch_size",
    "in_channels",
    "dropout",
    "attn_dropout",
    "drop_path",
    "pooling",
    "representation_size",
    "depth",
    "dim",
    "mlp_dim",
    "heads",
    "tokenizer",
    "attention",
    "position_embedding",
}


def create_model(name: str, pretrained: str | None = None, **overrides: Any) -> VisionTransformer:
    """Build a named variant, optionally loading weights from a file or a library.

    ``pretrained`` is a local checkpoint (torchvision, timm or JAX ``.npz`` format, detected) or
    ``torchvision:<WEIGHTS_ENUM>`` / ``timm:<model name>``. When ``num_classes`` differs from the
    checkpoint's, the head is replaced by a fresh zero-initialised one; when ``image_size`` differs,
    the position embeddings are interpolated.
    """
    model = VisionTransformer(**model_kwargs(name, **overrides))
    if pretrained:
        from vitlab.models.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model
