"""Masked patch prediction: the ViT paper's self-supervised pre-training (section 4.6, appendix B.1.2).

Half of the patch embeddings are corrupted (80 % of those replaced by a learnable [mask] embedding,
10 % by a random other patch's embedding, 10 % kept as they are) and the encoder's output token of
each corrupted patch predicts that patch's mean colour, 3 bits per channel of the un-normalised
pixels: one of 512 classes. No labels are used. The backbone (``model.``) of its checkpoint is what
``model.pretrained=<ckpt>`` loads for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from vitlab.checkpoint import stamp_format
from vitlab.models import create_model
from vitlab.training.module import OptimizerFactory, SchedulerFactory, configure_optimization

STAGES = ("train", "val", "test")


def colour_classes(pixels: Tensor, patch_size: int, bits: int = 3) -> Tensor:
    """``[B, N]`` class ids in ``[0, 2^(3 bits))`` of each patch's mean colour, patches in row-major
    order (as the tokens). ``pixels``: ``[B, 3, H, W]`` in [0, 1]; channel r, g, b each quantised to
    ``bits`` bits, the id is ``(r * 2^bits + g) * 2^bits + b``."""
    levels = 2**bits
    mean = F.avg_pool2d(pixels, patch_size).flatten(2)  # [B, 3, N]
    quantised = (mean * levels).floor().clamp(0, levels - 1).long()
    red, green, blue = quantised.unbind(1)
    return (red * levels + green) * levels + blue


def corrupt_patches(
    patches: Tensor,
    mask_embedding: Tensor,
    corrupt_fraction: float = 0.5,
    mask_probability: float = 0.8,
    random_probability: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(corrupted copy of ``patches`` ``[B, N, D]``, which were corrupted ``[B, N]`` bool).

    Exactly ``round(corrupt_fraction * N)`` patches per image are chosen at random; each chosen one is
    replaced by ``mask_embedding`` with ``mask_probability``, by the embedding of a random patch of the
    batch with ``random_probability``, and otherwise kept (BERT's 80/10/10 rule).
    """
    batch, tokens, dim = patches.shape
    device = patches.device
    count = round(corrupt_fraction * tokens)
    scores = torch.rand(batch, tokens, device=device, generator=generator)
    chosen = torch.zeros(batch, tokens, dtype=torch.bool, device=device)
    chosen.scatter_(1, scores.argsort(dim=1)[:, :count], True)
    action = torch.rand(batch, tokens, device=device, generator=generator)
    masked = chosen & (action < mask_probability)
    randomised = chosen & (action >= mask_probability) & (action < mask_probability + random_probability)
    flat = patches.reshape(-1, dim)
    donors = flat[torch.randint(len(flat), (batch, tokens), device=device, generator=generator)]
    corrupted = torch.where(randomised[..., None], donors, patches)
    corrupted = torch.where(masked[..., None], mask_embedding.to(patches.dtype).expand_as(patches), corrupted)
    return corrupted, chosen


class MaskedPatchPrediction(L.LightningModule):
    """Self-supervised pre-training of a ``create_model`` ViT backbone by masked patch prediction.

    Logs ``{stage}/loss`` and ``{stage}/acc`` (colour-class accuracy on the corrupted patches), and
    ``val/acc_best``, under the same names a classifier logs, so checkpoints, sweeps and summaries
    work unchanged. ``preprocessing`` (the run's, as ``checkpoint.stored_preprocessing`` holds it:
    the checkpoint carries it for fine-tuning) un-normalises the pixels whose colours are the targets.
    """

    def __init__(
        self,
        model_name: str,
        model_options: dict[str, Any] | None = None,
        pretrained: str | None = None,
        corrupt_fraction: float = 0.5,
        mask_probability: float = 0.8,
        random_probability: float = 0.1,
        colour_bits: int = 3,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        *,
        preprocessing: dict[str, Any],
    ) -> None:
        super().__init__()
        for name, value in (
            ("corrupt_fraction", corrupt_fraction),
            ("mask_probability", mask_probability),
            ("random_probability", random_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"task.{name}={value} must lie in [0, 1].")
        if mask_probability + random_probability > 1.0:
            raise ValueError(
                f"task.mask_probability + task.random_probability = {mask_probability + random_probability} "
                "exceeds 1: the rest of the corrupted patches is kept, so their sum must be <= 1."
            )
        if not 1 <= colour_bits <= 8:
            raise ValueError(f"task.colour_bits={colour_bits} must be in 1..8 (bits per colour channel).")
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "pretrained"])
        self.model = create_model(model_name, pretrained=pretrained, num_classes=0, **(model_options or {}))
        self.corrupt_fraction = corrupt_fraction
        self.mask_probability, self.random_probability = mask_probability, random_probability
        self.colour_bits = colour_bits
        num_colours = 2 ** (3 * colour_bits)
        # Outside ``model.``: the fine-tuning loader takes the backbone and leaves these behind.
        self.mask_embedding = nn.Parameter(torch.zeros(1, 1, self.model.dim))
        self.colour_head = nn.Linear(self.model.dim, num_colours)
        nn.init.normal_(self.mask_embedding, std=0.02)
        nn.init.zeros_(self.colour_head.weight)
        nn.init.zeros_(self.colour_head.bias)
        mean = torch.tensor(preprocessing["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(preprocessing["std"]).view(1, -1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # ModuleDict keys may not be Module attribute names such as "train".
        self.accuracy = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_colours, average="micro") for stage in STAGES}
        )
        self.best_val_acc = MaxMetric()

    def targets(self, images: Tensor) -> Tensor:
        """Colour class of every patch of normalised ``images``: ``[B, N]``."""
        pixels = (images * self.pixel_std + self.pixel_mean).clamp(0, 1)
        return colour_classes(pixels.float(), self.model.patch_size, self.colour_bits)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(colour logits of the corrupted patches ``[M, 2^(3 bits)]``, which patches ``[B, N]``)."""
        patches = self.model.patch_tokens(images)
        corrupted, chosen = corrupt_patches(
            patches,
            self.mask_embedding,
            self.corrupt_fraction,
            self.mask_probability,
            self.random_probability,
        )
        tokens = self.model.encode_tokens(self.model.add_class_and_position(corrupted))  # [B, N+1, D]
        return self.colour_head(tokens[:, 1:][chosen]), chosen

    def _step(self, batch: Sequence[Tensor], stage: str) -> Tensor:
        images = batch[0]  # labels, if any, are not used
        logits, chosen = self(images)
        targets = self.targets(images)[chosen]
        loss = F.cross_entropy(logits, targets)  # a NaN stops the run in FiniteLossCheck, unsynchronised
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits.detach(), targets)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(images))
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.best_val_acc(self.accuracy["val_acc"].compute())
            self.log("val/acc_best", self.best_val_acc.compute(), sync_dist=True)

    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay parameters, the mask embedding and the colour head's bias."""
        return {f"model.{name}" for name in self.model.no_weight_decay()} | {
            "mask_embedding",
            "colour_head.bias",
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp_format(checkpoint)  # readers tell what this code wrote from what older code did

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.optimizer_factory, self.scheduler_factory)
