"""Synthetic images: deterministic, any size and class count, with a signal a model can learn."""

from __future__ import annotations

import pytest
import torch

from vitlab.data import SyntheticDataModule
from vitlab.data.synthetic import SyntheticImages
from vitlab.models.preprocessing import FROM_SCRATCH


def features(images: torch.Tensor) -> torch.Tensor:
    """Per-channel 95th percentile: the colour of the shape, which is brighter than the background."""
    return images.flatten(2).float().quantile(0.95, dim=2)


def test_images_depend_only_on_seed_and_index():
    a, b = SyntheticImages(5, 24, seed=3), SyntheticImages(5, 24, seed=3)
    assert torch.equal(a(7), b(7))
    assert not torch.equal(a(7), SyntheticImages(5, 24, seed=4)(7))
    assert a(7).shape == (3, 24, 24) and a(7).dtype == torch.uint8


@pytest.mark.parametrize("num_classes", [3, 10])
def test_a_nearest_colour_rule_learned_on_train_is_far_above_chance_on_val(num_classes):
    dm = SyntheticDataModule(
        preprocessing=FROM_SCRATCH,
        num_classes=num_classes,
        image_size=32,
        num_workers=0,
        train_size=20 * num_classes,
        val_size=40,
    )
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    x_train = features(torch.stack([train.load(i) for i in range(len(train))]))
    y_train = torch.tensor(train.labels)
    centroids = torch.stack([x_train[y_train == c].mean(0) for c in range(num_classes)])
    x_val = features(torch.stack([val.load(i) for i in range(len(val))]))
    predicted = torch.cdist(x_val, centroids).argmin(1)
    accuracy = (predicted == torch.tensor(val.labels)).float().mean()
    assert accuracy > 0.6  # chance: 1 / num_classes; the shapes carry more signal than this rule uses


def test_class_names_are_known_at_once_and_splits_do_not_share_images():
    dm = SyntheticDataModule(
        preprocessing=FROM_SCRATCH,
        num_classes=5,
        image_size=16,
        num_workers=0,
        train_size=10,
        val_size=5,
        test_size=5,
    )
    assert dm.class_names == ["disc_0", "square_1", "triangle_2", "ring_3", "disc_4"]
    dm.setup("fit")
    assert [len(dm.datasets[split]) for split in ("train", "val", "test")] == [10, 5, 5]
    assert sorted(dm.datasets["train"].labels) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    train_images = {dm.datasets["train"].load(i).numpy().tobytes() for i in range(10)}
    assert all(dm.datasets["val"].load(i).numpy().tobytes() not in train_images for i in range(5))


def test_batches_come_in_any_size():
    dm = SyntheticDataModule(
        preprocessing=FROM_SCRATCH,
        num_classes=7,
        image_size=40,
        batch_size=6,
        num_workers=0,
        train_transform="strong",
    )
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (6, 3, 40, 40) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.max() < 7
    assert dm.soft_targets  # strong mixes batches by default


def test_fewer_than_two_classes_is_refused():
    with pytest.raises(ValueError, match=r"num_classes=1: a classifier needs at least 2"):
        SyntheticDataModule(preprocessing=FROM_SCRATCH, num_classes=1)
