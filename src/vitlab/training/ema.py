"""EMA of the weights: Lightning's callback, with the averaged weights kept when a checkpoint is
loaded for testing."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from lightning.pytorch.trainer.states import TrainerFn


class EMAWeightAveraging(LightningEMA):
    """Lightning 2.6's ``EMAWeightAveraging``; checkpoints hold the average in ``state_dict`` and the
    raw weights in ``current_model_state``.

    One change: Lightning's callback puts the raw weights back into the model whenever it loads a
    checkpoint while it holds an average, which after ``fit`` includes ``trainer.test(ckpt_path=...)``;
    the test then measured the raw weights, not the average. Only a resumed fit needs them back.
    """

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
