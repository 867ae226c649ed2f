"""The one ``Preprocessing`` of a run: how its images are resized and normalised, resolved once
(from the weights, a checkpoint, or the user's ``preprocessing.*`` options) and then passed along.

Normalisation belongs to the weights: ViT-Ti/16 AugReg (mean = std = 0.5) fed ImageNet's statistics
gives worse frozen features (the measured cost: ``scripts/study_preprocessing.sh``, quoted in the
README from its records). So a run that starts from weights takes their mean, std,
resize interpolation and crop fraction, unless the user sets them; sizes follow the model's image
size (resize = floor(image_size / crop_pct), as timm computes it), so 384-px fine-tuning resizes to 426.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vitlab.checkpoint import preprocessing_of, trained_preprocessing
from vitlab.data.transforms import resize_size_for
from vitlab.models.weights import checkpoint_format, torchvision_weights

__all__ = [
    "FROM_SCRATCH",
    "WEIGHT_PREPROCESSING",
    "Preprocessing",
    "checkpoint_preprocessing",
    "describe",
    "resolve_preprocessing",
    "source_preprocessing",
    "with_options",
]

SET_IT = "set preprocessing.mean=[...] preprocessing.std=[...]"


@dataclass(frozen=True)
class Preprocessing:
    """How a model's inputs are prepared: normalisation, resize interpolation, and the centre crop
    as a fraction of the resized shorter side (``crop_pct``) or that side's length (``resize_size``,
    which wins); neither: the image is resized to the square size."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float | None = None
    resize_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):  # lists from configs and checkpoints: one hashable, comparable form
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"{name}={list(values)} must hold 3 values, one per colour channel (RGB).")
            object.__setattr__(self, name, values)


_GOOGLE = (0.5, 0.5, 0.5)  # Google's ViT releases scale pixels to [-1, 1]
_AUGREG = Preprocessing(_GOOGLE, _GOOGLE, "bicubic", 0.9)
# A run without weights: the course's transform (ImageNet's statistics, a plain bilinear resize).
FROM_SCRATCH = Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# The one table of these facts: file formats (``weights.checkpoint_format``) and the named sources
# that must work without timm installed (tests check the timm rows against timm's pretrained_cfg).
# ``torchvision:<ENUM>`` sources read torchvision's own metadata; other ``timm:`` names, timm's.
# None: the format does not tell (timm's files hold AugReg and DeiT weights alike), so the user must.
WEIGHT_PREPROCESSING: dict[str, Preprocessing | None] = {
    "npz": Preprocessing(_GOOGLE, _GOOGLE, "bilinear", None),  # google-research/vision_transformer
    "torchvision": replace(FROM_SCRATCH, crop_pct=0.875),  # ImageNet's statistics, 256 -> 224
    "timm": None,
    "vitlab": None,
    "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k": _AUGREG,
    "timm:vit_small_patch16_224.augreg_in21k_ft_in1k": _AUGREG,
    "timm:vit_base_patch16_224.augreg_in21k_ft_in1k": _AUGREG,
}


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
            f"knows it, is not installed: `pip install timm`, or {SET_IT}."
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
    if file_format == "vitlab":  # a vitlab run's checkpoint says what it trained with
        return trained_preprocessing(source)
    return WEIGHT_PREPROCESSING[file_format]


def with_options(known: Preprocessing | None, options: Mapping[str, Any], unknown: str) -> Preprocessing:
    """``known`` (the weights' or a checkpoint's) with each of the user's ``preprocessing.*``
    ``options`` that is set (not None) in its place; ``unknown`` is the error when neither ``known``
    nor the options give the mean and std."""
    given = {key: value for key, value in options.items() if value is not None}
    if known is None:
        if "mean" not in given or "std" not in given:
            raise ValueError(unknown)
        return Preprocessing(**given)
    return replace(known, **given)


def resolve_preprocessing(
    pretrained: str | None, pretrained_file: str | None = None, options: Mapping[str, Any] | None = None
) -> Preprocessing:
    """The preprocessing of a run from ``pretrained`` (``model.pretrained``; none: the course's)
    with the user's ``options`` (``preprocessing.*``) on top.

    ``pretrained_file`` is a local copy of a named source (``model.pretrained_file``), which leaves
    the preprocessing to the name. Raises ``ValueError`` naming the options to fix when a file's
    preprocessing cannot be told, and ``FileNotFoundError`` for a missing file, before any data is
    prepared.
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
    known = source_preprocessing(pretrained) if pretrained else FROM_SCRATCH
    return with_options(known, options or {}, _untold(pretrained) if known is None else "")


def _untold(pretrained: str) -> str:
    return (
        f"model.pretrained={pretrained}: a {checkpoint_format(pretrained)}-format file does not say how "
        f"its inputs were normalised. Name its source and keep the file, e.g. "
        f"model.pretrained=timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k model.pretrained_file={pretrained}"
        f", or {SET_IT} (0.5 each for Google's ViT weights)."
    )


def checkpoint_preprocessing(
    ckpt_path: str | Path, hyper_parameters: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> Preprocessing:
    """What the checkpoint's run trained with (its stored hyper-parameters), with the user's
    ``options`` (``preprocessing.*``) on top: eval, predict, analyze and fewshot prepare images so."""
    unknown = (
        f"ckpt_path={ckpt_path} does not say how its inputs were normalised (it was saved without its "
        f"preprocessing): {SET_IT} as its training did."
    )
    return with_options(preprocessing_of(hyper_parameters), options or {}, unknown)


def describe(preprocessing: Preprocessing, image_size: int) -> str:
    """One line for the log: the sizes, interpolation, mean and std the model's inputs get (raises
    ``ValueError`` for a crop that does not fit ``image_size``)."""
    resize = resize_size_for(image_size, preprocessing.resize_size, preprocessing.crop_pct)
    if resize == image_size and preprocessing.crop_pct is None:
        sizes = f"resize to {resize} px"
    else:
        sizes = f"resize shorter side to {resize} px, centre crop {image_size}"
    return (
        f"{sizes} ({preprocessing.interpolation}), mean {list(preprocessing.mean)}, "
        f"std {list(preprocessing.std)}"
    )
