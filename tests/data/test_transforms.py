"""Transforms: output shapes and dtypes, presets, resize/crop, MixUp/CutMix soft targets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vitlab.data import eval_transform
from vitlab.data.transforms import TRAIN_PRESETS, batch_alphas, batch_transform, train_transform
from vitlab.models.preprocessing import FROM_SCRATCH, Preprocessing


def photo(height: int = 48, width: int = 40) -> torch.Tensor:
    return torch.randint(
        0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_eval_transform_resizes_normalises_and_returns_float():
    image = photo()
    out = eval_transform(32, FROM_SCRATCH)(image)
    assert out.shape == (3, 32, 32)
    assert out.dtype == torch.float32
    flat = torch.full((3, 10, 10), 255, dtype=torch.uint8)  # white -> (1 - mean) / std
    expected = (1 - torch.tensor(FROM_SCRATCH.mean)) / torch.tensor(FROM_SCRATCH.std)
    assert torch.allclose(eval_transform(8, FROM_SCRATCH)(flat)[:, 0, 0], expected)


def test_eval_transform_takes_the_weights_own_mean_and_std():
    flat = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(eval_transform(4, Preprocessing([0.5] * 3, [0.5] * 3))(flat), torch.ones(3, 4, 4))


def test_resize_size_resizes_the_shorter_side_then_centre_crops():
    image = torch.zeros(3, 40, 80, dtype=torch.uint8)
    image[:, :, 20:60] = 255  # a bright centre, dark left and right quarters
    transform = eval_transform(16, replace(FROM_SCRATCH, resize_size=20))
    prepared = transform.prepare(image)
    assert prepared.shape == (3, 16, 16)  # 40x80 -> 20x40 -> centre 16x16: inside the bright part
    assert prepared.min() == 255
    assert (
        eval_transform(16, FROM_SCRATCH).prepare(image).float().mean() < 200
    )  # a plain resize keeps the dark sides


def test_resize_size_below_image_size_is_rejected():
    with pytest.raises(ValueError, match=r"resize_size=16 is smaller than image_size=32"):
        eval_transform(32, replace(FROM_SCRATCH, resize_size=16))


@pytest.mark.parametrize("preset", TRAIN_PRESETS)
def test_every_training_preset_gives_float_images_of_image_size(preset):
    transform = train_transform(preset, 32, FROM_SCRATCH)
    assert transform.prepare(photo()).dtype == torch.uint8  # what the cache keeps
    out = transform(photo())
    assert out.shape == (3, 32, 32)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("auto_augment", ["trivialaugment", "randaugment"])
def test_strong_preset_augments_differently_each_call(auto_augment):
    transform = train_transform("strong", 32, FROM_SCRATCH, auto_augment=auto_augment)
    torch.manual_seed(0)
    assert not torch.equal(transform(photo()), transform(photo()))


def test_unknown_names_list_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown train_transform 'heavy': choose one of none, basic, strong"
    ):
        train_transform("heavy", 32, FROM_SCRATCH)
    with pytest.raises(ValueError, match=r"unknown auto_augment 'autoaug'.*trivialaugment, randaugment"):
        train_transform("strong", 32, FROM_SCRATCH, auto_augment="autoaug")


def test_only_the_strong_preset_mixes_unless_told_otherwise():
    assert batch_alphas("none", None, None) == (0.0, 0.0)
    assert batch_alphas("basic", 0.2, None) == (0.2, 0.0)
    mixup, cutmix = batch_alphas("strong", None, None)
    assert mixup > 0 and cutmix > 0
    assert batch_alphas("strong", 0.0, 0.0) == (0.0, 0.0)


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_batch_transform_gives_soft_targets_that_sum_to_one(mixup, cutmix):
    images = torch.randn(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, targets = batch_transform(5, mixup, cutmix)(images, labels)
    assert mixed.shape == images.shape
    assert targets.shape == (6, 5)
    assert targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(6))


def test_no_batch_transform_when_both_alphas_are_zero_and_negative_alphas_are_rejected():
    assert batch_transform(3, 0.0, 0.0) is None
    with pytest.raises(ValueError, match=r"mixup_alpha=-1.*must be >= 0"):
        batch_transform(3, -1, 0.0)
