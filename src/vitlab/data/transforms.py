"""Image transforms (torchvision.transforms.v2), split into a cacheable stage and a per-epoch stage.

Every pipeline is ``prepare`` (deterministic resize, uint8 -> uint8: what ``data.cache`` keeps in
memory) followed by ``augment`` (random augmentation, then float + normalisation). Splitting them
this way makes the cache an optimisation only: cached or not, an image meets the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.transforms import v2

if TYPE_CHECKING:  # models import this module
    from vitlab.models.preprocessing import Preprocessing

TRAIN_PRESETS = ("none", "basic", "strong")
AUTO_AUGMENTS: dict[str, Callable[[], v2.Transform]] = {
    "trivialaugment": v2.TrivialAugmentWide,
    "randaugment": partial(v2.RandAugment, num_ops=2, magnitude=9),  # DeiT's rand-m9
}
# The ``strong`` preset's batch mixing when mixup/cutmix alphas are not given: DeiT's recipe for
# training ViTs from scratch on small data (Touvron et al., 2021).
STRONG_MIXUP_ALPHA = 0.8
STRONG_CUTMIX_ALPHA = 1.0


@dataclass(frozen=True)
class Pipeline:
    """The two stages of a split's transform; ``prepare`` output is what the cache stores."""

    prepare: Callable[[Tensor], Tensor]
    augment: Callable[[Tensor], Tensor]

    def __call__(self, image: Tensor) -> Tensor:
        return self.augment(self.prepare(image))


def resize_size_for(image_size: int, resize_size: int | None = None, crop_pct: float | None = None) -> int:
    """The shorter side's length before the centre crop: ``resize_size`` if given, else
    floor(image_size / crop_pct) (timm's rule, so 224 at 0.9 gives 248 and 384 gives 426), else
    ``image_size`` (a plain resize, no crop)."""
    if resize_size is None and crop_pct is not None:
        if not 0 < crop_pct <= 1:
            raise ValueError(
                f"crop_pct={crop_pct} must be in (0, 1]: the centre crop's share of the resized image."
            )
        resize_size = math.floor(image_size / crop_pct)
    if resize_size is None:
        return image_size
    if resize_size < image_size:
        raise ValueError(
            f"resize_size={resize_size} is smaller than image_size={image_size}: the centre crop "
            f"would not fit. Use resize_size >= {image_size}, or null for a plain resize."
        )
    return resize_size


def _normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def _interpolation(name: str) -> v2.InterpolationMode:
    try:
        return v2.InterpolationMode(name)
    except ValueError:
        modes = ", ".join(m.value for m in v2.InterpolationMode)
        raise ValueError(f"interpolation={name!r} is not a resize mode: choose one of {modes}.") from None


def eval_transform(image_size: int, preprocessing: Preprocessing) -> Pipeline:
    """uint8 ``[3, H, W]`` (from ``load_image``) -> normalised float ``[3, image_size, image_size]``.

    Resizes to ``image_size`` square (the course), or the shorter side to ``resize_size`` (or
    image_size / ``crop_pct``) and then centre-crops ``image_size`` (pretrained weights' own recipe,
    e.g. 248 -> 224 for timm's AugReg ViTs).
    """
    crop_pct = preprocessing.crop_pct
    resize = resize_size_for(image_size, preprocessing.resize_size, crop_pct)
    mode = _interpolation(preprocessing.interpolation)
    if resize == image_size and crop_pct is None:
        prepare: v2.Transform = v2.Resize((image_size, image_size), interpolation=mode)
    else:
        prepare = v2.Compose([v2.Resize(resize, interpolation=mode), v2.CenterCrop(image_size)])
    return Pipeline(prepare, _normalize(preprocessing.mean, preprocessing.std))


def train_transform(
    preset: str,
    image_size: int,
    preprocessing: Preprocessing,
    auto_augment: str = "trivialaugment",
    random_erasing: float = 0.25,
) -> Pipeline:
    """The training transform of a preset: ``none`` (the course: evaluation transform only),
    ``basic`` (RandomResizedCrop + flip) or ``strong`` (basic + TrivialAugmentWide/RandAugment +
    RandomErasing; MixUp/CutMix come from ``batch_transform``)."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown train_transform {preset!r}: choose one of {', '.join(TRAIN_PRESETS)}.")
    if preset == "none":
        return eval_transform(image_size, preprocessing)
    # Decode-time resize of the shorter side keeps the whole picture for RandomResizedCrop while
    # bounding the cost (and the cache) of large photos.
    mode = _interpolation(preprocessing.interpolation)
    resize = resize_size_for(image_size, preprocessing.resize_size, preprocessing.crop_pct)
    prepare = v2.Resize(resize, interpolation=mode)
    augment: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, interpolation=mode),
        v2.RandomHorizontalFlip(),
    ]
    if preset == "strong":
        if auto_augment not in AUTO_AUGMENTS:
            raise ValueError(
                f"unknown auto_augment {auto_augment!r}: choose one of {', '.join(AUTO_AUGMENTS)}."
            )
        augment.append(AUTO_AUGMENTS[auto_augment]())
    augment.append(_normalize(preprocessing.mean, preprocessing.std))
    if preset == "strong" and random_erasing > 0:
        augment.append(v2.RandomErasing(p=random_erasing))
    return Pipeline(prepare, v2.Compose(augment))


def batch_alphas(preset: str, mixup_alpha: float | None, cutmix_alpha: float | None) -> tuple[float, float]:
    """MixUp and CutMix alphas: the given ones, else the preset's (only ``strong`` mixes)."""
    strong = preset == "strong"
    return (
        (STRONG_MIXUP_ALPHA if strong else 0.0) if mixup_alpha is None else mixup_alpha,
        (STRONG_CUTMIX_ALPHA if strong else 0.0) if cutmix_alpha is None else cutmix_alpha,
    )


def batch_transform(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> v2.Transform | None:
    """MixUp and/or CutMix on a whole batch (one of them per batch when both are on, as in
    torchvision's reference recipe); ``None`` when both alphas are 0. Targets become soft
    ``[B, num_classes]`` float."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(
            f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}: alphas must be >= 0 (0 turns one off)."
        )
    mixers = [
        mixer(alpha=alpha, num_classes=num_classes)
        for mixer, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha))
        if alpha > 0
    ]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
