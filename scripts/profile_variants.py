"""Profile every ViT variant at one image size: Table 1 shapes, parameters, forward GMACs / GFLOPs
(counted by torch.utils.flop_counter), and measured training / inference images/s and peak memory,
with the paper's Table 1 beside ours. Prints a markdown table.

    python scripts/profile_variants.py                          # 224 px, CPU: times Ti/16, S/16, B/32
    python scripts/profile_variants.py --device cuda --batch-size 64 --measure
    python scripts/profile_variants.py --variants vit_b16 vit_l16 --image-size 384 --skip-measure
"""

from __future__ import annotations

import argparse
import math

import torch

from vitlab.models import available_models
from vitlab.models.profile import PROFILE_COLUMNS, default_measure_limit, profile_variants
from vitlab.tables import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=available_models(), help="default: all registered")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000, help="1000: torchvision's published counts")
    parser.add_argument(
        "--device", default="cpu", help="where speed and memory are measured: cpu, cuda, cuda:1"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--min-run-time", type=float, default=1.0, help="seconds of timed steps per measurement"
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--measure", action="store_true", help="time every variant, however slow")
    timing.add_argument("--skip-measure", action="store_true", help="counts only, no timing")
    timing.add_argument(
        "--measure-up-to",
        type=float,
        metavar="GMACS",
        help="time variants of at most this many GMACs per image (default: all on an accelerator, "
        "up to 5 on a CPU); the others show '-'",
    )
    args = parser.parse_args()

    if args.measure:
        limit = math.inf
    elif args.skip_measure:
        limit = 0.0
    else:
        limit = args.measure_up_to if args.measure_up_to is not None else default_measure_limit(args.device)
    rows = profile_variants(
        args.variants,
        image_size=args.image_size,
        num_classes=args.num_classes,
        device=args.device,
        batch_size=args.batch_size,
        measure_up_to_gmacs=limit,
        min_run_time=args.min_run_time,
    )
    timed = "all" if limit == math.inf else "none" if limit == 0 else f"those up to {limit:g} GMACs"
    print(
        f"image size {args.image_size} px, {args.num_classes} classes; timed on {args.device} "
        f"(batch {args.batch_size}, fp32, {torch.get_num_threads()} threads): {timed}"
    )
    print(markdown_table(rows, PROFILE_COLUMNS), end="")


if __name__ == "__main__":
    main()
