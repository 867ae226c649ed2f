"""Repeated augmentation: each chosen image k times, copies spread over ranks, epochs differ."""

from collections import Counter

import pytest
import torch

from vitlab.data import SyntheticDataModule
from vitlab.data.samplers import RepeatedAugmentationSampler
from vitlab.models.preprocessing import FROM_SCRATCH


def test_each_index_comes_k_times_in_a_row_and_the_epoch_keeps_its_length():
    sampler = RepeatedAugmentationSampler(range(30), repeats=3, seed=1)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 30  # as many steps as without repeats
    counts = Counter(indices)
    assert set(counts.values()) == {3} and len(counts) == 10
    assert all(len(set(indices[i : i + 3])) == 1 for i in range(0, 30, 3))  # copies share a batch


def test_ddp_ranks_get_the_copies_of_an_image_and_together_cover_the_epoch():
    ranks = [
        list(RepeatedAugmentationSampler(range(30), 3, num_replicas=3, rank=r, seed=1)) for r in range(3)
    ]
    assert all(len(indices) == 10 for indices in ranks)
    assert ranks[0] == ranks[1] == ranks[2]  # k = world size: each rank augments its own copy
    two = [list(RepeatedAugmentationSampler(range(30), 3, num_replicas=2, rank=r, seed=1)) for r in range(2)]
    counts = Counter(two[0] + two[1])
    assert sum(counts.values()) == 30 and set(counts.values()) == {3}


def test_epochs_reshuffle_and_repeats_of_one_is_a_plain_shuffle():
    sampler = RepeatedAugmentationSampler(range(30), repeats=3, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    plain = list(RepeatedAugmentationSampler(range(30), repeats=1, seed=1))
    assert sorted(plain) == list(range(30))


def test_repeats_below_one_are_refused():
    with pytest.raises(ValueError, match="repeats=0"):
        RepeatedAugmentationSampler(range(4), repeats=0)


def test_the_datamodule_option_puts_the_sampler_in_the_train_loader_only():
    datamodule = SyntheticDataModule(
        preprocessing=FROM_SCRATCH,
        image_size=16,
        train_size=12,
        val_size=6,
        test_size=6,
        num_workers=0,
        train_transform="basic",  # random crop and flip: copies of one image differ
        repeated_augmentation=3,
    )
    datamodule.setup()
    torch.manual_seed(0)
    loader = datamodule.train_dataloader()
    assert isinstance(loader.sampler, RepeatedAugmentationSampler) and loader.sampler.repeats == 3
    assert not isinstance(datamodule.val_dataloader().sampler, RepeatedAugmentationSampler)
    images, labels = next(iter(loader))
    assert torch.equal(labels[0:3], labels[0].expand(3))  # three copies of one image...
    assert not torch.equal(images[0], images[1])  # ...each augmented on its own
