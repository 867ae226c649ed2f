"""Datasets that do not fit in memory: Lightning's ``litdata`` optimized format, streamed from a
local folder or an object store (``s3://``, ``gs://``, ``azure://``, ...).

A converted dataset (``scripts/convert_streaming.py``) is one folder holding litdata datasets:

    <input_dir>/meta/         one item: {"class_names": newline-joined names in label order,
                              "splits": space-joined split names}
    <input_dir>/train/        {"image": JPEG bytes, resized once at conversion, "label": int}
    <input_dir>/test/         the same; val/ too when the source had one

litdata shards the chunks across DDP ranks and loader workers, shuffles chunks and the items inside
them per epoch, drops fewer than ``world_size x batch_size`` training images so that every rank runs
the same number of steps, and its ``StreamingDataLoader`` is stateful: its position travels in every
checkpoint (``StreamingDataModule.state_dict``), so a run resumed mid-epoch neither repeats nor skips
images.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as F

from vitlab.data.datamodule import ImageDataModule, Samples, init_worker
from vitlab.data.folder import load_image
from vitlab.errors import MissingFileError

try:
    from litdata import StreamingDataLoader, StreamingDataset, optimize
except ModuleNotFoundError as err:  # an optional extra
    raise ModuleNotFoundError(
        f"streaming data needs litdata ({err}): pip install 'vitlab[stream]' (or pip install litdata)."
    ) from err

SPLITS = ("train", "val", "test")
META = "meta"


def encode_image(path: Path, size: int, quality: int) -> bytes:
    """The image at ``path`` as JPEG bytes, its shorter side resized to ``size`` (never enlarged)."""
    image = load_image(path)
    if min(image.shape[-2:]) > size:
        image = F.resize(image, size, antialias=True)
    return encode_jpeg(image, quality=quality).numpy().tobytes()


def _encode_sample(sample: tuple[str, int], size: int, quality: int) -> dict[str, Any]:
    path, label = sample
    return {"image": encode_image(Path(path), size, quality), "label": label}


def _meta_item(item: tuple[str, str]) -> dict[str, str]:
    class_names, splits = item
    return {"class_names": class_names, "splits": splits}


def write_streaming_dataset(
    samples: dict[str, Samples],
    class_names: Sequence[str],
    output_dir: str,
    *,
    size: int = 256,
    quality: int = 90,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
    seed: int = 42,
) -> None:
    """Write ``samples`` (``(path, label)`` per split) as JPEG-encoded litdata shards under
    ``output_dir`` (a folder or an object-store URL), with a progress bar per split.

    Samples are written in a seeded random order so that every chunk mixes the classes: litdata
    shuffles chunks and windows inside them, not the whole dataset at once.
    """
    if "train" not in samples or "test" not in samples:
        raise ValueError(
            f"splits {sorted(samples)}: a streaming dataset needs train and test (val optional)."
        )
    # spawn (litdata's default) re-imports torch in every worker, seconds each; fork is safe here.
    start_method = "fork" if sys.platform == "linux" else None
    rng = random.Random(seed)
    for split, found in samples.items():
        order = [(str(path), label) for path, label in found]
        rng.shuffle(order)
        print(f"{split}: {len(order)} images", flush=True)
        optimize(
            partial(_encode_sample, size=size, quality=quality),
            order,
            f"{output_dir}/{split}",
            chunk_bytes=chunk_bytes,
            num_workers=num_workers,
            reorder_files=False,
            start_method=start_method,
        )
    meta = ("\n".join(class_names), " ".join(s for s in SPLITS if s in samples))
    optimize(
        _meta_item,
        [meta],
        f"{output_dir}/{META}",
        chunk_size=1,
        num_workers=1,
        start_method=start_method,
        verbose=False,
    )


def read_meta(input_dir: str, cache_dir: str | None = None) -> tuple[list[str], list[str]]:
    """``(class names, splits)`` of a converted dataset."""
    try:
        meta = StreamingDataset(f"{input_dir}/{META}", cache_dir=cache_dir)[0]
    except (FileNotFoundError, ValueError) as err:
        raise MissingFileError(
            f"data.input_dir={input_dir} holds no streaming dataset ({err}). Convert images first: "
            f"python scripts/convert_streaming.py --images <folder> --out {input_dir}"
        ) from err
    return meta["class_names"].split("\n"), meta["splits"].split()


class DecodeImage:
    """A litdata ``transform``: ``{"image": JPEG bytes, "label"}`` -> ``(image, label)``.

    With ``decode=False`` the image stays encoded (a 1-D uint8 tensor) for decoding on the GPU.
    """

    def __init__(
        self, prepare: Callable[[Tensor], Tensor], augment: Callable[[Tensor], Tensor], decode: bool
    ):
        self.prepare, self.augment, self.decode = prepare, augment, decode

    def __call__(self, item: dict[str, Any]) -> tuple[Tensor, int]:
        data = torch.frombuffer(bytearray(item["image"]), dtype=torch.uint8)
        if not self.decode:
            return data, item["label"]
        image = decode_jpeg(data, mode=ImageReadMode.RGB)
        return self.augment(self.prepare(image)), item["label"]


def collate_encoded(batch: list[tuple[Tensor, int]]) -> tuple[list[Tensor], Tensor]:
    """Encoded images differ in length: keep them as a list (the transfer moves each one)."""
    return [image for image, _ in batch], torch.tensor([label for _, label in batch])


class StreamingDataModule(ImageDataModule):
    """Trains from a dataset converted by ``scripts/convert_streaming.py`` at ``input_dir`` (a local
    folder or an object-store URL; remote chunks are cached in ``cache_dir``, litdata's default
    when ``None``). Validation uses ``val/`` when the dataset has it, else ``test/`` (the course).

    ``decode_on_device`` moves the JPEG bytes to the accelerator and decodes them there
    (``torchvision.io.decode_jpeg(device="cuda")``, after the transfer, in the main process), then
    runs the transforms on the device: for GPUs that decode faster than the loader workers can.
    Other keyword arguments: see ``ImageDataModule``.
    """

    def __init__(
        self,
        input_dir: str,
        *,
        cache_dir: str | None = None,
        decode_on_device: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("repeated_augmentation", 1) != 1:
            raise ValueError(
                f"repeated_augmentation={kwargs['repeated_augmentation']} is not supported when streaming "
                "(litdata's loader samples each item once per epoch): use 1, or an image-folder dataset."
            )
        super().__init__(**kwargs)
        self.input_dir = str(input_dir).rstrip("/")
        self.cache_dir, self.decode_on_device = cache_dir, decode_on_device
        self._meta: tuple[list[str], list[str]] | None = None
        self._train_loader: StreamingDataLoader | None = None
        self._train_state: dict[str, Any] | None = None  # from a checkpoint, for the next train loader

    def _read_meta(self) -> tuple[list[str], list[str]]:
        if self._meta is None:
            self._meta = read_meta(self.input_dir, self.cache_dir)
        return self._meta

    @property
    def class_names(self) -> list[str]:
        return self._read_meta()[0]

    def prepare_data(self) -> None:
        self._read_meta()  # a wrong input_dir fails here, before the model is built

    def setup(self, stage: str | None = None) -> None:
        """Datasets are made here, after DDP starts, because litdata reads the rank and world size
        when a dataset is created."""
        if self.datasets:
            return
        splits = self._read_meta()[1]
        sources = {"train": "train", "val": "val" if "val" in splits else "test", "test": "test"}
        for name, split in sources.items():
            pipeline = self.train_pipeline if name == "train" else self.eval_pipeline
            self.datasets[name] = StreamingDataset(
                f"{self.input_dir}/{split}",
                cache_dir=self.cache_dir,
                shuffle=name == "train",
                seed=self.seed,
                transform=DecodeImage(pipeline.prepare, pipeline.augment, decode=not self.decode_on_device),
            )

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position, saved in every checkpoint (rank 0's: ranks step together).

        Lightning also saves stateful loaders itself, but restores them only if the loader did not
        exist before the checkpoint was read, and the learning-rate schedule's
        ``estimated_stepping_batches`` builds it earlier (Lightning issue #20550). A datamodule's
        state is restored before that, so the position travels here too.
        """
        return {} if self._train_loader is None else {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_state = state_dict.get("train_loader")
        if self._train_state is not None and self._train_loader is not None:
            self._train_loader.load_state_dict(self._train_state)  # strategies that restore after setup

    def train_dataloader(self) -> StreamingDataLoader:
        self._train_loader = self._loader("train")
        if self._train_state is not None:
            self._train_loader.load_state_dict(self._train_state)
        return self._train_loader

    def _loader(self, split: str) -> StreamingDataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} dataset yet: call setup() before asking for its dataloader.")
        return StreamingDataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=partial(init_worker, rank=self.trainer.global_rank if self.trainer else 0)
            if self.num_workers > 0
            else None,
            pin_memory=self.pin_memory,
            # Evaluation sees every image once: no drop, even if the ranks then run uneven batches.
            drop_last=None if split == "train" else False,
            collate_fn=collate_encoded if self.decode_on_device else None,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.decode_on_device:
            encoded, targets = batch
            pipeline = (
                self.train_pipeline
                if self.trainer is not None and self.trainer.training
                else self.eval_pipeline
            )
            images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=encoded[0].device)
            batch = torch.stack([pipeline(image) for image in images]), targets
        return super().on_after_batch_transfer(batch, dataloader_idx)
