"""Repeated augmentation (Hoffer et al. 2020; DeiT): each image several times per batch, each copy
augmented differently, so the batch holds the same number of images but fewer distinct ones."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler


class RepeatedAugmentationSampler(DistributedSampler):
    """Each epoch: a seeded shuffle of the indices, each repeated ``repeats`` times in a row, dealt
    round-robin to the ``num_replicas`` ranks (so with DDP the copies of an image land on different
    ranks, as in DeiT's ``RASampler``), cut to ``ceil(len(dataset) / num_replicas)`` per rank: an
    epoch takes as many steps as without repeats, seeing ``1 / repeats`` of the images ``repeats``
    times each.

    A ``DistributedSampler``, so Lightning leaves it in place under DDP instead of wrapping it;
    ``set_epoch`` (which Lightning calls) changes the shuffle per epoch.
    """

    def __init__(
        self,
        dataset: Sized,
        repeats: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats={repeats}: must be >= 1 (1 turns repeated augmentation off).")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.repeats = repeats
        self.num_samples = math.ceil(len(dataset) / num_replicas)  # type: ignore[arg-type]
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(size)
        repeated = order.repeat_interleave(self.repeats).tolist()  # [i, i, i, j, j, j, ...]
        needed = self.total_size * self.repeats  # enough to deal num_samples to every rank
        repeated = (repeated * math.ceil(needed / len(repeated)))[:needed]
        return iter(repeated[self.rank : needed : self.num_replicas][: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples
