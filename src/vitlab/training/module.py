"""ViTClassifier: the LightningModule that trains a ViT (backbone + head) as an image classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from vitlab.checkpoint import stamp_format
from vitlab.models import create_model
from vitlab.training.optim import parameter_groups

OptimizerFactory = Callable[[list[dict]], Optimizer]
SchedulerFactory = Callable[..., LRScheduler]


def classification_metrics(num_classes: int) -> MetricCollection:
    """Top-1, top-k where k < num_classes allows it (k = min(5, C - 1)), and macro F1, per image.

    Compute groups are off: torchmetrics merges metrics whose states coincide after the first update
    into one group, and top-k accuracy and macro F1 then shared the top-k counts (a logged F1 of 0.70
    beside a confusion matrix whose macro F1 is 0.31). Five small metrics do not need the saving.
    """
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
    }
    top_k = min(5, num_classes - 1)
    if top_k >= 2:
        metrics[f"acc_top{top_k}"] = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
    return MetricCollection(metrics, compute_groups=False)


class ViTClassifier(L.LightningModule):
    """Cross-entropy training of a ``create_model`` ViT with torchmetrics for validation and test.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_`` objects): the optimizer takes
    parameter groups (its own weight decay, except on the parameters the model's ``no_weight_decay()``
    names: biases, norms, position embeddings and the class token), the
    scheduler takes the optimizer and ``total_steps``, the real number of optimizer steps of the run.
    ``preprocessing`` (the run's, as ``checkpoint.stored_preprocessing`` holds it) travels in the
    checkpoint so that evaluation and prediction prepare images exactly as training did;
    ``data_config`` (the training run's data config, root included) lets ``vitlab-eval
    ckpt_path=...`` test on the same data with no option.
    Non-finite losses are caught by the ``FiniteLossCheck`` callback, without a host sync per step.
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        model_options: dict[str, Any] | None = None,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        label_smoothing: float = 0.0,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        preprocessing: dict[str, Any] | None = None,
        data_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "pretrained"])
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}.")
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.model = create_model(
            model_name, pretrained=pretrained, num_classes=num_classes, **(model_options or {})
        )
        if freeze_backbone:
            self.freeze_backbone()
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        metrics = classification_metrics(num_classes)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.best_val_acc = MaxMetric()
        # The last epoch's confusion matrices, for loggers and reports (rows: true, columns: predicted).
        self.confusion: dict[str, Tensor] = {}
        # The last test's per-image (probabilities [N, C], labels [N]) on this rank, in loader order.
        self.test_predictions: tuple[Tensor, Tensor] | None = None
        self._test_batches: list[tuple[Tensor, Tensor]] = []

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def freeze_backbone(self) -> None:
        """Train only the classifier head (the course's feature-extractor setup)."""
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad = name.startswith(("head.", "pre_logits."))

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        # Soft targets ([B, C] probabilities, from MixUp/CutMix) and class indices both work here.
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        logits = self(images)
        loss = self._loss(logits, targets)
        labels = targets.argmax(dim=1) if targets.ndim == 2 else targets
        self.train_acc.update(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def on_train_epoch_end(self) -> None:
        # Logged once per epoch, not per step: each self.log costs about 1 ms of Lightning's
        # bookkeeping, and the metric's forward a per-batch accuracy nothing reads.
        self.log("train/acc", self.train_acc)  # computed over the epoch's images, then reset

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        confusion = self.val_confusion if stage == "val" else self.test_confusion
        metrics.update(logits, labels)
        confusion.update(logits, labels)
        if stage == "test":
            self._test_batches.append((logits.detach().float().softmax(-1).cpu(), labels.cpu()))
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(images))
        for name, metric in metrics.items():  # the progress bar shows val/acc only: more would wrap
            self.log(name, metric, prog_bar=name == "val/acc", batch_size=len(images))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.confusion["val"] = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if not self.trainer.sanity_checking:
            self.best_val_acc(self.val_metrics["acc"].compute())
            self.log("val/acc_best", self.best_val_acc.compute(), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._test_batches = []

    def on_test_epoch_end(self) -> None:
        self.confusion["test"] = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        if self._test_batches:
            probabilities, labels = zip(*self._test_batches, strict=True)
            self.test_predictions = torch.cat(probabilities), torch.cat(labels)
        self._test_batches = []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp_format(checkpoint)  # readers tell what this code wrote from what older code did

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.optimizer_factory, self.scheduler_factory, self.model)


def configure_optimization(
    module: L.LightningModule,
    optimizer_factory: OptimizerFactory | None,
    scheduler_factory: SchedulerFactory | None,
    trained: nn.Module | None = None,
) -> Any:
    """``configure_optimizers`` of every task: the optimizer over ``trained``'s (default: the whole
    module's) parameter groups, the scheduler stepped per optimizer step over the run's real length."""
    if optimizer_factory is None:
        raise ValueError(
            f"{type(module).__name__} was built without an optimizer: pass optimizer=... to train it."
        )
    optimizer = optimizer_factory(parameter_groups(trained or module))
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, total_steps=int(module.trainer.estimated_stepping_batches))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
