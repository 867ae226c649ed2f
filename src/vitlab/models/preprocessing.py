"""The input preprocessing pretrained weights expect, and how a run's data options follow from it.

Normalisation belongs to the weights: ViT-Ti/16 AugReg (mean = std = 0.5) fed ImageNet's statistics
instead calls 6 of 25 FoodVision pizzas "pizza" rather than 23, and its frozen features classify
FoodVision Mini at 0.84 instead of 0.96. So a run that starts from weights takes their mean, std,
resize interpolation and crop fraction, unless the user sets them; sizes follow the model's image
size (resize = floor(image_size / crop_pct), as timm computes it), so 384-px fine-tuning resizes to 426.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitlab.checkpoint import trained_preprocessing
from vitlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vitlab.models.weights import checkpoint_format, torchvision_weights

__all__ = ["WEIGHT_PREPROCESSING", "Preprocessing", "resolve_preprocessing", "source_preprocessing"]


@dataclass(frozen=True)
class Preprocessing:
    """How the weights' inputs were prepared: normalisation, resize interpolation, and the centre
    crop as a fraction of the resized shorter side (None: the image is resized to the square size)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float | None = None


_GOOGLE = (0.5, 0.5, 0.5)  # Google's ViT releases scale pixels to [-1, 1]
_AUGREG = Preprocessing(_GOOGLE, _GOOGLE, "bicubic", 0.9)

# The one table of these facts: file formats (``weights.checkpoint_format``) and the named sources
# that must work without timm installed (tests check the timm rows against timm's pretrained_cfg).
# ``torchvision:<ENUM>`` sources read torchvision's own metadata; other ``timm:`` names, timm's.
# None: the format does not tell (timm's files hold AugReg and DeiT weights alike), so the user must.
WEIGHT_PREPROCESSING: dict[str, Preprocessing | None] = {
    "npz": Preprocessing(_GOOGLE, _GOOGLE, "bilinear", None),  # google-research/vision_transformer
    "torchvision": Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875),  # 256 -> 224
    "timm": None,
    "vitlab": None,
    "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k": _AUGREG,
    "timm:vit_small_patch16_224.augreg_in21k_ft_in1k": _AUGREG,
    "timm:vit_base_patch16_224.augreg_in21k_ft_in1k": _AUGREG,
}
_FROM_SCRATCH = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "bilinear", None)  # the course's transform


def _from_torchvision(weights_name: str) -> Preprocessing:
    transform = torchvision_weights(weights_name).transforms()  # metadata only: nothing downloads
    return Preprocessing(
        tuple(transform.mean),
        tuple(transform.std),
        transform.interpolation.value,
        transform.crop_size[0] / transform.resize_size[0],
    )


def _from_timm(source: str) -> Preprocessing:
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise ValueError(
            f"model.pretrained={source}: its preprocessing is not in vitlab's table and timm, which "
            f"knows it, is not installed: `pip install timm`, or set data.mean=[...] data.std=[...]."
        ) from None
    cfg = get_pretrained_cfg(source.removeprefix("timm:"))
    if cfg is None:
        raise ValueError(
            f"model.pretrained={source}: timm knows no such pretrained model; name one of "
            f"timm.list_pretrained(), e.g. timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k."
        )
    return Preprocessing(tuple(cfg.mean), tuple(cfg.std), cfg.interpolation, cfg.crop_pct)


def source_preprocessing(source: str) -> Preprocessing | None:
    """What ``source`` (``torchvision:<ENUM>``, ``timm:<name.tag>`` or a weights file) expects;
    None for a file whose format does not tell."""
    if source in WEIGHT_PREPROCESSING:
        return WEIGHT_PREPROCESSING[source]
    if source.startswith("torchvision:"):
        return _from_torchvision(source.removeprefix("torchvision:"))
    if source.startswith("timm:"):
        return _from_timm(source)
    file_format = checkpoint_format(source)  # a clear error for a missing or unreadable file
    trained = trained_preprocessing(source) if file_format == "vitlab" else None
    if trained is not None:  # a vitlab run's checkpoint says what it trained with
        return Preprocessing(
            mean=tuple(trained["mean"]),
            std=tuple(trained["std"]),
            interpolation=trained.get("interpolation") or "bilinear",
            crop_pct=trained.get("crop_pct"),
        )
    return WEIGHT_PREPROCESSING[file_format]


def resolve_preprocessing(
    pretrained: str | None,
    pretrained_file: str | None = None,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
) -> dict[str, object]:
    """The data options ``mean``, ``std``, ``interpolation`` and ``crop_pct``: each the user's where
    given (not None), else the weights', else the course's (ImageNet statistics, a plain resize).

    ``pretrained`` names the weights (``model.pretrained``); ``pretrained_file`` is a local copy of a
    named source (``model.pretrained_file``), which leaves the preprocessing to the name. Raises
    ``ValueError`` naming the options to fix when a file's preprocessing cannot be told, and
    ``FileNotFoundError`` for a missing file, before any data is prepared.
    """
    named = bool(pretrained) and pretrained.startswith(("timm:", "torchvision:"))
    if pretrained_file and not named:
        raise ValueError(
            f"model.pretrained_file={pretrained_file} is a local copy of a named source, but "
            f"model.pretrained={pretrained} names none: set model.pretrained=timm:<name.tag> (or "
            f"torchvision:<ENUM>) with it, or load the file alone with model.pretrained={pretrained_file}."
        )
    if pretrained_file and not Path(pretrained_file).is_file():
        raise FileNotFoundError(
            f"model.pretrained_file={pretrained_file}: no such file. Give the path of a local copy of "
            f"{pretrained}'s weights, or leave model.pretrained_file out to download them."
        )
    weights = source_preprocessing(pretrained) if pretrained else _FROM_SCRATCH
    if weights is None and (mean is None or std is None):
        raise ValueError(
            f"model.pretrained={pretrained}: a {checkpoint_format(pretrained)}-format file does not say how "
            f"its inputs were normalised. Name its source and keep the file, e.g. "
            f"model.pretrained=timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k "
            f"model.pretrained_file={pretrained}, or set data.mean=[...] data.std=[...] (0.5 each for "
            f"Google's ViT weights)."
        )
    weights = weights or _FROM_SCRATCH
    return {
        "mean": list(weights.mean if mean is None else mean),
        "std": list(weights.std if std is None else std),
        "interpolation": weights.interpolation if interpolation is None else interpolation,
        "crop_pct": weights.crop_pct if crop_pct is None else crop_pct,
    }
