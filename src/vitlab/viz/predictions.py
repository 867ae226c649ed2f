"""A grid of images with their predictions, as the course's ``pred_and_plot_image`` titles them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.transforms.v2 import functional as F

CORRECT, WRONG, UNKNOWN = "green", "red", "black"


def prediction_title(
    probabilities: Tensor, class_names: Sequence[str], true_label: int | None
) -> tuple[str, str]:
    """``("pred: sushi (0.93)\\ntrue: steak", colour)``: green when right, red when wrong, black
    when the true class is unknown. Two lines: on one, two long class names run into the next panel."""
    predicted = int(probabilities.argmax())
    title = f"pred: {class_names[predicted]} ({float(probabilities[predicted]):.2f})"
    if true_label is None:
        return title, UNKNOWN
    return f"{title}\ntrue: {class_names[true_label]}", CORRECT if predicted == true_label else WRONG


def save_prediction_grid(
    images: Tensor | Sequence[Tensor],
    probabilities: Tensor,
    class_names: Sequence[str],
    path: Path | str,
    true_labels: Sequence[int | None] | Tensor | None = None,
    columns: int = 4,
    total: int | None = None,
) -> Path:
    """``prediction_grid_figure`` saved as a PNG."""
    figure = prediction_grid_figure(images, probabilities, class_names, true_labels, columns, total)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def prediction_grid_figure(
    images: Tensor | Sequence[Tensor],
    probabilities: Tensor,
    class_names: Sequence[str],
    true_labels: Sequence[int | None] | Tensor | None = None,
    columns: int = 4,
    total: int | None = None,
) -> Figure:
    """A grid of ``images`` (``[N, 3, H, W]`` or a list of ``[3, H, W]``, any sizes; uint8, or float
    in [0, 1], i.e. before normalisation) titled with each prediction of ``probabilities``
    ``[N, classes]`` and, where known, the true class.

    ``total``: how many images these were taken from; when more than shown, the grid says so
    ("16 of 32 shown"), lest a reader take it for all of them."""
    if len(images) != len(probabilities):
        raise ValueError(
            f"{len(images)} images but {len(probabilities)} rows of probabilities: pass one row per image."
        )
    if probabilities.shape[-1] != len(class_names):
        raise ValueError(
            f"probabilities have {probabilities.shape[-1]} classes but {len(class_names)} class_names were given."
        )
    labels = (
        [None] * len(images) if true_labels is None else [None if t is None else int(t) for t in true_labels]
    )
    if len(labels) != len(images):
        raise ValueError(
            f"{len(labels)} true_labels for {len(images)} images: pass one per image (None where unknown)."
        )
    if total is not None and total < len(images):
        raise ValueError(
            f"total={total} but {len(images)} images are shown: total counts them and those left out."
        )
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows), dpi=100, layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, image, probs, label in zip(panels, images, probabilities, labels, strict=False):
        pixels = F.to_dtype(image, torch.float32, scale=True).clamp(0, 1)
        axes.imshow(pixels.permute(1, 2, 0).cpu().numpy())
        title, colour = prediction_title(probs, class_names, label)
        axes.set_title(title, color=colour, fontsize=9)
    for axes in panels:  # every panel, the empty ones at the end of the last row included
        axes.axis("off")
    if total is not None and total > len(images):
        figure.suptitle(f"{len(images)} of {total} shown")
    return figure
