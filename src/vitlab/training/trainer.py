"""The Lightning Trainer as configured: ``precision: auto`` resolved for this machine, and the
``${grad_accumulation:...}`` resolver that lets a recipe state its global batch once."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def gradient_accumulation(global_batch_size: int, batch_size: int, devices: Any, num_nodes: int) -> int:
    """``${grad_accumulation:...}``: the ``trainer.accumulate_grad_batches`` that makes steps of
    ``batch_size`` images per device add up to ``global_batch_size`` (Table 3's 4096), so a recipe
    states the batch once. Impossible combinations are reported by ``vitlab.cli.validate``."""
    per_step = batch_size * (devices if isinstance(devices, int) else 1) * num_nodes
    return max(1, global_batch_size // per_step)


OmegaConf.register_new_resolver("grad_accumulation", gradient_accumulation, replace=True)


def resolve_precision(precision: Any, accelerator: str = "auto") -> Any:
    """``auto``: bf16 mixed precision where the hardware runs it fast (bf16 GPUs; CPUs with
    AVX512-BF16 or AMX), else full fp32. Other values pass through to Lightning."""
    if precision != "auto":
        return precision
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    fast_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16-mixed" if fast_bf16 else "32-true"


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The configured Lightning Trainer, with ``precision: auto`` resolved for this machine."""
    precision = resolve_precision(
        trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto")
    )
    return instantiate(trainer_cfg, precision=precision, **kwargs)
