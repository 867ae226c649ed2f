"""Training: the LightningModule, optimisers and schedules, callbacks."""

from vitlab.training.module import ViTClassifier

__all__ = ["ViTClassifier"]
