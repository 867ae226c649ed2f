"""Bootstrap intervals: how far 75 test images let an accuracy (or a difference) move."""

from __future__ import annotations

import pytest
import torch

from vitlab.stats import accuracy_interval_metrics, bootstrap_interval, paired_bootstrap_interval


def test_the_interval_holds_the_accuracy_and_narrows_with_more_images():
    few = [True] * 15 + [False] * 5
    many = few * 20
    low, high = bootstrap_interval(few)
    assert low < 0.75 < high
    many_low, many_high = bootstrap_interval(many)
    assert many_low < 0.75 < many_high and many_high - many_low < (high - low) / 3


def test_the_interval_is_the_same_for_the_same_predictions_and_exact_where_nothing_varies():
    flags = torch.rand(75, generator=torch.Generator().manual_seed(1)) > 0.3
    assert bootstrap_interval(flags) == bootstrap_interval(flags.tolist())
    assert bootstrap_interval([True] * 75) == (1.0, 1.0)
    assert accuracy_interval_metrics([False] * 10) == {"test/acc_ci95_low": 0.0, "test/acc_ci95_high": 0.0}


def test_a_paired_difference_holds_zero_for_noise_and_not_for_a_real_gap():
    a = torch.rand(75, generator=torch.Generator().manual_seed(2)) > 0.3
    flipped = a.clone()
    flipped[:2] = ~flipped[:2]  # two images differ: noise
    low, high = paired_bootstrap_interval(a, flipped)
    assert low <= 0 <= high
    better = torch.ones(75, dtype=torch.bool)
    worse = torch.arange(75) % 2 == 0  # right on 38 of 75
    low, high = paired_bootstrap_interval(better, worse)
    assert 0 < low < 37 / 75 < high
    assert paired_bootstrap_interval(a, a) == (0.0, 0.0)


def test_pairs_must_be_of_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_interval([True] * 3, [True] * 4)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])
