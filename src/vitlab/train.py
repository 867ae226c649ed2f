"""Hydra entry point for training: ``python train.py model=vit_b16 trainer.devices=2``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vitlab.config import (
    CONFIG_DIR,
    PREPROCESSING_KEYS,
    model_options,
    print_tree,
    resolve_precision,
    user_errors_as_messages,
    validate,
)
from vitlab.loggers import build_loggers, finish_wandb
from vitlab.models.profile import variant_cost
from vitlab.training.module import ViTClassifier
from vitlab.training.mpp import MaskedPatchPrediction

log = logging.getLogger(__name__)


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _sweep_group() -> str | None:
    """All jobs of one multirun share a W&B group: the sweep folder's name."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, runs_dir: Path) -> str | None:
    """``last``: this run folder's last.ckpt if there is one, else the newest under ``runs_dir``."""
    if ckpt_path != "last":
        if ckpt_path and not Path(ckpt_path).is_file():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path}: no such checkpoint file. Pass a .ckpt path or ckpt_path=last."
            )
        return ckpt_path
    own = output_dir / "checkpoints" / "last.ckpt"
    candidates = (
        [own]
        if own.is_file()
        else sorted(runs_dir.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    )
    if not candidates:
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoints/last.ckpt under {runs_dir}. Pass the file itself: ckpt_path=/path/to/last.ckpt."
        )
    log.info("resuming from %s", candidates[-1])
    return str(candidates[-1])


def _test_checkpoint(trainer: L.Trainer, which: str) -> str | None:
    """The best or last checkpoint's path; None (the weights in memory) when there is none."""
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if checkpoint is None:
        return None
    path = checkpoint.best_model_path if which == "best" else checkpoint.last_model_path
    return path or None


def _plain(value: Any) -> Any:
    """Plain Python values, so checkpoints load with ``weights_only=True``."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def build_module(cfg: DictConfig, num_classes: int, class_names: list[str]) -> L.LightningModule:
    """The LightningModule of ``cfg.task``: classification (default) or masked patch prediction."""
    shared = dict(
        model_name=cfg.model.name,
        model_options=model_options(cfg.model),
        pretrained=cfg.model.pretrained,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        preprocessing={key: _plain(cfg.data.get(key)) for key in PREPROCESSING_KEYS},
    )
    task = cfg.get("task") or {"name": "classify"}
    if task["name"] == "mpp":
        options = {key: value for key, value in task.items() if key != "name"}
        return MaskedPatchPrediction(**shared, **options)
    return ViTClassifier(
        **shared,
        num_classes=num_classes,
        class_names=class_names,
        freeze_backbone=cfg.model.freeze_backbone,
        label_smoothing=cfg.label_smoothing,
    )


def train(cfg: DictConfig, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Fit (and test) a model as configured; returns the run's results, also saved as results.json."""
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    print_tree(cfg, save_to=output_dir / "config_resolved.yaml")
    L.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()  # downloads if needed; class names come from the data, never typed twice
    module = build_module(cfg, datamodule.num_classes, datamodule.class_names)
    if cfg.get("compile"):
        module.model = torch.compile(module.model)

    overrides = _hydra_overrides()
    run_name = " ".join([cfg.model.name, *[o for o in overrides if not o.startswith("model=")]])
    config = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.get("logger"), run_name=run_name, group=_sweep_group(), config=config)
    all_callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=all_callbacks + list(callbacks or []),
        logger=loggers or False,
        precision=resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
    )
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir) / cfg.task_name)
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True):
            trainer.test(
                module,
                datamodule=datamodule,
                ckpt_path=_test_checkpoint(trainer, cfg.test_ckpt),
                weights_only=True,
            )
            metrics.update(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            )
    finally:
        finish_wandb()
    confusion = getattr(module, "confusion", {})  # classification only
    params, macs = variant_cost(
        cfg.model.name, num_classes=datamodule.num_classes, **model_options(cfg.model)
    )
    results = {
        "model": cfg.model.name,
        "patch_size": cfg.model.patch_size,
        "image_size": cfg.model.image_size,
        "num_classes": datamodule.num_classes,
        "overrides": overrides,
        "params": params,
        "gmacs": macs / 1e9,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "metrics": metrics,
        "test_confusion_matrix": confusion["test"].tolist() if "test" in confusion else None,
    }
    if trainer.is_global_zero:
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors_as_messages():
        results = train(cfg)
    metric = cfg.get("optimized_metric")  # what an Optuna sweep maximises
    return results["metrics"].get(metric) if metric else None


if __name__ == "__main__":
    main()
