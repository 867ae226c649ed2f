"""Build a FoodVision-style image folder (some classes, a fraction of their images) from a local Food-101.

Food-101 must be in torchvision's ``Food101`` layout; the sampling is ``vitlab.data.food101``'s (the
PyTorch course's), the same that ``data=food101 data.classes=[...] data.fraction=...`` trains on
without copying files. This script writes the subset out, e.g. to share it as a zip:

    python scripts/make_foodvision.py --food101 ~/datasets --fraction 0.2 --out data/pizza_steak_sushi_20_percent --zip
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from vitlab.data.download import sha256sum
from vitlab.data.food101 import choose_classes, food101_folder, read_classes, sample_subset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--food101", type=Path, required=True, help="torchvision's Food101 root")
    parser.add_argument("--classes", nargs="+", default=["pizza", "steak", "sushi"])
    parser.add_argument("--fraction", type=float, default=0.1, help="share of each split's images to keep")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True, help="the new image folder (must not exist)")
    parser.add_argument("--zip", action="store_true", help="also write <out>.zip and print its SHA-256")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists: choose a new folder, or delete it first.")
    try:
        food101 = food101_folder(args.food101)
        classes = choose_classes(args.classes, read_classes(food101))
        subset = sample_subset(food101, classes, args.fraction, args.seed)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", suffix=".partial", dir=args.out.parent))
    try:
        for split, entries in subset.items():
            for entry in entries:
                target = tmp / split / f"{entry}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(food101 / "images" / f"{entry}.jpg", target)
            print(f"{split}: {len(entries)} images")
        os.replace(tmp, args.out)  # only a complete subset appears at --out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out}")
    if args.zip:
        archive = Path(shutil.make_archive(str(args.out), "zip", root_dir=args.out))
        print(f"wrote {archive}; use it with data.url=<where you host it> data.sha256={sha256sum(archive)}")


if __name__ == "__main__":
    main()
