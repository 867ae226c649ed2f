"""LightningDataModules: image folders (FoodVision Mini and any ``train/ test/ [val/]`` tree) and
synthetic images, sharing transforms, loaders and the MixUp/CutMix batch transform."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Mapping
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from vitlab.data import transforms
from vitlab.data.download import download_dataset, is_image_folder
from vitlab.data.folder import (
    SKIP_HINT,
    ImageFiles,
    LabelledImages,
    UnreadableImageError,
    decode_all,
    list_classes,
    list_samples,
)
from vitlab.data.samplers import RepeatedAugmentationSampler
from vitlab.data.synthetic import SyntheticImages, synthetic_class_names
from vitlab.errors import ConfigError, DataError, MissingFileError
from vitlab.provenance import files_fingerprint

if TYPE_CHECKING:  # models import the data package
    from vitlab.models.preprocessing import Preprocessing

Samples = list[tuple[Path, int]]


def worker_start_method() -> str | None:
    """The start method for loader workers: the platform's own, not one a parent launcher installed.
    joblib's workers (``launcher=joblib``) set ``loky`` as the default, whose processes torch's
    loader cannot start ("Got pickle error when attempting to start a worker Process")."""
    method = multiprocessing.get_start_method(allow_none=True)
    platform_methods = multiprocessing.get_all_start_methods()  # the platform's default first
    return None if method in (None, *platform_methods) else platform_methods[0]


WARNING_SIGNALS = ("USR1", "USR2")
"""SLURM's warnings before it preempts a job or ends it at its time limit (submitit asks for USR2,
Lightning's own requeue for USR1). SLURM sends them to every process of the job's tasks, the loader
workers too, which ignore them: the training process acts on them (``vitlab.slurm.RequeueOnSignal``),
and a worker would die of one (its default action) or run a handler inherited from the training
process, such as submitit's, which requeues the job from scratch."""


def init_worker(worker_id: int, rank: int = 0) -> None:
    """Each loader worker's ``worker_init_fn``: ignores SLURM's warning signals and, after
    ``seed_everything(workers=True)``, seeds itself as Lightning would (Lightning adds its own seeding
    only to loaders without a ``worker_init_fn``)."""
    for name in WARNING_SIGNALS:
        signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


def usable_cpus() -> int:
    """CPUs this process may use, at most 8: the default loader workers and decoding threads
    (more rarely help a single GPU, and they multiply memory)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, 8)


def build_datamodule(
    config: Mapping[str, Any], preprocessing: Preprocessing, **options: Any
) -> ImageDataModule:
    """The datamodule a data config (``cfg.data``, with ``_target_``) describes, preparing images as
    ``preprocessing`` says; ``options`` override the config's. Called on a partial: Hydra would turn
    the dataclass into a config node."""
    return instantiate(config, _partial_=True)(preprocessing=preprocessing, **options)


class ImageDataModule(L.LightningDataModule):
    """What every image-classification datamodule shares; subclasses provide the datasets.

    ``preprocessing`` (resolved once by the command: the weights', a checkpoint's or the user's)
    prepares every split's images and, for pictures, undoes the normalisation.
    Training targets are int64 ``[B]``, or soft float ``[B, num_classes]`` when MixUp/CutMix is on
    (``soft_targets``); validation and test targets are always int64 ``[B]``.
    """

    def __init__(
        self,
        *,
        preprocessing: Preprocessing,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int | None = None,
        train_transform: str = "none",
        auto_augment: str = "trivialaugment",
        random_erasing: float = 0.25,
        mixup_alpha: float | None = None,
        cutmix_alpha: float | None = None,
        pin_memory: bool | None = None,
        seed: int = 42,
        repeated_augmentation: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1.")
        if repeated_augmentation < 1:
            raise ValueError(
                f"repeated_augmentation={repeated_augmentation}: must be >= 1 (copies of each image per "
                "batch; 1 is off)."
            )
        self.repeated_augmentation = repeated_augmentation
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers={num_workers}: must be >= 0, or null for one per CPU.")
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.preprocessing = preprocessing
        self.num_workers = usable_cpus() if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_pipeline = transforms.train_transform(
            train_transform, image_size, preprocessing, auto_augment, random_erasing
        )
        self.eval_pipeline = transforms.eval_transform(image_size, preprocessing)
        self.mixup_alpha, self.cutmix_alpha = transforms.batch_alphas(
            train_transform, mixup_alpha, cutmix_alpha
        )
        self.datasets: dict[str, LabelledImages] = {}
        self.download_record: dict[str, str] | None = None  # the download this run made, if any

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def soft_targets(self) -> bool:
        """Whether training batches carry mixed, soft targets ``[B, num_classes]``."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} dataset yet: call setup() before asking for its dataloader.")
        dataset = self.datasets[split]
        sampler = None
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if split == "train" and self.repeated_augmentation > 1:
            # The run's seed (seed_everything sets the same one on every rank), as the default shuffle.
            seed = torch.initial_seed() % 2**32
            sampler = RepeatedAugmentationSampler(
                dataset, self.repeated_augmentation, num_replicas=world_size, rank=rank, seed=seed
            )
        if split != "train" and world_size > 1:
            # Each evaluation image on exactly one rank: Lightning's default sampler would pad the
            # last ranks with repeated images, and they would be counted twice in the metrics.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=worker_start_method() if self.num_workers > 0 else None,
            worker_init_fn=partial(init_worker, rank=rank) if self.num_workers > 0 else None,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    @cached_property
    def batch_transform(self) -> v2.Transform | None:
        """MixUp/CutMix for training batches (``None`` when off); built once the classes are known."""
        return transforms.batch_transform(self.num_classes, self.mixup_alpha, self.cutmix_alpha)

    def provenance(self) -> dict[str, Any]:
        """Per split set up: its image count and, for files, their fingerprint (``files_fingerprint``);
        a download this run made, with its SHA-256. For ``results.json`` and checkpoints."""
        splits: dict[str, Any] = {}
        for split, dataset in self.datasets.items():
            files = getattr(dataset.load, "paths", None) if isinstance(dataset, LabelledImages) else None
            root = getattr(self, "root", None)
            inside = files is not None and root is not None and all(Path(root) in f.parents for f in files)
            splits[split] = {
                "images": len(dataset),
                "fingerprint": files_fingerprint(files, root if inside else None) if files else None,
            }
            if split == "val" and dataset is self.datasets.get("test"):
                splits[split] = {"same_as": "test"}
        return {"splits": splits, "download": self.download_record}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Mix on the device, after the transfer, and only while training."""
        if self.soft_targets and self.trainer is not None and self.trainer.training:
            images, targets = batch
            return self.batch_transform(images, targets)
        return batch


class ImageFolderDataModule(ImageDataModule):
    """``root/{train,test}/<class>/*`` (plus ``val/`` if present), downloaded from ``url`` if absent.

    Without ``val/``, validation is a seeded, per-class ``val_fraction`` of train, or the test split
    when ``val_fraction=0`` (what the course does). Files that are not images by their extension are
    skipped, as torchvision's ``ImageFolder`` does, with one warning. ``setup`` decodes every image
    once, so corrupt ones are reported before training (or skipped, with ``skip_corrupt``); with
    ``cache`` the resized images are kept in memory.
    Other keyword arguments: see ``ImageDataModule``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        url: str | None = None,
        sha256: str | None = None,
        val_fraction: float = 0.1,
        cache: bool = False,
        skip_corrupt: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1) (0 validates on test/).")
        self.root = Path(root).expanduser()
        self.url, self.sha256 = url, sha256
        self.val_fraction, self.cache, self.skip_corrupt = val_fraction, cache, skip_corrupt
        self._class_names: list[str] | None = None

    def prepare_data(self) -> None:
        if is_image_folder(self.root):
            return
        if self.root.is_dir() and any(self.root.iterdir()):  # never download into the user's files
            raise DataError(
                f"data.root={self.root} holds files but no train/ folder: expected "
                f"{self.root}/train/<class>/<image> and {self.root}/test/<class>/<image> (optionally "
                f"val/ too), one folder per class. Sort the images into that layout and use "
                f"data=imagefolder data.root={self.root}"
                + (f", or point data.root at a new folder to download {self.url} there." if self.url else ".")
            )
        if self.url is not None:
            digest = download_dataset(self.url, self.root, self.sha256)
            self.download_record = {"url": self.url, "sha256": digest}

    @property
    def class_names(self) -> list[str]:
        """Sorted class folders of ``train/``: known after ``prepare_data``, without ``setup``."""
        if self._class_names is None:
            if not self.root.is_dir():
                hint = "call prepare_data() to download it" if self.url else "set data.url to download it"
                raise MissingFileError(
                    f"data.root={self.root} does not exist: expected train/ and test/ folders there, "
                    f"each with one folder per class. Point data.root at your images, or {hint}."
                )
            self._class_names = list_classes(self.root / "train")
        return self._class_names

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:  # files are listed and checked once, whatever the stage
            return
        samples, not_images = self.find_samples()
        self._warn_not_images(not_images)
        if "val" not in samples and self.val_fraction > 0:
            samples["train"], samples["val"] = self._split_train(samples["train"])
        pipelines = {"train": self.train_pipeline, "val": self.eval_pipeline, "test": self.eval_pipeline}
        decoded: dict[str, list[Tensor | None]] = {}
        unreadable: list[tuple[Path, str]] = []
        for split, found in samples.items():
            paths = [path for path, _ in found]
            decoded[split], bad = decode_all(paths, pipelines[split].prepare, self.cache, usable_cpus())
            unreadable += bad
        self._handle_unreadable(unreadable)
        skipped = {path for path, _ in unreadable}
        datasets: dict[str, LabelledImages] = {}
        for split, found in samples.items():
            keep = [i for i, (path, _) in enumerate(found) if path not in skipped]
            if not keep:
                raise DataError(
                    f"no readable image left in the {split} split under {self.root} after skipping the "
                    f"unreadable ones: add images to it, or replace the unreadable ones."
                )
            datasets[split] = LabelledImages(
                ImageFiles([found[i][0] for i in keep]),
                [found[i][1] for i in keep],
                pipelines[split].prepare,
                pipelines[split].augment,
                [decoded[split][i] for i in keep] if self.cache else None,
            )
        datasets.setdefault("val", datasets["test"])  # val_fraction=0: the course's choice
        self.datasets = datasets

    def find_samples(self) -> tuple[dict[str, Samples], list[tuple[Path, str]]]:
        """``(path, label)`` pairs per split (``train``, ``test`` and ``val`` if there is one), and
        the skipped files with the reason (files that are not images, which ``setup`` counts in one
        warning); subclasses with another layout override it."""
        folders = {split: self.root / split for split in ("train", "val", "test")}
        if not folders["val"].is_dir():
            del folders["val"]
        self._check_classes(folders)
        listed = {split: list_samples(folder, self.class_names) for split, folder in folders.items()}
        samples = {split: found for split, (found, _) in listed.items()}
        not_images = [(path, "not an image file") for _, skipped in listed.values() for path in skipped]
        return samples, not_images

    def _check_classes(self, folders: dict[str, Path]) -> None:
        expected = self.class_names  # first: a missing root is reported as such
        for split, folder in folders.items():
            found = list_classes(folder)
            if found != expected:
                extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
                differences = [f"only in {split}/: {', '.join(extra)}"] if extra else []
                differences += [f"only in train/: {', '.join(missing)}"] if missing else []
                raise DataError(
                    f"{folder} and {folders['train']} hold different classes ({'; '.join(differences)}): "
                    f"give every split the same class folders, adding or removing the ones named."
                )

    def _split_train(self, samples: Samples) -> tuple[Samples, Samples]:
        """Hold out ``val_fraction`` of each class (seeded), so every class is validated."""
        generator = torch.Generator().manual_seed(self.seed)
        train: Samples = []
        val: Samples = []
        for label in range(self.num_classes):
            of_class = [s for s in samples if s[1] == label]
            order = torch.randperm(len(of_class), generator=generator).tolist()
            n_val = int(self.val_fraction * len(of_class) + 0.5)  # half up, unlike round()
            if n_val == len(of_class):
                raise ConfigError(
                    f"data.val_fraction={self.val_fraction} leaves no training image of class "
                    f"{self.class_names[label]!r} ({len(of_class)} images): lower data.val_fraction."
                )
            val += [of_class[i] for i in order[:n_val]]
            train += [of_class[i] for i in order[n_val:]]
        if not val:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} of {len(samples)} training images holds out none: "
                f"raise data.val_fraction, add a val/ folder, or set it to 0 to validate on test/."
            )
        return sorted(train), sorted(val)

    def _warn_not_images(self, not_images: list[tuple[Path, str]]) -> None:
        """One line for all the files skipped as not images (torchvision's ImageFolder says nothing):
        a ``notes.txt`` is harmless, but images saved with an unknown extension would go unseen."""
        if not_images:
            rank_zero_warn(
                f"skipped {_count(len(not_images), 'file')} that "
                f"{'is not an image' if len(not_images) == 1 else 'are not images'} (by extension) under "
                f"{self.root}, e.g. {not_images[0][0].relative_to(self.root)}"
            )

    def _handle_unreadable(self, unreadable: list[tuple[Path, str]]) -> None:
        """One line for any number of undecodable images: the first one by name, and the count."""
        if not unreadable:
            return
        (first, reason), count = sorted(unreadable)[0], len(unreadable)
        if not self.skip_corrupt:
            which, them = (f"{first}", "it") if count == 1 else (f"{count} images, the first {first}", "them")
            raise UnreadableImageError(
                f"cannot decode {which} ({reason}): corrupt, truncated or not an image. Delete or replace "
                f"{them}, or {SKIP_HINT}."
            )
        rank_zero_warn(
            f"skipped {_count(count, 'unreadable image')} (corrupt, truncated or not an image) under "
            f"{self.root}, e.g. {first} ({reason})"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


class SyntheticDataModule(ImageDataModule):
    """Generated images (see ``synthetic.py``): any size and class count, no files.

    Other keyword arguments: see ``ImageDataModule``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 3,
        train_size: int = 240,
        val_size: int = 60,
        test_size: int = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._class_names = synthetic_class_names(num_classes)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def setup(self, stage: str | None = None) -> None:
        offset = 0
        for split, size in self.sizes.items():
            images = SyntheticImages(self.num_classes, self.image_size, self.seed, offset)
            pipeline = self.train_pipeline if split == "train" else self.eval_pipeline
            labels = [images.label(i) for i in range(size)]
            self.datasets[split] = LabelledImages(images, labels, pipeline.prepare, pipeline.augment)
            offset += size
