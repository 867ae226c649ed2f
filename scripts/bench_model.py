"""Benchmark our ViT against timm's same-size model: training and inference images/s, peak memory.

Timings are interleaved in one process (ours, timm, timm, ours, ...) and the median of the timed steps
is reported, so both models see the same machine state. Peak memory is measured per model in a fresh
subprocess: on CUDA with the allocator's peak counter, on CPU as the growth of the resident set
(Linux).

    python scripts/bench_model.py                      # CPU, vit_ti16 + vit_b16, fp32 and bf16
    python scripts/bench_model.py --device cuda --compile --batch-size 64
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from vitlab.models import create_model
from vitlab.models.profile import PeakMemory

TIMM_NAMES = {
    "vit_ti16": "vit_tiny_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_b16": "vit_base_patch16_224",
}


def build(impl: str, variant: str, device: str, compile_model: bool) -> nn.Module:
    if impl == "ours":
        model = create_model(variant, num_classes=1000)
    else:
        import timm

        model = timm.create_model(TIMM_NAMES[variant], pretrained=False, num_classes=1000)
    model = model.to(device)
    return torch.compile(model) if compile_model else model


def make_step(model: nn.Module, mode: str, precision: str, batch: torch.Tensor) -> Callable[[], None]:
    device_type = batch.device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    labels = torch.randint(0, 1000, (batch.shape[0],), device=batch.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        model.train()
        with autocast:
            loss = nn.functional.cross_entropy(model(batch), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def infer_step() -> None:
        model.eval()
        with autocast:
            model(batch)

    return train_step if mode == "train" else infer_step


def timed(step: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def throughput(args: argparse.Namespace, variant: str, mode: str, precision: str) -> dict[str, float]:
    """Images/s of ours and timm's, timed alternately after warm-up."""
    batch = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    steps = {}
    for impl in ("ours", "timm"):
        torch.manual_seed(0)
        steps[impl] = make_step(build(impl, variant, args.device, args.compile), mode, precision, batch)
        for _ in range(args.warmup):
            steps[impl]()
    times: dict[str, list[float]] = {"ours": [], "timm": []}
    for step in range(args.steps):
        order = ("ours", "timm") if step % 2 == 0 else ("timm", "ours")  # neither always goes first
        for impl in order:
            times[impl].append(timed(steps[impl], args.device))
    return {impl: args.batch_size / statistics.median(t) for impl, t in times.items()}


def _peak_memory_worker(
    args: argparse.Namespace, impl: str, variant: str, mode: str, precision: str, queue
) -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    memory = PeakMemory(torch.device(args.device))  # baseline: the interpreter and torch alone
    batch = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    step = make_step(build(impl, variant, args.device, args.compile), mode, precision, batch)
    memory.start()
    for _ in range(2):  # the second step holds optimizer state too
        step()
    queue.put(memory.peak_mib())


def peak_memory(args: argparse.Namespace, impl: str, variant: str, mode: str, precision: str) -> float:
    """Peak MiB of a model's steps (weights, optimizer state, activations), in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_peak_memory_worker, args=(args, impl, variant, mode, precision, queue))
    worker.start()
    result = queue.get()
    worker.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["vit_ti16", "vit_b16"], choices=sorted(TIMM_NAMES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    header = (
        "| variant | precision | mode | ours img/s | timm img/s | ours/timm | ours peak MiB | timm peak MiB |"
    )
    print(
        f"device={args.device} batch={args.batch_size} compile={args.compile} threads={torch.get_num_threads()}"
    )
    print(header)
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for variant in args.variants:
        for precision in args.precisions:
            for mode in args.modes:
                rate = throughput(args, variant, mode, precision)
                memory = (
                    {"ours": float("nan"), "timm": float("nan")}
                    if args.no_memory
                    else {impl: peak_memory(args, impl, variant, mode, precision) for impl in rate}
                )
                print(
                    f"| {variant} | {precision} | {mode} | {rate['ours']:.1f} | {rate['timm']:.1f} | "
                    f"{rate['ours'] / rate['timm']:.2f} | {memory['ours']:.0f} | {memory['timm']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
