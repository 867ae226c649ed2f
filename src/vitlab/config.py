"""Config checks and helpers for the Hydra entry points (the only code that reads ``cfg``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vitlab.models.variants import MODEL_OVERRIDES, create_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """An invalid option value: the message names the option and how to fix it."""


@contextmanager
def user_errors_as_messages() -> Iterator[None]:
    """For the command-line entry points: a typo or a wrong path deserves one line, not a traceback."""
    try:
        yield
    except (ConfigError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


def _check(condition: bool, option: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(
            f"{option}={value!r} is invalid: expected {expected}. Fix it on the command line, e.g. {option}=..."
        )


# Data options a checkpoint must carry so that its inputs are prepared as in training.
PREPROCESSING_KEYS = ("mean", "std", "resize_size")


def model_options(model_cfg: DictConfig) -> dict[str, Any]:
    """The ``create_model`` overrides a model config carries (name, weights and freezing aside)."""
    return {key: value for key, value in model_cfg.items() if key in MODEL_OVERRIDES}


def validate(cfg: DictConfig) -> None:
    """Fail at once, before any data loads, on values that would fail later or silently mislead."""
    model = cfg.model
    _check(
        isinstance(model.image_size, int) and model.image_size > 0,
        "model.image_size",
        model.image_size,
        "a positive integer",
    )
    _check(
        isinstance(model.patch_size, int) and model.patch_size > 0,
        "model.patch_size",
        model.patch_size,
        "a positive integer",
    )
    if model.image_size % model.patch_size:
        raise ConfigError(
            f"model.image_size={model.image_size} is not divisible by model.patch_size={model.patch_size}: "
            f"use e.g. model.image_size={max(1, model.image_size // model.patch_size) * model.patch_size}."
        )
    for key in ("dropout", "attn_dropout", "drop_path"):
        _check(0.0 <= model[key] < 1.0, f"model.{key}", model[key], "a value in [0, 1)")
    try:  # every construction-time check of the model, without allocating its weights
        with torch.device("meta"):
            create_model(model.name, num_classes=2, **model_options(model))
    except ValueError as error:
        raise ConfigError(f"model={model.name}: {error}") from None
    if "optimizer" in cfg:
        _check(cfg.optimizer.lr > 0, "optimizer.lr", cfg.optimizer.lr, "a positive learning rate")
        _check(
            cfg.optimizer.get("weight_decay", 0) >= 0,
            "optimizer.weight_decay",
            cfg.optimizer.get("weight_decay"),
            ">= 0",
        )
    _check(
        cfg.get("label_smoothing", 0.0) is not None and 0 <= cfg.get("label_smoothing", 0.0) < 1,
        "label_smoothing",
        cfg.get("label_smoothing"),
        "a value in [0, 1)",
    )
    _check(
        cfg.get("test_ckpt", "best") in ("best", "last"), "test_ckpt", cfg.get("test_ckpt"), "best or last"
    )
    task = cfg.get("task") or {}
    if task.get("name") == "mpp":
        for key in ("corrupt_fraction", "mask_probability", "random_probability"):
            _check(0 <= task[key] <= 1, f"task.{key}", task[key], "a value in [0, 1]")
        _check(
            task.mask_probability + task.random_probability <= 1,
            "task.random_probability",
            task.random_probability,
            f"at most 1 - task.mask_probability = {1 - task.mask_probability}",
        )
        _check(1 <= task.colour_bits <= 8, "task.colour_bits", task.colour_bits, "1..8 bits per channel")
    data = cfg.data
    _check(data.batch_size > 0, "data.batch_size", data.batch_size, "a positive integer")
    if "val_fraction" in data:
        _check(0 <= data.val_fraction < 1, "data.val_fraction", data.val_fraction, "a value in [0, 1)")
    if "trainer" in cfg:
        trainer = cfg.trainer
        _check(
            trainer.get("max_epochs", 1) is None or trainer.get("max_epochs", 1) >= -1,
            "trainer.max_epochs",
            trainer.get("max_epochs"),
            ">= 1 (or -1 for no limit)",
        )
        _check(
            trainer.get("accumulate_grad_batches", 1) >= 1,
            "trainer.accumulate_grad_batches",
            trainer.get("accumulate_grad_batches"),
            ">= 1",
        )
        clip = trainer.get("gradient_clip_val")
        _check(clip is None or clip >= 0, "trainer.gradient_clip_val", clip, ">= 0 or null")


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


def print_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Print the resolved config as a tree (one branch per group) and save it as YAML."""
    import rich
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold")
    for group, value in cfg.items():
        branch = tree.add(str(group), style="bold cyan")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(OmegaConf.to_yaml(cfg, resolve=True))
