"""What a variant costs: parameters and forward MACs (counted, never estimated by formula), and its
measured training and inference speed and peak memory on a device. The model side of Table 1 and of
Figure 5's compute axis."""

from __future__ import annotations

import math
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

from vitlab.models.variants import MODEL_SIZES, available_models, create_model, resolve_variant

# The paper's Table 1, to print beside our registry (which is the one the code uses).
PAPER_TABLE_1: dict[str, tuple[str, tuple[int, int, int, int], str]] = {
    "b": ("ViT-Base", (12, 768, 3072, 12), "86M"),
    "l": ("ViT-Large", (24, 1024, 4096, 16), "307M"),
    "h": ("ViT-Huge", (32, 1280, 5120, 16), "632M"),
}

# On a CPU only variants up to this many GMACs per image are timed by default (Ti/16, S/16, B/32 at
# 224 px): a training step of L/16 or H/14 takes minutes there.
CPU_MEASURE_LIMIT_GMACS = 5.0

PROFILE_COLUMNS = [
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image (GFLOPs = 2 x GMACs), as
    ``torch.utils.flop_counter`` counts them: convolutions and matrix products, as in torchvision's
    published figures.

    Works on the meta device (no memory, no compute), which is how big variants should be counted.
    Attention runs on the math SDPA backend while counting because the flop counter has no formula
    for the fused CPU attention kernel, whose products would otherwise go uncounted.
    """
    size = image_size or getattr(model, "image_size", None)
    if size is None:
        raise ValueError(
            f"{type(model).__name__} has no image_size attribute: pass count_macs(model, image_size=...)."
        )
    parameter = next(model.parameters())
    images = torch.empty(
        1, getattr(model, "in_channels", 3), size, size, device=parameter.device, dtype=parameter.dtype
    )
    was_training = model.training
    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(images)
    model.train(was_training)
    return counter.get_total_flops() // 2


def variant_cost(
    name: str, image_size: int = 224, num_classes: int = 1000, **overrides: Any
) -> tuple[int, int]:
    """``(parameters, forward MACs per image)`` of a variant, built on the meta device: instant even
    for ViT-H/14."""
    with torch.device("meta"):
        model = create_model(name, image_size=image_size, num_classes=num_classes, **overrides)
    return count_parameters(model), count_macs(model)


@dataclass(frozen=True)
class Speed:
    """Images per second (median of timed blocks) and peak memory in MiB (``None`` where the device
    offers no way to read it)."""

    train_images_per_sec: float
    infer_images_per_sec: float
    train_peak_mib: float | None
    infer_peak_mib: float | None


def _resident_peak_bytes() -> int | None:
    """This process's resident-set high-water mark (Linux ``VmHWM``; unlike ``ru_maxrss`` it does not
    carry the parent's peak over into a spawned child)."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


class PeakMemory:
    """Peak bytes since ``start()``: the CUDA allocator's counter, or the growth of the CPU resident
    set over the process's baseline (which is why measuring happens in a fresh process)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = _resident_peak_bytes() if device.type == "cpu" else 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _resident_peak_bytes() if self.device.type == "cpu" else None
        return None if peak is None or self.baseline is None else (peak - self.baseline) / 2**20


def _time_per_call(step: Callable[[], None], min_run_time: float) -> float:
    timer = Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median  # also warms up, syncs CUDA


def _measure_here(
    name: str, image_size: int, num_classes: int, device: str, batch_size: int, min_run_time: float
) -> Speed:
    target = torch.device(device)
    memory = PeakMemory(target)
    torch.manual_seed(0)
    model = create_model(name, image_size=image_size, num_classes=num_classes).to(target)
    images = torch.randn(batch_size, model.in_channels, image_size, image_size, device=target)
    labels = torch.randint(num_classes, (batch_size,), device=target)
    optimizer = torch.optim.AdamW(model.parameters())

    @torch.inference_mode()
    def infer() -> None:
        model(images)

    def train() -> None:
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Inference first: the CPU high-water mark only grows, and training's peak is the larger one.
    model.eval()
    memory.start()
    infer_seconds = _time_per_call(infer, min_run_time)
    infer_peak = memory.peak_mib()
    model.train()
    memory.start()
    train_seconds = _time_per_call(train, min_run_time)
    return Speed(batch_size / train_seconds, batch_size / infer_seconds, memory.peak_mib(), infer_peak)


def measure_speed(
    name: str,
    image_size: int = 224,
    num_classes: int = 1000,
    device: str = "cpu",
    batch_size: int = 8,
    min_run_time: float = 1.0,
) -> Speed:
    """Training (forward, backward, AdamW step) and inference images/s and peak memory of a variant
    on random images, in a fresh process so that the peak belongs to this model alone."""
    if num_classes < 1:
        raise ValueError(
            f"num_classes={num_classes}: measuring a training step needs a head (num_classes >= 1)."
        )
    context = multiprocessing.get_context("spawn")  # a fork would share the parent's memory peak
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(_measure_here, name, image_size, num_classes, device, batch_size, min_run_time)
        return job.result()


def default_measure_limit(device: str) -> float:
    """GMACs per image up to which variants are timed by default: all on an accelerator, the small
    ones on a CPU."""
    return CPU_MEASURE_LIMIT_GMACS if torch.device(device).type == "cpu" else math.inf


def _paper_row(name: str) -> dict[str, Any]:
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


def profile_variants(
    names: Sequence[str] | None = None,
    image_size: int = 224,
    num_classes: int = 1000,
    device: str = "cpu",
    batch_size: int = 8,
    measure_up_to_gmacs: float = 0.0,
    min_run_time: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per variant (all registered ones by default) with ``PROFILE_COLUMNS``: shape, counted
    parameters and MACs, measured speed and memory for variants of at most ``measure_up_to_gmacs``
    GMACs per image (``None`` for the others), and the paper's Table 1 row."""
    rows = []
    for name in names or available_models():
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
            speed = measure_speed(name, image_size, num_classes, device, batch_size, min_run_time)
            row |= {
                "train img/s": speed.train_images_per_sec,
                "infer img/s": speed.infer_images_per_sec,
                "train peak MiB": speed.train_peak_mib,
                "infer peak MiB": speed.infer_peak_mib,
            }
        rows.append(row | _paper_row(name))
    return rows
