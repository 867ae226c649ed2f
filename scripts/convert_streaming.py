"""Convert an image folder or Food-101 to litdata's optimized format, for data=streaming.

Each image is decoded once, its shorter side resized to --size (never enlarged) and JPEG-encoded
into ~64 MB shards, so training reads a few large files instead of many small ones and decodes
small JPEGs; --out may be a local folder or an object-store URL (s3://bucket/path, gs://...).

    python scripts/convert_streaming.py --images data/pizza_steak_sushi --out data/pizza_steak_sushi_streaming
    python scripts/convert_streaming.py --food101 data --fraction 0.2 --out data/foodvision_big_streaming
    python train.py data=streaming data.input_dir=data/foodvision_big_streaming
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vitlab.data import Food101DataModule, ImageFolderDataModule
from vitlab.data.streaming import write_streaming_dataset
from vitlab.models.preprocessing import FROM_SCRATCH


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--images", type=Path, help="an image folder: train/ and test/ (and val/) of class folders"
    )
    source.add_argument("--food101", type=Path, help="torchvision's Food101 root (or its food-101 folder)")
    parser.add_argument("--classes", nargs="+", default=None, help="Food-101 classes to keep (default: all)")
    parser.add_argument("--fraction", type=float, default=1.0, help="Food-101: seeded share of each split")
    parser.add_argument("--out", required=True, help="new folder or object-store URL for the dataset")
    parser.add_argument("--size", type=int, default=256, help="shorter side after resizing (px)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (1-100)")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk-bytes", default="64MB", help="target shard size")
    parser.add_argument("--seed", type=int, default=42, help="of the Food-101 subset and the shard order")
    args = parser.parse_args(argv)
    if "://" not in args.out and Path(args.out).exists() and any(Path(args.out).iterdir()):
        parser.error(f"--out {args.out} exists and is not empty: choose a new folder, or delete it first.")
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality={args.quality}: must be in [1, 100].")
    if args.images is not None and (args.classes is not None or args.fraction != 1.0):
        parser.error("--classes and --fraction select from Food-101: use them with --food101, not --images.")
    try:
        if args.images is not None:
            source_data = ImageFolderDataModule(args.images, val_fraction=0, preprocessing=FROM_SCRATCH)
        else:
            source_data = Food101DataModule(
                args.food101,
                classes=args.classes,
                fraction=args.fraction,
                seed=args.seed,
                preprocessing=FROM_SCRATCH,  # only the listing is used: images are stored unprepared
            )
        samples, not_images = source_data.find_samples()
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    for path, reason in not_images:
        print(f"skipping {path}: {reason}")
    write_streaming_dataset(
        samples,
        source_data.class_names,
        args.out.rstrip("/"),
        size=args.size,
        quality=args.quality,
        num_workers=args.num_workers,
        chunk_bytes=args.chunk_bytes,
        seed=args.seed,
    )
    print(f"wrote {args.out}; train with: python train.py data=streaming data.input_dir={args.out}")


if __name__ == "__main__":
    main()
