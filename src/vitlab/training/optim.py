"""Parameter groups and learning-rate schedules (paper Table 3 / Appendix B.1)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# The shape of the decay after warmup, from 1 at progress 0 to 0 at progress 1 (constant stays 1).
DECAYS: dict[str, Callable[[float], float]] = {
    "cosine": lambda progress: 0.5 * (1 + math.cos(math.pi * progress)),  # the paper's fine-tuning
    "linear": lambda progress: 1 - progress,  # the paper's pre-training
    "constant": lambda progress: 1.0,  # the course
}


class DeclaresNoWeightDecay(Protocol):
    """A model that names its parameters that take no weight decay (timm's convention)."""

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def no_weight_decay(self) -> set[str]: ...


def parameter_groups(model: DeclaresNoWeightDecay) -> list[dict]:
    """Trainable parameters in two groups: the first takes the optimizer's own ``weight_decay``
    (however the optimizer was built), the second, the parameters ``model.no_weight_decay()`` names,
    none. Frozen parameters are left out."""
    no_decay_names = set(model.no_weight_decay())
    parameters = dict(model.named_parameters())
    unknown = no_decay_names - parameters.keys()
    if unknown:
        raise ValueError(
            f"no_weight_decay() names {sorted(unknown)}, which are not parameters of the model: "
            f"name parameters as named_parameters() does (e.g. {next(iter(parameters))!r})."
        )
    trainable = {name: p for name, p in parameters.items() if p.requires_grad}
    return [
        {"params": [p for name, p in trainable.items() if name not in no_decay_names]},
        {"params": [p for name, p in trainable.items() if name in no_decay_names], "weight_decay": 0.0},
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
