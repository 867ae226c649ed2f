"""Loading a trained ViTClassifier for evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

from vitlab.data.transforms import Pipeline, eval_transform
from vitlab.errors import ConfigError
from vitlab.runs import UNREADABLE_CHECKPOINT, checkpoint_step
from vitlab.training.module import ViTClassifier


def load_classifier(ckpt_path: str | Path, map_location: str = "cpu") -> ViTClassifier:
    """A ``ViTClassifier`` from a Lightning checkpoint written by ``vitlab-train``, with a clear error
    for a missing file or one that is not such a checkpoint."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such file. Training writes checkpoints to "
            "logs/train/runs/<time>/checkpoints/ (best: epoch_*.ckpt, last: last.ckpt)."
        )
    checkpoint_step(path)  # a file that is not a Lightning checkpoint: one line saying so
    try:
        # Our checkpoints hold only tensors and plain values: no pickled code runs on load.
        return ViTClassifier.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except UNREADABLE_CHECKPOINT as error:  # a checkpoint this code cannot rebuild (e.g. the old hybrid)
        raise ConfigError(f"ckpt_path={path}: {error}") from None


def eval_transform_for(module: ViTClassifier) -> Pipeline:
    """The evaluation transform a checkpoint was trained with (image size, mean, std, resize)."""
    preprocessing = module.hparams.get("preprocessing") or {}
    return eval_transform(module.image_size, **{k: v for k, v in preprocessing.items() if v is not None})
