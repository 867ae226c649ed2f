"""Profile every ViT variant at one image size: Table 1 shapes, parameters, forward GMACs / GFLOPs
(counted by torch.utils.flop_counter), and measured training / inference images/s and peak memory,
with the paper's Table 1 beside ours. Prints a markdown table.

    python scripts/profile_variants.py                          # 224 px, CPU: times Ti/16, S/16, B/32
    python scripts/profile_variants.py --device cuda --batch-size 64 --measure
    python scripts/profile_variants.py --variants vit_b16 vit_l16 --image-size 384 --skip-measure
    python scripts/profile_variants.py --record docs/runs/paper_fidelity/variant_profile.json
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vitlab.bench import StepSpec, TableReport, peak_memory, time_steps
from vitlab.models import available_models
from vitlab.models.cost import variant_cost
from vitlab.models.variants import MODEL_SIZES, resolve_variant

# The paper's Table 1, to print beside our registry (which is the one the code uses).
PAPER_TABLE_1: dict[str, tuple[str, tuple[int, int, int, int], str]] = {
    "b": ("ViT-Base", (12, 768, 3072, 12), "86M"),
    "l": ("ViT-Large", (24, 1024, 4096, 16), "307M"),
    "h": ("ViT-Huge", (32, 1280, 5120, 16), "632M"),
}

# On a CPU only variants up to this many GMACs per image are timed by default (Ti/16, S/16, B/32 at
# 224 px): a training step of L/16 or H/14 takes minutes there.
CPU_MEASURE_LIMIT_GMACS = 5.0

COLUMNS = [
    "variant",
    "layers",
    "D",
    "MLP",
    "heads",
    "patch",
    "params",
    "GMACs",
    "GFLOPs",
    "train img/s",
    "infer img/s",
    "train peak MiB",
    "infer peak MiB",
    "paper model",
    "paper layers/D/MLP/heads",
    "paper params",
]


def paper_row(name: str) -> dict[str, Any]:
    size, _, hybrid = resolve_variant(name)
    key = next((k for k, v in MODEL_SIZES.items() if v == size), None)
    if key not in PAPER_TABLE_1:  # Ti and S are DeiT's sizes, not in Table 1
        return {}
    model, shape, params = PAPER_TABLE_1[key]
    # A hybrid's transformer is a Table 1 model, but its parameters include the ResNet stem.
    return {
        "paper model": model,
        "paper layers/D/MLP/heads": "/".join(map(str, shape)),
        "paper params": None if hybrid else params,
    }


def measured(spec: StepSpec, steps: int, warmup: int) -> dict[str, float | None]:
    """Images/s (median of the timed steps) and peak MiB of one mode of a variant."""
    timing = time_steps({spec.mode: spec}, repeats=steps, warmup=warmup)[spec.mode]
    return {
        f"{spec.mode} img/s": timing.rate(spec.batch_size),
        f"{spec.mode} peak MiB": peak_memory(spec),
    }


def profile_rows(
    names: Sequence[str],
    image_size: int = 224,
    num_classes: int = 1000,
    device: str = "cpu",
    batch_size: int = 8,
    measure_up_to_gmacs: float = 0.0,
    steps: int = 3,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """One row per variant with ``COLUMNS``: shape, counted parameters and MACs, fp32 speed and memory
    for variants of at most ``measure_up_to_gmacs`` GMACs per image (``None`` for the others), and
    the paper's Table 1 row."""
    rows = []
    for name in names:
        size, patch_size, _ = resolve_variant(name)
        params, macs = variant_cost(name, image_size=image_size, num_classes=num_classes)
        row: dict[str, Any] = {
            "variant": name,
            "layers": size.depth,
            "D": size.dim,
            "MLP": size.mlp_dim,
            "heads": size.heads,
            "patch": patch_size,
            "params": params,
            "GMACs": macs / 1e9,
            "GFLOPs": 2 * macs / 1e9,
        }
        if macs / 1e9 <= measure_up_to_gmacs:
            for mode in ("train", "infer"):
                spec = StepSpec(name, mode, batch_size, image_size, num_classes, "fp32", device)
                row |= measured(spec, steps, warmup)
        rows.append(row | paper_row(name))
    return rows


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant and mode")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and mode (median)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--measure", action="store_true", help="time every variant, however slow")
    timing.add_argument("--skip-measure", action="store_true", help="counts only, no timing")
    timing.add_argument(
        "--measure-up-to",
        type=float,
        metavar="GMACS",
        help="time variants of at most this many GMACs per image (default: all on an accelerator, "
        f"up to {CPU_MEASURE_LIMIT_GMACS:g} on a CPU); the others show '-'",
    )
    parser.add_argument(
        "--record", type=Path, help="also write the rows with their provenance here (docs/runs/<study>/...)"
    )
    args = parser.parse_args(argv)
    report = TableReport(args.record, argv)

    if args.measure:
        limit = math.inf
    elif args.skip_measure:
        limit = 0.0
    elif args.measure_up_to is not None:
        limit = args.measure_up_to
    else:
        limit = CPU_MEASURE_LIMIT_GMACS if torch.device(args.device).type == "cpu" else math.inf
    rows = profile_rows(
        args.variants,
        image_size=args.image_size,
        num_classes=args.num_classes,
        device=args.device,
        batch_size=args.batch_size,
        measure_up_to_gmacs=limit,
        steps=args.steps,
        warmup=args.warmup,
    )
    timed = "all" if limit == math.inf else "none" if limit == 0 else f"those up to {limit:g} GMACs"
    setting = (
        f"image size {args.image_size} px, {args.num_classes} classes; timed on {args.device} "
        f"(batch {args.batch_size}, fp32, {torch.get_num_threads()} threads, median of {args.steps} "
        f"steps): {timed}"
    )
    report(setting, rows, COLUMNS)


if __name__ == "__main__":
    main()
