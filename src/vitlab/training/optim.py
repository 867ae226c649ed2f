"""Parameter groups and learning-rate schedules (paper Table 3 / Appendix B.1)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# Parameters whose names end like this never get weight decay: biases, LayerNorm scales and shifts,
# the position embeddings and the class token (as in the reference code and torchvision's recipe),
# and LSA's temperature (decay would pull it to 1, far below its start at sqrt(head_dim)).
NO_DECAY_SUFFIXES = ("bias", "position_embedding", "class_token", "log_temperature")

# The shape of the decay after warmup, from 1 at progress 0 to 0 at progress 1 (constant stays 1).
DECAYS: dict[str, Callable[[float], float]] = {
    "cosine": lambda progress: 0.5 * (1 + math.cos(math.pi * progress)),  # the paper's fine-tuning
    "linear": lambda progress: 1 - progress,  # the paper's pre-training
    "constant": lambda progress: 1.0,  # the course
}


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


def warmup_then_decay(
    optimizer: Optimizer,
    total_steps: int,
    decay: Literal["cosine", "linear", "constant"] = "cosine",
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup from 0 to the base rate, then ``decay`` down to ``min_lr_ratio`` x the base rate.

    Steps are optimizer steps; ``total_steps`` is the run's real count (Lightning's
    ``estimated_stepping_batches``). The warmup is ``warmup_steps`` long, or ``warmup_fraction`` of
    the run when ``warmup_steps`` is null.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay={decay!r} is not a schedule: use one of {', '.join(DECAYS)}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be positive: the run has no optimizer steps.")
    warmup = warmup_steps if warmup_steps is not None else round(warmup_fraction * total_steps)
    warmup = min(warmup, total_steps)
    shape = DECAYS[decay]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(1, total_steps - warmup), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * shape(progress)

    return LambdaLR(optimizer, factor)
