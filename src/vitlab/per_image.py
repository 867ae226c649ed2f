"""Per-image predictions as CSV: ``predictions.csv`` of vitlab-predict and ``test_predictions.csv`` of
every tested run (train, eval), the record behind an accuracy (one row per image; the confusion
matrix and the bootstrap interval both come from it)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

TEST_PREDICTIONS = "test_predictions.csv"


def write_predictions(
    path: Path,
    images: Sequence[Any],
    probabilities: torch.Tensor,
    class_names: Sequence[str],
    true_classes: Sequence[str] | None = None,
) -> None:
    """One row per image: ``image, [true,] predicted, probability, <one column per class>``."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        truth = ["true"] if true_classes is not None else []
        writer.writerow(["image", *truth, "predicted", "probability", *class_names])
        for index, (image, probs) in enumerate(zip(images, probabilities, strict=True)):
            true = [true_classes[index]] if true_classes is not None else []
            top = int(probs.argmax())
            writer.writerow(
                [image, *true, class_names[top], f"{probs[top]:.4f}", *[f"{p:.4f}" for p in probs]]
            )


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The rows of a predictions CSV, probabilities as floats."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    fixed = {"image", "true", "predicted"}
    return [{k: (v if k in fixed else float(v)) for k, v in row.items()} for row in rows]


def test_images(datamodule: Any) -> list[str]:
    """The test split's images in loader order: file paths relative to the data root where the split
    is files, else their indices."""
    dataset = datamodule.datasets["test"]
    files = getattr(getattr(dataset, "load", None), "paths", None)
    if files is None:
        return [str(i) for i in range(len(dataset))]
    root = getattr(datamodule, "root", None)
    return [str(f.relative_to(root)) if root is not None and root in f.parents else str(f) for f in files]


def write_test_predictions(path: Path, module: Any, datamodule: Any) -> bool:
    """A tested classifier's per-image test predictions (``module.test_predictions``) with the true
    class of each image; False (nothing written) when the test saw only some of the images
    (``limit_test_batches``, a debug run), whose rows could not be matched to files."""
    probabilities, labels = module.test_predictions
    images = test_images(datamodule)
    if len(images) != len(labels):
        log.info("tested %d of the %d test images: no per-image predictions file", len(labels), len(images))
        return False
    names = list(module.class_names)
    write_predictions(path, images, probabilities, names, [names[i] for i in labels])
    return True
