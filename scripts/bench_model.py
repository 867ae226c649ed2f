"""Benchmark our ViT against timm's same-size model: training and inference images/s, peak memory.

Timings are interleaved in one process (ours, timm, timm, ours, ...) and the median of the timed steps
is reported, so both models see the same machine state; peak memory is measured per model in a fresh
process (``vitlab.bench``). Prints a markdown table, one row per variant, precision and mode.

    python scripts/bench_model.py                      # CPU, vit_ti16 + vit_b16, fp32 and bf16
    python scripts/bench_model.py --device cuda --compile --batch-size 64
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from vitlab.bench import StepSpec, peak_memory, time_steps
from vitlab.tables import markdown_table

TIMM_NAMES = {
    "vit_ti16": "vit_tiny_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_b16": "vit_base_patch16_224",
}
COLUMNS = [
    "variant",
    "precision",
    "mode",
    "ours img/s",
    "timm img/s",
    "ours/timm",
    "ours peak MiB",
    "timm peak MiB",
]


def compare(args: argparse.Namespace, variant: str, precision: str, mode: str) -> dict[str, Any]:
    """One table row: ours and timm's step, timed alternately, and their peak memory."""
    common = {
        "mode": mode,
        "batch_size": args.batch_size,
        "precision": precision,
        "device": args.device,
        "compile": args.compile,
    }
    specs = {"ours": StepSpec(variant, **common), "timm": StepSpec(f"timm:{TIMM_NAMES[variant]}", **common)}
    timings = time_steps(specs, repeats=args.steps, warmup=args.warmup, threads=args.threads)
    rate = {impl: timing.rate(args.batch_size) for impl, timing in timings.items()}
    row = {
        "variant": variant,
        "precision": precision,
        "mode": mode,
        "ours img/s": rate["ours"],
        "timm img/s": rate["timm"],
        "ours/timm": f"{rate['ours'] / rate['timm']:.2f}",
    }
    if not args.no_memory:
        for impl, spec in specs.items():
            row[f"{impl} peak MiB"] = peak_memory(spec, threads=args.threads)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["vit_ti16", "vit_b16"], choices=sorted(TIMM_NAMES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"device={args.device} batch={args.batch_size} compile={args.compile} "
        f"threads={torch.get_num_threads()} steps={args.steps} (median)"
    )
    first = True
    for variant in args.variants:
        for precision in args.precisions:
            for mode in args.modes:
                lines = markdown_table([compare(args, variant, precision, mode)], COLUMNS).splitlines()
                print("\n".join(lines if first else lines[2:]), flush=True)  # each row as it is measured
                first = False


if __name__ == "__main__":
    main()
