"""Image files on disk: listing class folders, decoding to RGB uint8 tensors, checking every file.

Class folders are listed here rather than with ``torchvision.datasets.ImageFolder`` because that
one takes any folder as a class (a stray ``.ipynb_checkpoints`` becomes a fourth food). As there,
files are images by their extension and the rest (``notes.txt``) are skipped, but returned, so the
datamodule can say it skipped them; hidden files (``.DS_Store``, macOS's ``._photo.jpg``) are
skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from vitlab.errors import DataError, MissingFileError

SKIP_HINT = "set data.skip_corrupt=true to skip unreadable files"


class UnreadableImageError(DataError):
    """A file that should be an image but cannot be decoded (corrupt, truncated, or not an image)."""


def load_image(path: str | Path) -> Tensor:
    """Decode an image file into an RGB uint8 tensor ``[3, H, W]``.

    torchvision's decoders cover JPEG (CMYK and grayscale included), PNG (palette, alpha, 16 bit),
    WebP and GIF; PIL covers the rest of torchvision's ``IMG_EXTENSIONS`` (BMP, TIFF, PPM).
    """
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:
        try:
            with Image.open(path) as pil_image:
                image = F.pil_to_tensor(ImageOps.exif_transpose(pil_image).convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise UnreadableImageError(
                f"cannot decode {path}: {err}. It is corrupt, truncated or not an image: replace or "
                f"delete it, or {SKIP_HINT}."
            ) from err
    if image.ndim == 4:  # animated GIF / WebP: the first frame
        image = image[0]
    return F.to_dtype(image, torch.uint8, scale=True)  # 16-bit PNGs decode to uint16


def _visible(name: str) -> bool:
    return not name.startswith(".")  # .DS_Store, .ipynb_checkpoints, editors' lock files


def list_classes(split_dir: Path) -> list[str]:
    """Class names of a split: its visible subfolders, sorted (so pizza, steak, sushi -> 0, 1, 2)."""
    if not split_dir.is_dir():
        raise MissingFileError(
            f"no folder {split_dir}: an image folder needs train/ and test/ subfolders, each holding "
            f"one folder per class ({split_dir.parent}/train/<class>/<image>.jpg)."
        )
    classes = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and _visible(entry.name))
    if not classes:
        raise DataError(
            f"{split_dir} holds no class folders: put each class's images in their own subfolder, "
            f"e.g. {split_dir}/<class>/<image>.jpg."
        )
    return classes


def list_samples(split_dir: Path, class_names: Sequence[str]) -> tuple[list[tuple[Path, int]], list[Path]]:
    """``(image path, class index)`` pairs of a split, plus the visible files that are not images
    (by extension), which are skipped.

    Raises when a class folder holds no images: a class the model can never see is a setup mistake.
    """
    samples: list[tuple[Path, int]] = []
    not_images: list[Path] = []
    for index, name in enumerate(class_names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise MissingFileError(
                f"missing class folder {class_dir}: every split needs the same class folders as "
                f"train/ ({', '.join(class_names)}). Add it, or remove that class from the other splits."
            )
        found = 0
        for folder, subfolders, files in os.walk(class_dir, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if _visible(d))
            for file in sorted(f for f in files if _visible(f)):
                path = Path(folder, file)
                if path.suffix.lower() in IMG_EXTENSIONS:
                    samples.append((path, index))
                    found += 1
                else:
                    not_images.append(path)
        if not found:
            raise DataError(
                f"class folder {class_dir} holds no images (extensions {', '.join(IMG_EXTENSIONS)}): "
                f"add images to it or delete the folder."
            )
    return samples, not_images


def decode_all(
    paths: Sequence[Path], prepare: Callable[[Tensor], Tensor], keep: bool, threads: int
) -> tuple[list[Tensor | None], list[tuple[Path, str]]]:
    """Decode every file once: finds unreadable files before training, and fills the cache.

    Returns ``prepare(image)`` per path when ``keep`` (``None`` otherwise or when unreadable) and
    the unreadable paths with the reason. Threads help: torchvision's decoders release the GIL.
    """

    def decode(path: Path) -> Tensor | str | None:
        try:
            image = load_image(path)
        except UnreadableImageError as err:
            return str(err.__cause__)
        return prepare(image) if keep else None

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(decode, paths))
    bad = [(path, result) for path, result in zip(paths, results, strict=True) if isinstance(result, str)]
    return [None if isinstance(result, str) else result for result in results], bad


class LabelledImages(Dataset[tuple[Tensor, int]]):
    """``(image, label)`` pairs through two transform stages.

    ``prepare`` is deterministic (decode-time resize, uint8 in and out) and is what the cache keeps;
    ``augment`` runs on every access, so random augmentation still differs per epoch. With the
    cache or without it, an item goes through exactly the same functions.
    """

    def __init__(
        self,
        load: Callable[[int], Tensor],
        labels: Sequence[int],
        prepare: Callable[[Tensor], Tensor],
        augment: Callable[[Tensor], Tensor],
        cached: Sequence[Tensor] | None = None,
    ) -> None:
        self.load, self.labels, self.prepare, self.augment = load, list(labels), prepare, augment
        self.cached = cached

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.cached[index] if self.cached is not None else self.prepare(self.load(index))
        return self.augment(image), self.labels[index]


class ImageFiles:
    """Index -> decoded image for a list of files (a picklable ``load`` for ``LabelledImages``)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __call__(self, index: int) -> Tensor:
        return load_image(self.paths[index])
