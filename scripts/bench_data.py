"""Is the data pipeline fast enough? Loader images/s (cache off and on) beside the training
images/s of a ViT at the same resolution (bf16 autocast on CPU; CUDA if available).

Uses the real FoodVision Mini images when found, else synthetic images; --streaming-dir adds a row
for the same images converted to litdata's format (scripts/convert_streaming.py), read from disk:

    python scripts/bench_data.py --data-root ../shared/data/pizza_steak_sushi
    python scripts/bench_data.py --data-root ../shared/data/pizza_steak_sushi --streaming-dir /tmp/pss_streaming
    python scripts/bench_data.py ... --train-transform basic --per-worker 3000   # workers an H100 needs
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from vitlab.data import ImageDataModule, ImageFolderDataModule, SyntheticDataModule
from vitlab.models import create_model


def loader_rate(dm: ImageDataModule, epochs: int) -> tuple[float, float]:
    """(setup seconds, images/s over the epochs after the first, which pays for worker start-up)."""
    start = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    loader = dm.train_dataloader()
    images, elapsed = 0, 0.0
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        count = sum(len(batch[1]) for batch in loader)
        if epoch:
            images, elapsed = images + count, elapsed + time.perf_counter() - start
    return setup_s, images / elapsed


def streaming_datamodule(input_dir: Path, common: dict) -> ImageDataModule:
    """The same images converted by scripts/convert_streaming.py, streamed from ``input_dir``."""
    from vitlab.data.streaming import StreamingDataModule  # litdata is an optional extra

    return StreamingDataModule(str(input_dir), **common)


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


def training_rate(model_name: str, num_classes: int, image_size: int, batch_size: int, steps: int) -> float:
    """Images/s of full training steps (forward, backward, AdamW) under bf16 autocast."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = create_model(model_name, num_classes=num_classes, image_size=image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, kernel selection
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_root = Path(os.environ.get("VITLAB_DATA_DIR", "data")) / "pizza_steak_sushi"
    parser.add_argument(
        "--data-root", type=Path, default=default_root, help="an image folder (else synthetic)"
    )
    parser.add_argument("--model", default="vit_ti16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--train-transform", default="none", choices=["none", "basic", "strong"])
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
    args = parser.parse_args(argv)

    common = {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "train_transform": args.train_transform,
    }
    real = (args.data_root / "train").is_dir()
    if real:
        source = str(args.data_root)
        variants = {
            f"loader, cache {'on' if cache else 'off'}": ImageFolderDataModule(
                args.data_root, val_fraction=0, cache=cache, **common
            )
            for cache in (False, True)
        }
    else:
        source = f"synthetic images (no image folder at {args.data_root})"
        variants = {"loader, synthetic (generated per image)": SyntheticDataModule(train_size=225, **common)}
    if args.streaming_dir is not None:
        variants["loader, streaming (litdata, local disk)"] = streaming_datamodule(args.streaming_dir, common)
    if args.per_worker is not None:
        print(f"data: {source}; {args.image_size} px, train_transform={args.train_transform}, one thread")
        print(f"| {'what':<56} | {'images per CPU-s':>16} | workers for {args.per_worker:,.0f} images/s")
        print(f"|{'-' * 58}|{'-' * 18}|------")
        for label, dm in variants.items():
            rate = per_worker_rate(dm)
            print(f"| {label:<56} | {rate:>16.1f} | {math.ceil(args.per_worker / rate)}")
        return
    rows = []
    for label, dm in variants.items():
        setup_s, rate = loader_rate(dm, args.epochs)
        rows.append((label, rate, f"setup {setup_s:.1f} s, {dm.num_workers} workers"))
    num_classes = dm.num_classes
    model_rate = training_rate(args.model, num_classes, args.image_size, args.batch_size, args.steps)
    device = "cuda" if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    rows.append(
        (f"{args.model} training step (bf16 autocast, {device})", model_rate, "forward+backward+AdamW")
    )

    print(
        f"data: {source}; {args.image_size} px, batch {args.batch_size}, train_transform={args.train_transform}"
    )
    print(f"| {'what':<56} | {'images/s':>9} | {'x model':>7} | notes")
    print(f"|{'-' * 58}|{'-' * 11}|{'-' * 9}|------")
    for label, rate, notes in rows:
        print(f"| {label:<56} | {rate:>9.1f} | {rate / model_rate:>7.1f} | {notes}")


if __name__ == "__main__":
    main()
