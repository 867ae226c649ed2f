"""Is the data pipeline fast enough? Training-loader images/s beside the training images/s of a ViT
at the same resolution (bf16 autocast; on CUDA if available), as a markdown table.

Loader epochs are interleaved and the median reported (``vitlab.bench``); the first epoch of each
loader is an untimed warm-up that pays for worker start-up. Uses the real FoodVision Mini images
(cache off and on) when found at --data-root (default: where ``train.py`` looks for them), else
synthetic images; --streaming-dir adds the same images converted to litdata's format
(scripts/convert_streaming.py), read from local disk. --per-worker prints instead what one loader
worker delivers per CPU-second and how many workers a GPU training at the given rate needs:

    python scripts/bench_data.py --data-root ../shared/data/pizza_steak_sushi
    python scripts/bench_data.py --data-root ../shared/data/pizza_steak_sushi --streaming-dir /tmp/pss_streaming
    python scripts/bench_data.py ... --train-transform basic --per-worker 3000   # workers an H100 needs
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from torch.utils.data import DataLoader

from vitlab.bench import StepSpec, TableReport, interleaved, time_steps
from vitlab.cli.command import initialize_configs
from vitlab.data import ImageDataModule, ImageFolderDataModule, SyntheticDataModule
from vitlab.data.transforms import TRAIN_PRESETS
from vitlab.models.preprocessing import FROM_SCRATCH

COLUMNS = ["what", "images/s", "x model", "notes"]


def default_data_root() -> Path:
    """FoodVision Mini's folder as ``train.py`` finds it (``data=foodvision_mini``, ``paths.data_dir``)."""
    with initialize_configs():
        return Path(compose("train", overrides=["data=foodvision_mini"]).data.root)


def folder_loaders(root: Path, common: Mapping[str, Any]) -> dict[str, ImageDataModule]:
    return {
        f"loader, cache {'on' if cache else 'off'}": ImageFolderDataModule(
            root, val_fraction=0, cache=cache, **common
        )
        for cache in (False, True)
    }


def synthetic_loaders(common: Mapping[str, Any]) -> dict[str, ImageDataModule]:
    return {"loader, synthetic (generated per image)": SyntheticDataModule(train_size=225, **common)}


def streaming_loaders(input_dir: Path, common: Mapping[str, Any]) -> dict[str, ImageDataModule]:
    """The same images converted by scripts/convert_streaming.py, streamed from ``input_dir``."""
    from vitlab.data.streaming import StreamingDataModule  # litdata is an optional extra

    return {"loader, streaming (litdata, local disk)": StreamingDataModule(str(input_dir), **common)}


def per_worker_rate(dm: ImageDataModule) -> float:
    """Training images per CPU-second through ``dm``'s pipeline (read, decode, transform) in one
    thread, as one loader worker runs it. CPU time, not wall time: on a shared CPU the waiting for
    other processes would otherwise count as cost; this is what sets the workers a GPU needs."""
    dm.setup("fit")
    dataset = dm.datasets["train"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # DataLoader workers run single-threaded
    try:
        next(iter(dataset))  # warm-up: first decode, litdata's chunk index
        start, count = time.process_time(), sum(1 for _ in dataset)
        return count / (time.process_time() - start)
    finally:
        torch.set_num_threads(threads)


def _epoch(loader: DataLoader) -> None:
    for _ in loader:
        pass


def loader_rows(modules: Mapping[str, ImageDataModule], epochs: int) -> list[dict[str, Any]]:
    """Each module's setup time (once) and training-loader images/s (median of interleaved epochs)."""
    notes, loaders = {}, {}
    for label, dm in modules.items():
        start = time.perf_counter()
        dm.setup("fit")
        notes[label] = f"setup {time.perf_counter() - start:.1f} s, {dm.num_workers} workers"
        loaders[label] = dm.train_dataloader()
    runs = {label: partial(_epoch, loader) for label, loader in loaders.items()}
    timings = interleaved(runs, repeats=epochs, warmup=1)
    return [
        {"what": label, "images/s": timings[label].rate(len(loaders[label].dataset)), "notes": notes[label]}
        for label in modules
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=None, help="an image folder (else synthetic)")
    parser.add_argument("--model", default="vit_ti16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--train-transform", default="none", choices=TRAIN_PRESETS)
    parser.add_argument("--epochs", type=int, default=2, help="timed loader epochs (after one warm-up epoch)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--streaming-dir", type=Path, default=None, help="also time this converted dataset")
    parser.add_argument(
        "--per-worker",
        type=float,
        metavar="GPU_RATE",
        default=None,
        help="instead: images per CPU-second of one loader worker, and the workers a GPU training at "
        "GPU_RATE images/s needs (an H100 trains ViT-B/16 in bf16 at about 3000)",
    )
    parser.add_argument(
        "--record", type=Path, help="also write the table with its provenance here (docs/runs/<study>/...)"
    )
    args = parser.parse_args(argv)
    report = TableReport(args.record, argv)

    root = args.data_root or default_data_root()
    common = {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "train_transform": args.train_transform,
        "preprocessing": FROM_SCRATCH,  # the course's: the cost of normalising does not depend on the values
    }
    if (root / "train").is_dir():
        source, modules = str(root), folder_loaders(root, common)
    else:
        source, modules = f"synthetic images (no image folder at {root})", synthetic_loaders(common)
    if args.streaming_dir is not None:
        modules.update(streaming_loaders(args.streaming_dir, common))
    if args.per_worker is not None:
        setting = f"data: {source}; {args.image_size} px, train_transform={args.train_transform}, one thread"
        rows = []
        for label, dm in modules.items():
            rate = per_worker_rate(dm)
            rows.append(
                {"what": label, "images per CPU-s": rate, "workers": math.ceil(args.per_worker / rate)}
            )
        report(setting, rows, ["what", "images per CPU-s", "workers"])
        return
    rows = loader_rows(modules, args.epochs)

    num_classes = next(iter(modules.values())).num_classes
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = StepSpec(args.model, "train", args.batch_size, args.image_size, num_classes, "bf16", device)
    model_rate = time_steps({"model": spec}, repeats=args.steps, warmup=1)["model"].rate(args.batch_size)
    where = "cuda" if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    rows.append(
        {
            "what": f"{args.model} training step (bf16 autocast, {where})",
            "images/s": model_rate,
            "notes": "forward+backward+AdamW",
        }
    )
    for row in rows:
        row["x model"] = row["images/s"] / model_rate

    setting = f"data: {source}; {args.image_size} px, batch {args.batch_size}, train_transform={args.train_transform}"
    report(setting, rows, COLUMNS)


if __name__ == "__main__":
    main()
