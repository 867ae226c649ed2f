"""Parameter groups and learning-rate schedules (paper Table 3 / Appendix B.1)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# Parameters whose names end like this never get weight decay: biases, LayerNorm scales and shifts,
# the position embeddings and the class token (as in the reference code and torchvision's recipe).
NO_DECAY_SUFFIXES = ("bias", "position_embedding", "class_token")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (weight matrices and kernels) and the rest."""
    decay, no_decay = [], []
    norm_parameters = {
        id(p) for m in model.modules() if isinstance(m, nn.LayerNorm | nn.BatchNorm2d) for p in m.parameters()
    }
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.endswith(NO_DECAY_SUFFIXES) or id(parameter) in norm_parameters:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _warmup_then(
    decay: Callable[[float], float], warmup_steps: int, total_steps: int
) -> Callable[[int], float]:
    """Linear warmup from 0 to the base rate over ``warmup_steps``, then ``decay(progress in [0, 1])``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be positive: the run has no optimizer steps.")
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return decay(min(progress, 1.0))

    return factor


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_fraction: float) -> int:
    """Warmup length in optimizer steps: given directly, or as a fraction of the run."""
    return warmup_steps if warmup_steps is not None else round(warmup_fraction * total_steps)


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` x the base rate (the paper's fine-tuning)."""
    warmup = warmup_steps_for(total_steps, warmup_steps, warmup_fraction)

    def cosine(progress: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, _warmup_then(cosine, warmup, total_steps))


def warmup_linear(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup, then linear decay (the paper's pre-training schedule)."""
    warmup = warmup_steps_for(total_steps, warmup_steps, warmup_fraction)
    return LambdaLR(optimizer, _warmup_then(lambda p: 1 - (1 - min_lr_ratio) * p, warmup, total_steps))


def constant(
    optimizer: Optimizer, total_steps: int, warmup_steps: int | None = 0, warmup_fraction: float = 0.0
) -> LambdaLR:
    """A fixed rate after an optional warmup (the course's setting)."""
    warmup = warmup_steps_for(total_steps, warmup_steps, warmup_fraction)
    return LambdaLR(optimizer, _warmup_then(lambda p: 1.0, warmup, total_steps))
