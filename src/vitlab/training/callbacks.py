"""Lightning callbacks of our own: training speed and the W&B review reports."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from vitlab.viz.attention import attention_rollout, upsample_to_image


class TrainingSpeed(L.Callback):
    """Logs ``train/images_per_sec``: images over time spent in training batches (forward, backward,
    optimizer step), per epoch and summed over ranks; data-loading waits are excluded."""

    def __init__(self) -> None:
        self._images = 0
        self._seconds = 0.0
        self._start = 0.0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._seconds = 0, 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sync(trainer)
        self._seconds += time.perf_counter() - self._start
        self._images += len(batch[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._seconds > 0:
            rate = self._images / self._seconds * trainer.world_size
            pl_module.log("train/images_per_sec", rate, rank_zero_only=True)


def _denormalise(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (images * std[:, None, None] + mean[:, None, None]).clamp(0, 1)


class WandbReports(L.Callback):
    """At the end of each validation epoch, sends W&B the confusion matrix; at the end of the run, a
    table of sample predictions with their images and attention-rollout overlays.

    Does nothing unless a ``WandbLogger`` is attached, so other loggers pay nothing for it.
    """

    def __init__(self, num_samples: int = 16) -> None:
        self.num_samples = num_samples
        self._samples: tuple[Tensor, Tensor] | None = None

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and self._wandb(trainer) is not None:
            images, labels = batch
            self._samples = (images[: self.num_samples].detach().cpu(), labels[: self.num_samples].cpu())

    @staticmethod
    def _is_classifier(pl_module: L.LightningModule) -> bool:
        """Reports are about classes: other tasks (task=mpp) have none to report."""
        return hasattr(pl_module, "class_names")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not self._is_classifier(pl_module):
            return
        import wandb

        confusion = pl_module.confusion.get("val")
        if confusion is not None:
            names = pl_module.class_names
            rows = [
                [names[t], names[p], int(confusion[t, p])]
                for t in range(len(names))
                for p in range(len(names))
            ]
            table = wandb.Table(columns=["actual", "predicted", "count"], data=rows)
            logger.experiment.log({"val/confusion_matrix": table, "trainer/global_step": trainer.global_step})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or self._samples is None or not trainer.is_global_zero:
            return
        if not self._is_classifier(pl_module):
            return
        import wandb

        images, labels = self._samples
        model = pl_module.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            probabilities = model(images.to(device)).softmax(-1).float().cpu()
            heat = upsample_to_image(
                attention_rollout(model, images.to(device)).float().cpu(), images.shape[-1]
            )
        model.train(was_training)
        mean, std = self._normalisation(trainer)
        pictures = _denormalise(images.float(), mean, std)
        names = pl_module.class_names
        table = wandb.Table(columns=["image", "attention", "actual", "predicted", "probability"])
        for picture, heatmap, label, probs in zip(pictures, heat, labels, probabilities, strict=True):
            overlay = 0.5 * picture + 0.5 * heatmap[None] * torch.tensor([1.0, 0.2, 0.0])[:, None, None]
            table.add_data(
                wandb.Image(picture.permute(1, 2, 0).numpy()),
                wandb.Image(overlay.clamp(0, 1).permute(1, 2, 0).numpy()),
                names[int(label)],
                names[int(probs.argmax())],
                float(probs.max()),
            )
        logger.experiment.log({"val/predictions": table})

    @staticmethod
    def _normalisation(trainer: L.Trainer) -> tuple[Tensor, Tensor]:
        datamodule = trainer.datamodule
        return torch.tensor(datamodule.mean), torch.tensor(datamodule.std)
