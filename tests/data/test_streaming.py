"""data=streaming: the litdata converter, DDP sharding, shuffling and mid-epoch resume.

Datasets are read from a local folder: an object store cannot be reached here. Two ranks are
simulated the way litdata itself detects them (``WORLD_SIZE`` and ``GLOBAL_RANK``), so each rank's
loader can be iterated in one process; one slow test runs real 2-process DDP training.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY_RUN
from PIL import Image

pytest.importorskip("litdata")
from litdata import StreamingDataset

from vitlab.data.streaming import StreamingDataModule, read_meta
from vitlab.errors import MissingFileError
from vitlab.models.preprocessing import Preprocessing
from vitlab.train import train

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
CLASSES = ("pizza", "steak", "sushi")
N_TRAIN, N_TEST = 10, 3  # per class
BATCH, WORLD = 4, 2


def id_image(path: Path, image_id: int, label: int) -> None:
    """A flat 40 x 48 JPEG whose red and green levels spell ``image_id`` (blue: the label), so a
    batch tells which images it holds after resizing, JPEG coding and flips."""
    colour = (8 * (image_id % 32) + 4, 8 * (image_id // 32) + 4, 60 + 60 * label)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), colour, dtype=np.uint8)).save(path, quality=95)


def ids_of(images: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Image ids of a batch normalised with mean 0 and std 1 (so pixels are in [0, 1])."""
    levels = images.mean(dim=(2, 3)) * 255  # [B, 3]
    assert torch.equal(((levels[:, 2] - 60) / 60).round().long(), labels)
    return (((levels[:, 1] - 4) / 8).round() * 32 + ((levels[:, 0] - 4) / 8).round()).long().tolist()


@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Path:
    """An image folder of id images converted by the script: 30 train and 9 test images."""
    root = tmp_path_factory.mktemp("streaming")
    image_id = 0
    for split, count in (("train", N_TRAIN), ("test", N_TEST)):
        for label, name in enumerate(CLASSES):
            for i in range(count):
                id_image(root / "images" / split / name / f"{i}.jpg", image_id, label)
                image_id += 1
    (root / "images" / "train" / "pizza" / "notes.txt").write_text("not an image")
    convert = runpy.run_path(str(SCRIPTS / "convert_streaming.py"), run_name="script_under_test")["main"]
    args = ["--images", str(root / "images"), "--out", str(root / "optimized"), "--size", "24"]
    convert([*args, "--num-workers", "1", "--chunk-bytes", "2KB"])
    return root / "optimized"


def datamodule(input_dir: Path, **kwargs) -> StreamingDataModule:
    options = dict(
        image_size=16, batch_size=BATCH, num_workers=0, preprocessing=Preprocessing((0, 0, 0), (1, 1, 1))
    )
    return StreamingDataModule(str(input_dir), **{**options, **kwargs})


def rank_loader(monkeypatch, input_dir: Path, rank: int, split: str = "train", **kwargs):
    """The loader that rank ``rank`` of ``WORLD`` would build (litdata reads the rank at setup)."""
    monkeypatch.setenv("WORLD_SIZE", str(WORLD))
    monkeypatch.setenv("GLOBAL_RANK", str(rank))
    dm = datamodule(input_dir, **kwargs)
    dm.setup("fit")
    return getattr(dm, f"{split}_dataloader")()


def epoch_ids(loader) -> list[list[int]]:
    """Ids per batch of one pass over ``loader``."""
    return [ids_of(images, labels) for images, labels in loader]


def test_the_converter_writes_resized_jpeg_shards_and_the_class_names(streamed, capsys):
    assert read_meta(str(streamed)) == (list(CLASSES), ["train", "test"])
    assert len(list((streamed / "train").glob("chunk-*.bin"))) > 1  # sharded
    raw = StreamingDataset(str(streamed / "train"))
    assert len(raw) == len(CLASSES) * N_TRAIN  # notes.txt skipped
    jpeg = bytes(raw[0]["image"])
    assert jpeg[:2] == b"\xff\xd8"
    from torchvision.io import decode_jpeg

    assert decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)).shape == (3, 24, 28)
    dm = datamodule(streamed)
    dm.setup("fit")
    assert (dm.class_names, dm.num_classes) == (list(CLASSES), 3)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (BATCH, 3, 16, 16) and labels.dtype == torch.int64


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_training_image_is_seen_at_most_once_per_epoch_across_two_ranks(
    streamed, monkeypatch, num_workers
):
    loaders = [rank_loader(monkeypatch, streamed, rank, num_workers=num_workers) for rank in range(WORLD)]
    epochs = []
    for _ in range(2):
        per_rank = [epoch_ids(loader) for loader in loaders]
        assert len(per_rank[0]) == len(per_rank[1])  # DDP ranks must run the same number of steps
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert len(seen) == len(set(seen))
        assert set(seen) <= set(range(len(CLASSES) * N_TRAIN))
        assert len(CLASSES) * N_TRAIN - len(seen) < WORLD * BATCH
        epochs.append(per_rank)
    assert epochs[0] != epochs[1]  # reshuffled every epoch


def test_evaluation_sees_every_test_image_exactly_once_across_two_ranks(streamed, monkeypatch):
    seen = [
        i for r in range(WORLD) for b in epoch_ids(rank_loader(monkeypatch, streamed, r, "test")) for i in b
    ]
    first_test_id = len(CLASSES) * N_TRAIN
    assert sorted(seen) == list(range(first_test_id, first_test_id + len(CLASSES) * N_TEST))


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: workers' state
def test_a_mid_epoch_resume_neither_repeats_nor_skips_images(streamed, monkeypatch, num_workers):
    for rank in range(WORLD):
        full = epoch_ids(rank_loader(monkeypatch, streamed, rank, num_workers=num_workers))
        loader = rank_loader(monkeypatch, streamed, rank, num_workers=num_workers)
        before = []
        for images, labels in loader:
            before.append(ids_of(images, labels))
            if len(before) == 2:
                break
        state = loader.state_dict()
        resumed = rank_loader(monkeypatch, streamed, rank, num_workers=num_workers)
        resumed.load_state_dict(state)
        after = epoch_ids(resumed)
        assert before + after == full  # the same images, in the same order, once


class RecordIds(L.Callback):
    """Ids of the training images of each epoch, as the model receives them."""

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).extend(ids_of(*batch))


class CrashMidEpoch(L.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise SystemExit("simulated kill")


def streaming_run(compose_config, streamed, *overrides):
    return compose_config(
        "data=streaming",
        f"data.input_dir={streamed}",
        "data.batch_size=8",
        "data.num_workers=0",
        "preprocessing.mean=[0,0,0]",
        "preprocessing.std=[1,1,1]",
        *TINY_RUN,  # its model and trainer; the data named here
        "model.depth=1",
        "trainer.max_epochs=2",
        "+trainer.num_sanity_val_steps=0",
        "test=false",
        *overrides,
        tiny=False,
    )


@pytest.mark.slow
def test_training_resumed_from_a_mid_epoch_checkpoint_continues_where_it_stopped(
    compose_config, streamed, tmp_path
):
    loader = datamodule(streamed, batch_size=8, image_size=32)
    loader.setup("fit")
    loader = loader.train_dataloader()
    expected = [
        [i for batch in epoch_ids(loader) for i in batch] for _ in range(2)
    ]  # what an unbroken run sees
    crashed, resumed = RecordIds(), RecordIds()
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit):
        train(
            streaming_run(compose_config, streamed, f"paths.output_dir={runs / 'a'}"),
            callbacks=[crashed, CrashMidEpoch()],
        )
    checkpoint = runs / "a" / "checkpoints" / "on_exception.ckpt"
    results = train(
        streaming_run(compose_config, streamed, f"paths.output_dir={runs / 'b'}", f"ckpt_path={checkpoint}"),
        callbacks=[resumed],
    )
    assert results["global_step"] == 2 * 4  # 30 images in batches of 8, as if never interrupted
    assert crashed.seen[0] == expected[0]
    assert crashed.seen[1] + resumed.seen[1] == expected[1]  # nothing repeated, nothing skipped


@pytest.mark.slow
def test_two_process_ddp_training_streams_a_disjoint_shard_per_rank(streamed, tmp_path):
    command = [
        sys.executable,
        str(SCRIPTS.parent / "train.py"),
        "data=streaming",
        f"data.input_dir={streamed}",
        "data.batch_size=4",
        "data.num_workers=0",
        *TINY_RUN,  # its model and trainer; the data named here
        "model.depth=1",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["global_step"] == 2 * 3  # 30 images: 24 used (< 2 x 4 dropped), 3 batches of 4 per rank
    assert sum(map(sum, results["test_confusion_matrix"])) == len(CLASSES) * N_TEST  # each test image once


def decoded_on_device(streamed: Path, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    dm = datamodule(streamed, decode_on_device=True)
    dm.setup("test")
    encoded, labels = next(iter(dm.test_dataloader()))
    assert isinstance(encoded, list) and encoded[0].dtype == torch.uint8 and encoded[0].ndim == 1
    moved = [data.to(device) for data in encoded], labels.to(device)  # what Lightning's transfer does
    return dm.on_after_batch_transfer(moved, 0)


def test_decoding_after_the_transfer_gives_the_batches_loader_workers_give(streamed):
    dm = datamodule(streamed)
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()))
    on_device, device_labels = decoded_on_device(streamed, "cpu")
    assert torch.equal(device_labels, labels)
    assert torch.equal(on_device, images)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_jpegs_decode_on_the_gpu_like_on_the_cpu(streamed):
    dm = datamodule(streamed)
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()))
    on_gpu, gpu_labels = decoded_on_device(streamed, "cuda")
    assert on_gpu.is_cuda and on_gpu.shape == images.shape
    assert torch.equal(gpu_labels.cpu(), labels)
    assert (on_gpu.cpu() - images).abs().mean() < 2 / 255  # nvJPEG and libjpeg round differently


def test_bench_data_times_the_streamed_images_beside_the_model(streamed, tmp_path, capsys):
    bench = runpy.run_path(str(SCRIPTS / "bench_data.py"), run_name="script_under_test")["main"]
    options = [
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--epochs",
        "1",
        "--steps",
        "1",
    ]
    bench(
        [
            "--data-root",
            str(tmp_path / "none"),
            "--streaming-dir",
            str(streamed),
            "--model",
            "vit_ti16",
            *options,
        ]
    )
    # a rate of 1000 or more is printed with a thousands separator (1,234)
    rates = re.findall(r"^\| (.+?)\s+\|\s+([\d.,]+) \|", capsys.readouterr().out, flags=re.MULTILINE)
    assert [label.split(" (")[0] for label, _ in rates] == [
        "loader, synthetic",
        "loader, streaming",
        "vit_ti16 training step",
    ]
    assert all(float(rate.replace(",", "")) > 0 for _, rate in rates)

    bench(
        [
            "--data-root",
            str(tmp_path / "none"),
            "--streaming-dir",
            str(streamed),
            "--per-worker",
            "3000",
            *options,
        ]
    )
    rows = re.findall(
        r"^\| (loader.+?) \| ([\d,.]+) \| (\d+) \|$", capsys.readouterr().out, flags=re.MULTILINE
    )
    assert [label.split(" (")[0] for label, _, _ in rows] == ["loader, synthetic", "loader, streaming"]
    for _, printed, workers in rows:  # enough workers for the (printed, rounded) rate, and not one more
        rate = float(printed.replace(",", ""))
        assert int(workers) * rate >= 3000 * 0.999 and (int(workers) - 1) * rate * 0.999 < 3000


def test_the_converter_takes_a_food101_subset_and_refuses_bad_arguments(make_food101, tmp_path, capsys):
    convert = runpy.run_path(str(SCRIPTS / "convert_streaming.py"), run_name="script_under_test")["main"]
    out = tmp_path / "subset"
    food101 = ["--food101", str(make_food101()), "--classes", "steak", "pizza", "--fraction", "0.5"]
    convert([*food101, "--out", str(out), "--num-workers", "1"])
    assert read_meta(str(out)) == (["pizza", "steak"], ["train", "test"])
    assert (len(StreamingDataset(str(out / "train"))), len(StreamingDataset(str(out / "test")))) == (10, 4)
    for bad, message in (
        ([*food101, "--out", str(out)], "exists and is not empty"),
        (
            ["--images", str(tmp_path), "--fraction", "0.5", "--out", str(tmp_path / "x")],
            "use them with --food101",
        ),
        (["--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")], "does not exist"),
    ):
        with pytest.raises(SystemExit):
            convert(bad)
        assert message in capsys.readouterr().err


def test_a_folder_without_a_converted_dataset_is_reported_with_the_command_that_makes_one(tmp_path):
    with pytest.raises(
        MissingFileError, match=r"data.input_dir=.*holds no streaming dataset.*convert_streaming.py"
    ):
        datamodule(tmp_path).prepare_data()
