"""Size and CPU speed of a trained classifier for deployment, compared as the course's notebook 09
compares its models (on its own machine: EffNetB2 29 MB, 0.027 s per image; ViT-B/16 327 MB, 0.064 s).

    python scripts/deploy_latency.py --ckpt logs/train/runs/<time>/checkpoints/last.ckpt [--image a.jpg]

- size: the weights-only state dict (``torch.save(model.state_dict())``), what an app would load, in
  MiB (the course's "MB" is bytes // 2**20);
- forward: one image (batch 1) through the model in inference mode, with all cores of this machine
  (``--threads``), median of repeated runs (``torch.utils.benchmark``);
- preprocessing: decoding ``--image`` and the checkpoint's own transform, timed separately.
Prints one Markdown table with the course's rows below ours; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from vitlab.checkpoint import load_classifier
from vitlab.data import eval_transform, load_image
from vitlab.models.preprocessing import checkpoint_preprocessing

# The course's notebook 09 (its own machine's CPU), for comparison only.
COURSE = (
    ("EffNetB2 feature extractor (course)", 29, 0.027),
    ("ViT-B/16 feature extractor (course)", 327, 0.064),
)


def state_dict_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def median_seconds(stmt: str, min_run_time: float, **names: object) -> float:
    return Timer(stmt=stmt, globals=names).blocked_autorange(min_run_time=min_run_time).median


def measure(ckpt: Path, image: Path | None, threads: int, min_run_time: float) -> dict[str, object]:
    torch.set_num_threads(threads)
    module = load_classifier(ckpt).eval()
    model, size = module.model, module.image_size
    transform = eval_transform(size, checkpoint_preprocessing(ckpt, module.hparams))
    x = transform(load_image(image)) if image else torch.rand(3, size, size)
    with torch.inference_mode():
        model(x[None])  # warm-up: first-call allocations are not what a deployed app pays per image
        forward = median_seconds("model(x)", min_run_time, model=model, x=x[None])
    preprocessing = (
        median_seconds(
            "transform(load_image(image))",
            min_run_time,
            transform=transform,
            load_image=load_image,
            image=image,
        )
        if image
        else None
    )
    return {
        "checkpoint": str(ckpt),
        "model": module.hparams["model_name"],
        "image_size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "state_dict_bytes": state_dict_bytes(model),
        "threads": threads,
        "forward_s": round(forward, 4),
        "preprocessing_s": None if preprocessing is None else round(preprocessing, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint written by train.py")
    parser.add_argument("--image", type=Path, help="an image for the preprocessing time (else random pixels)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all cores)"
    )
    parser.add_argument("--min-run-time", type=float, default=3.0, help="seconds of repeats per timing")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    if not args.ckpt.is_file():
        raise SystemExit(f"error: --ckpt {args.ckpt}: no such file. Pass a .ckpt written by train.py.")
    if args.image is not None and not args.image.is_file():
        raise SystemExit(f"error: --image {args.image}: no such file. Pass an image file, or leave it out.")
    row = measure(args.ckpt, args.image, args.threads, args.min_run_time)
    pre = "-" if row["preprocessing_s"] is None else f"{row['preprocessing_s']:.4f}"
    print(
        '| model | params | state dict (MiB, the course\'s "MB") | forward, batch 1 (s) | preprocessing (s) |'
    )
    print("|---|---:|---:|---:|---:|")
    print(
        f"| {row['model']} at {row['image_size']} px ({row['threads']} threads) | {row['params'] / 1e6:.1f} M "
        f"| {row['state_dict_bytes'] / 2**20:.1f} | {row['forward_s']:.4f} | {pre} |"
    )
    for name, megabytes, seconds in COURSE:
        print(f"| {name} | - | {megabytes} | {seconds} (whole prediction, its machine) | - |")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
