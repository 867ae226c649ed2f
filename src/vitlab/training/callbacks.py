"""Lightning callbacks of our own: the non-finite loss check, the last checkpoint, training speed,
provenance in checkpoints and the W&B reports."""

from __future__ import annotations

import copy
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from vitlab.checkpoint import stamp_provenance
from vitlab.provenance import Provenance
from vitlab.viz.attention import attention_overlays


class FiniteLossCheck(L.Callback):
    """Stops training on a NaN or infinite loss, without a host synchronisation every step.

    Each step only folds ``isfinite(loss)`` into a flag on the device; the flag is read every
    ``every_n_steps`` steps (by default the logging interval, where Lightning reads the logged values
    anyway), before validation and at the end of each epoch, so no checkpoint is saved unchecked.
    At each check that passes, the weights and optimizer state are copied (on the device); when a
    check fails they are restored from that copy before the error is raised, so the checkpoint saved
    on the exception holds the last state known to be finite, never NaN weights.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: must be at least 1.")
        self.every_n_steps = every_n_steps
        self._all_finite: Tensor | None = None
        self._finite_state: dict[str, Any] | None = None
        self.finite_step = 0  # the global step of the copy

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._all_finite = torch.ones((), dtype=torch.bool, device=pl_module.device)
        self._save_state(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and self._all_finite is not None:
            self._all_finite &= torch.isfinite(loss.detach()).all()  # stays on the device: no sync
        if trainer.global_step % self.every_n_steps == 0:
            self._check(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)  # runs before the checkpoint callbacks (Lightning orders them last)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._all_finite is None or trainer.global_step == self.finite_step:
            return
        finite = trainer.strategy.reduce_boolean_decision(bool(self._all_finite), all=True)
        if finite:
            self._save_state(trainer, pl_module)
            return
        bad_step = trainer.global_step
        self._restore_state(trainer, pl_module)
        raise FloatingPointError(
            f"training loss became NaN or infinite between steps {self.finite_step} and {bad_step} "
            f"(epoch {trainer.current_epoch}): the run is stopped, with the weights of step "
            f"{self.finite_step}, the last checked finite state. Lower optimizer.lr, keep "
            "trainer.gradient_clip_val=1.0, or try trainer.precision=32-true."
        )

    def _save_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = self._finite_state or {}
        current = {
            "model": pl_module.state_dict(),
            "optimizers": [o.state_dict() for o in trainer.optimizers],
        }
        self._finite_state = _copy_into(previous, current)
        self.finite_step = trainer.global_step

    def _restore_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._finite_state is not None
        pl_module.load_state_dict(self._finite_state["model"])
        for optimizer, state in zip(trainer.optimizers, self._finite_state["optimizers"], strict=True):
            optimizer.load_state_dict(state)


def _copy_into(previous: Any, value: Any) -> Any:
    """A copy of ``value`` (state dicts: nested dicts and lists of tensors), written into the tensors of
    ``previous``, an earlier copy, wherever they match: no new allocation at every check (ViT-Ti/6 and
    its AdamW state on a 2-core CPU: 4 ms a copy, against 15-20 ms for ``copy.deepcopy``)."""
    if isinstance(value, Tensor):
        reusable = isinstance(previous, Tensor) and previous.shape == value.shape
        if reusable and previous.dtype == value.dtype and previous.device == value.device:
            return previous.copy_(value.detach())
        return value.detach().clone()
    if isinstance(value, dict):
        earlier = previous if isinstance(previous, dict) else {}
        return {key: _copy_into(earlier.get(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        same_length = isinstance(previous, list | tuple) and len(previous) == len(value)
        earlier = previous if same_length else [None] * len(value)
        return type(value)(_copy_into(before, item) for before, item in zip(earlier, value, strict=True))
    return copy.deepcopy(value)


class LastCheckpoint(ModelCheckpoint):
    """The full training state at the end of the last epoch, to resume from: at the end of the first
    epoch, then of an epoch at least ``min_interval_s`` seconds after the previous save, and always
    at the end of the final one (``max_epochs``, ``max_steps`` or an early stop).

    Writing every epoch cost short epochs 2 % of their time (ViT-Ti/6 with AdamW: 34 MB, 75 ms, in
    3.5 s epochs). A crash, Ctrl-C or SLURM's signal loses nothing either way (``on_exception.ckpt``,
    ``requeue.ckpt``); only a hard kill loses up to ``min_interval_s`` of training.
    """

    def __init__(self, min_interval_s: float = 60.0, **kwargs: Any) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s={min_interval_s}: must be 0 (every epoch) or more.")
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._saved_at: float | None = None

    @staticmethod
    def _final_epoch(trainer: L.Trainer) -> bool:
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        return (
            trainer.should_stop
            or (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
            or (max_steps >= 0 and trainer.global_step >= max_steps)
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        due = self._saved_at is None or now - self._saved_at >= self.min_interval_s
        if due or self._final_epoch(trainer):
            super().on_train_epoch_end(trainer, pl_module)
            self._saved_at = now


class TrainingSpeed(L.Callback):
    """Logs ``train/images_per_sec``: images over time spent in training batches (forward, backward,
    optimizer step), per epoch and summed over ranks; data-loading waits are excluded.

    On a GPU each batch is timed with CUDA events, read once at the end of the epoch: no host
    synchronisation per step (the GPU would otherwise wait for the CPU at every batch).
    """

    def __init__(self) -> None:
        self._images = 0
        self._seconds = 0.0
        self._start = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @staticmethod
    def _on_cuda(trainer: L.Trainer) -> bool:
        return trainer.strategy.root_device.type == "cuda"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._seconds, self._events = 0, 0.0, []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._on_cuda(trainer):
            self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record()
        else:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._on_cuda(trainer):
            self._events[-1][1].record()
        else:
            self._seconds += time.perf_counter() - self._start
        self._images += len(batch[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._events:
            self._events[-1][1].synchronize()  # one wait per epoch
            self._seconds = sum(start.elapsed_time(end) for start, end in self._events) / 1000
        if self._seconds > 0:
            rate = self._images / self._seconds * trainer.world_size
            pl_module.log("train/images_per_sec", rate, rank_zero_only=True)


class ProvenanceInCheckpoints(L.Callback):
    """Every checkpoint holds the run's provenance as of its save (``vitlab.provenance``): the same
    dict its results.json will hold, so a checkpoint found alone still says what made it."""

    def __init__(self, provenance: Provenance) -> None:
        self.provenance = provenance

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        data = getattr(trainer.datamodule, "provenance", None)
        stamp_provenance(checkpoint, self.provenance.record(data() if data is not None else None))


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
        with torch.no_grad():
            probabilities = model(images.to(next(model.parameters()).device)).softmax(-1).float().cpu()
        model.train(was_training)
        mean, std = self._normalisation(trainer)
        pictures = _denormalise(images.float(), mean, std)
        overlays = attention_overlays(model, images, list(pictures))
        names = pl_module.class_names
        table = wandb.Table(columns=["image", "attention", "actual", "predicted", "probability"])
        for picture, overlay, label, probs in zip(pictures, overlays, labels, probabilities, strict=True):
            table.add_data(
                wandb.Image(picture.permute(1, 2, 0).numpy()),
                wandb.Image(overlay.permute(1, 2, 0).numpy()),
                names[int(label)],
                names[int(probs.argmax())],
                float(probs.max()),
            )
        logger.experiment.log({"val/predictions": table})

    @staticmethod
    def _normalisation(trainer: L.Trainer) -> tuple[Tensor, Tensor]:
        preprocessing = trainer.datamodule.preprocessing
        return torch.tensor(preprocessing.mean), torch.tensor(preprocessing.std)
