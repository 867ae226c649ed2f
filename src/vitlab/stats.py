"""Bootstrap intervals for accuracies measured on a few images (FoodVision Mini tests on 75): how far
a number may move by the luck of which images were drawn, so that noise is not read as a difference."""

from __future__ import annotations

from collections.abc import Sequence

import torch

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0  # fixed: eval, train and the sweep summary report the same interval for the same predictions


def _interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
    return round(low, 4), round(high, 4)


def _resampled_indices(count: int, resamples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(count, (resamples, count), generator=generator)


def bootstrap_interval(
    correct: Sequence[bool] | torch.Tensor, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy of per-image ``correct`` flags: the images are
    resampled with replacement ``resamples`` times."""
    flags = torch.as_tensor(correct, dtype=torch.float64)
    if flags.numel() == 0:
        raise ValueError("no images: an accuracy interval needs at least one prediction.")
    return _interval(flags[_resampled_indices(len(flags), resamples, seed)].mean(1), level)


def paired_bootstrap_interval(
    correct_a: Sequence[bool] | torch.Tensor,
    correct_b: Sequence[bool] | torch.Tensor,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Interval of accuracy(a) - accuracy(b) on the same images, resampling the images (pairs kept
    together): an interval holding 0 means the test images cannot tell the two apart."""
    a = torch.as_tensor(correct_a, dtype=torch.float64)
    b = torch.as_tensor(correct_b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired predictions need the same images: {len(a)} and {len(b)} given.")
    indices = _resampled_indices(len(a), resamples, seed)
    return _interval(a[indices].mean(1) - b[indices].mean(1), level)


def accuracy_interval_metrics(
    correct: Sequence[bool] | torch.Tensor, prefix: str = "test/"
) -> dict[str, float]:
    """The accuracy's bootstrap interval as two metrics, as results.json and sweep summaries show it."""
    low, high = bootstrap_interval(correct)
    return {f"{prefix}acc_ci95_low": low, f"{prefix}acc_ci95_high": high}
