"""Food-101 in torchvision's layout, and the course's FoodVision subsets of it (one source for both
``data=food101`` and ``scripts/make_foodvision.py``).

The layout is ``<root>/food-101/images/<class>/<id>.jpg`` with ``meta/classes.txt`` and
``meta/{train,test}.json`` (``{class: ["<class>/<id>", ...]}``), what ``torchvision.datasets.Food101``
downloads and reads. A subset keeps some classes and a seeded fraction of each split's images, drawn
as the PyTorch course does: per split, the chosen classes' entries in file order, then
``random.sample`` of ``round(fraction * count)`` of them, one generator seeded once for both splits.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchvision.datasets import Food101

from vitlab.data.datamodule import ImageFolderDataModule, Samples
from vitlab.data.download import CLASH_ERRNOS, NETWORK_ERRORS
from vitlab.errors import ConfigError, DataError, ExistingFileError, MissingFileError, NetworkError

SPLITS = ("train", "test")
META_FILES = ("classes.txt", *(f"{split}.json" for split in SPLITS))
FOODVISION_BIG_FRACTION = 0.2  # the course's FoodVision Big: all 101 classes, 20 % of the images


def food101_folder(root: str | Path) -> Path:
    """The ``food-101`` folder: ``root`` may be torchvision's root (holding ``food-101/``) or that folder."""
    root = Path(root).expanduser()
    for folder in (root / "food-101", root):
        if all((folder / "meta" / name).is_file() for name in META_FILES) and (folder / "images").is_dir():
            return folder
    raise MissingFileError(
        f"no Food-101 at {root}: expected {root}/food-101/images/<class>/<id>.jpg and "
        f"{', '.join(META_FILES)} in {root}/food-101/meta (torchvision's Food101 layout; data=food101 with "
        f"data.download=true, or torchvision.datasets.Food101(root, download=True), creates it)."
    )


def read_classes(folder: Path) -> list[str]:
    """All class names, sorted (torchvision's label order)."""
    return sorted(
        line.strip() for line in (folder / "meta" / "classes.txt").read_text().splitlines() if line.strip()
    )


def choose_classes(wanted: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """``wanted`` (all when ``None``) checked against ``available``, in label order (sorted)."""
    if wanted is None:
        return sorted(available)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(
            f"classes={list(wanted)}: unknown Food-101 classes {unknown}; choose from "
            f"{', '.join(sorted(available))}."
        )
    if len(set(wanted)) < 2:
        raise ConfigError(f"classes={list(wanted)}: a classifier needs at least 2 different classes.")
    return sorted(set(wanted))


def sample_subset(folder: Path, classes: Sequence[str], fraction: float, seed: int) -> dict[str, list[str]]:
    """``"<class>/<id>"`` entries per split, sampled as the course does (see the module docstring)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}: must be in (0, 1] (FoodVision Big keeps 0.2).")
    chosen = set(classes)
    rng = random.Random(seed)
    subset: dict[str, list[str]] = {}
    for split in SPLITS:
        listed = json.loads((folder / "meta" / f"{split}.json").read_text())
        entries = [entry for name, of_class in listed.items() if name in chosen for entry in of_class]
        subset[split] = entries if fraction == 1 else rng.sample(entries, k=round(fraction * len(entries)))
    return subset


def download_food101(root: Path) -> None:
    """torchvision's Food-101 download (its URL and MD5), extracted beside ``root`` and moved into
    place only when complete, so an interrupted download never passes for a dataset."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".food-101.", suffix=".partial", dir=root))
    try:
        offline = (
            f"fetch and extract it elsewhere so that {root}/food-101/images and {root}/food-101/meta "
            f"exist, or point data.root at an existing copy."
        )
        try:
            Food101(tmp, download=True)
        except NETWORK_ERRORS as err:
            raise NetworkError(
                f"no Food-101 at {root} (data.root) and downloading {Food101._URL} failed: {err}. "
                f"Without network, {offline}"
            ) from err
        except RuntimeError as err:  # torchvision's "File not found or corrupted.": a wrong MD5
            raise DataError(
                f"no Food-101 at {root} (data.root) and the download of {Food101._URL} is not the "
                f"expected archive ({err}): it is incomplete, or changed upstream. Try again, or {offline}"
            ) from err
        try:
            os.replace(tmp / "food-101", root / "food-101")  # over a missing or empty folder only
        except OSError as err:
            if err.errno not in CLASH_ERRNOS:
                raise
            raise ExistingFileError(
                f"cannot move the downloaded Food-101 to {root}/food-101: it exists and is not empty, "
                f"yet holds no complete Food-101. Delete it, or set data.root elsewhere."
            ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Food101DataModule(ImageFolderDataModule):
    """Food-101 (``root`` in torchvision's layout), all 101 classes or ``classes``, keeping a seeded
    ``fraction`` of each split: FoodVision Big is ``fraction=0.2``; ``classes=[pizza, steak, sushi]``
    rebuilds FoodVision Mini-style subsets. Labels follow the sorted class names.

    ``download`` fetches it with torchvision's ``Food101`` (about 5 GB, MD5-checked) when absent.
    Validation is on the test split (the course's choice) unless ``val_fraction`` holds out part of
    train. ``cache``, ``skip_corrupt`` and the rest: see ``ImageFolderDataModule``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        classes: Sequence[str] | None = None,
        fraction: float = 1.0,
        download: bool = False,
        val_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("url") is not None:
            raise ValueError(
                f"url={kwargs['url']!r}: Food-101 is downloaded from torchvision's own URL and MD5; "
                f"remove data.url (data=imagefolder takes a zip URL)."
            )
        super().__init__(root, val_fraction=val_fraction, **kwargs)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction}: must be in (0, 1] (FoodVision Big keeps 0.2).")
        self.classes = None if classes is None else list(classes)
        self.fraction, self.download = fraction, download

    def prepare_data(self) -> None:
        try:
            food101_folder(self.root)
        except FileNotFoundError:
            if not self.download:
                raise
            download_food101(self.root)

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = choose_classes(self.classes, read_classes(food101_folder(self.root)))
        return self._class_names

    def find_samples(self) -> tuple[dict[str, Samples], list[tuple[Path, str]]]:
        folder = food101_folder(self.root)
        subset = sample_subset(folder, self.class_names, self.fraction, self.seed)
        label = {name: index for index, name in enumerate(self.class_names)}
        samples: dict[str, Samples] = {}
        for split, entries in subset.items():
            if not entries:
                raise ConfigError(
                    f"data.fraction={self.fraction} keeps no {split} image of classes {self.class_names}: "
                    f"raise data.fraction."
                )
            samples[split] = sorted(
                (folder / "images" / f"{entry}.jpg", label[entry.split("/")[0]]) for entry in entries
            )
        return samples, []
