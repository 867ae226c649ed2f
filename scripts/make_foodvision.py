"""Build a FoodVision-style subset (some classes, a fraction of their images) from a local Food-101.

Food-101 must be in torchvision's ``Food101`` layout: ``<root>/food-101/images/<class>/<id>.jpg``
and ``<root>/food-101/meta/{train,test}.txt``. The sampling follows the PyTorch course's data
creation step: per split, the images of the chosen classes are listed in ``meta/<split>.txt``
order and ``random.sample`` draws ``round(fraction * count)`` of them after ``random.seed(seed)``.

    python scripts/make_foodvision.py --food101 ~/datasets --fraction 0.2 --out data/pizza_steak_sushi_20_percent --zip
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
from pathlib import Path

from vitlab.data.download import sha256sum

SPLITS = ("train", "test")


def food101_folder(root: Path) -> Path:
    """``root`` may be torchvision's root (holding ``food-101/``) or ``food-101/`` itself."""
    for folder in (root / "food-101", root):
        if (folder / "meta" / "train.txt").is_file() and (folder / "images").is_dir():
            return folder
    raise SystemExit(
        f"no Food-101 at {root}: expected {root}/food-101/images/<class>/*.jpg and "
        f"{root}/food-101/meta/train.txt (torchvision's Food101 layout; "
        f"torchvision.datasets.Food101(root, download=True) creates it)."
    )


def sample_split(meta: Path, classes: list[str], fraction: float) -> list[str]:
    """``"<class>/<id>"`` entries of one split, sampled as the course does."""
    entries = [line.strip() for line in meta.read_text().splitlines() if line.split("/")[0] in classes]
    return random.sample(entries, k=round(fraction * len(entries)))


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
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction={args.fraction}: must be in (0, 1].")
    if args.out.exists():
        parser.error(f"--out {args.out} exists: choose a new folder, or delete it first.")
    food101 = food101_folder(args.food101)
    available = {p.name for p in (food101 / "images").iterdir() if p.is_dir()}
    unknown = sorted(set(args.classes) - available)
    if unknown:
        parser.error(f"unknown Food-101 classes {unknown}: choose from {', '.join(sorted(available))}.")

    random.seed(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", suffix=".partial", dir=args.out.parent))
    try:
        for split in SPLITS:
            entries = sample_split(food101 / "meta" / f"{split}.txt", args.classes, args.fraction)
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
