"""The checkpoint format: the one place that writes and reads what a vitlab training checkpoint holds.

A checkpoint is Lightning's (``global_step``, ``epoch``, ``state_dict``, ``optimizer_states`` unless
weights only, ``hyper_parameters``) plus ``vitlab_format``, the version of what vitlab stores in it;
checkpoints written before that key existed are version 0. It carries the data config, class names
and preprocessing, so eval, predict and resume need nothing retyped. Every ``.pth``/``.ckpt`` file
of the project, weights included, is read by ``load_torch_file``. This module imports no project
module that could import it back (``models.weights`` reads files with it): the classifier and the
``Preprocessing`` are imported where they are built.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vitlab.errors import ConfigError, MissingFileError

if TYPE_CHECKING:
    from vitlab.models.preprocessing import Preprocessing
    from vitlab.training.module import ViTClassifier

FORMAT_VERSION = 1  # 1: the version key itself; raise it when what is stored changes meaning
FORMAT_KEY = "vitlab_format"
PROVENANCE_KEY = "provenance"  # vitlab.provenance's dict, as in the run's results.json

# What torch.load raises for a file it cannot read as tensors and plain values (torch's own message
# then advises weights_only=False and filing an issue: not the user's fix).
UNREADABLE_CHECKPOINT = (KeyError, TypeError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def load_torch_file(path: Path) -> Any:
    """``torch.load`` of tensors and plain values only (no pickled code runs), memory-mapped where
    the file allows it (zip files, since torch 1.6), so that looking at keys reads no tensor data."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def stamp_format(checkpoint: dict[str, Any]) -> None:
    """Mark a checkpoint being saved with the format version (a LightningModule's ``on_save_checkpoint``)."""
    checkpoint[FORMAT_KEY] = FORMAT_VERSION


def stamp_provenance(checkpoint: dict[str, Any], provenance: Mapping[str, Any]) -> None:
    """Record where a checkpoint being saved came from (``vitlab.provenance``): the same dict as the
    run's results.json, as of this save."""
    checkpoint[PROVENANCE_KEY] = dict(provenance)


def is_training_checkpoint(contents: Any) -> bool:
    """Whether loaded file contents are a Lightning checkpoint (every one has a ``global_step``)."""
    return isinstance(contents, Mapping) and "global_step" in contents


def not_a_checkpoint(path: Path | str) -> ConfigError:
    return ConfigError(
        f"ckpt_path={path} is not a Lightning checkpoint written by vitlab-train: pass a .ckpt from a "
        "run's checkpoints/ folder, or the run folder itself (model.pretrained=... takes plain weights)."
    )


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A stored training checkpoint, as resume, eval, predict and weight loading read it; the state
    dict's tensors stay memory-mapped until used."""

    format_version: int
    global_step: int
    epoch: int
    has_optimizer_state: bool  # False for the weights-only best checkpoint
    hyper_parameters: Mapping[str, Any]
    state_dict: Mapping[str, Tensor]
    provenance: Mapping[str, Any] | None  # None in checkpoints written before it was recorded

    @classmethod
    def from_contents(cls, contents: Any, path: Path) -> TrainingCheckpoint:
        """The view of loaded file contents: one line if they are not a checkpoint, or one written
        in a format newer than this code reads."""
        try:
            stored = cls(
                format_version=int(contents.get(FORMAT_KEY, 0)),
                global_step=int(contents["global_step"]),
                epoch=int(contents.get("epoch", 0)),
                has_optimizer_state="optimizer_states" in contents,
                hyper_parameters=dict(contents.get("hyper_parameters") or {}),
                state_dict=contents["state_dict"],
                provenance=contents.get(PROVENANCE_KEY),
            )
        except (AttributeError, KeyError, TypeError, ValueError):  # not a mapping, or keys missing or odd
            raise not_a_checkpoint(path) from None
        if stored.format_version > FORMAT_VERSION:
            raise ConfigError(
                f"{path} was written by a newer vitlab (checkpoint format {stored.format_version}; this "
                f"one reads formats up to {FORMAT_VERSION}): upgrade vitlab (pip install -U vitlab)."
            )
        return stored


def read_training_checkpoint(path: Path) -> TrainingCheckpoint:
    """The checkpoint at ``path``, or one line: no such file, not a checkpoint, or a newer format."""
    if not path.is_file():
        raise MissingFileError(
            f"ckpt_path={path}: no such file. Training writes checkpoints to "
            "logs/train/runs/<time>/checkpoints/ (best: epoch_*.ckpt, last: last.ckpt)."
        )
    try:
        contents = load_torch_file(path)
    except UNREADABLE_CHECKPOINT:
        raise not_a_checkpoint(path) from None
    return TrainingCheckpoint.from_contents(contents, path)


def checkpoint_provenance(path: str | Path) -> Mapping[str, Any] | None:
    """Where a training checkpoint came from (None for one written before provenance was recorded)."""
    return read_training_checkpoint(Path(path)).provenance


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` stored in a training checkpoint."""
    return read_training_checkpoint(path).global_step


def stored_preprocessing(preprocessing: Preprocessing) -> dict[str, Any]:
    """How a checkpoint (and the printed config) holds a ``Preprocessing``: plain values, lists not
    tuples, so it loads with ``weights_only=True`` and reads as YAML."""
    return asdict(preprocessing) | {"mean": list(preprocessing.mean), "std": list(preprocessing.std)}


def carried_hyperparameters(data: Mapping[str, Any], preprocessing: Preprocessing) -> dict[str, Any]:
    """What a checkpoint carries of the run's inputs: its preprocessing, and its resolved data
    config with an absolute root, which is all eval needs to test on the same data."""
    data_config = dict(data)
    if data_config.get("root"):
        data_config["root"] = str(Path(data_config["root"]).expanduser().resolve())
    return {"preprocessing": stored_preprocessing(preprocessing), "data_config": data_config}


def preprocessing_of(hyper_parameters: Mapping[str, Any]) -> Preprocessing | None:
    """The preprocessing a checkpoint's run trained with; None where no mean and std were stored.
    Older checkpoints hold the same keys, with None for a bilinear resize."""
    from vitlab.models.preprocessing import Preprocessing  # here: models import this module

    stored = hyper_parameters.get("preprocessing") or {}
    if stored.get("mean") is None or stored.get("std") is None:
        return None
    return Preprocessing(**{key: value for key, value in stored.items() if value is not None})


def data_config_of(hyper_parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """The data config a checkpoint's run trained on (None where none was stored), less the
    preprocessing options older runs kept in it (now ``preprocessing_of``)."""
    from vitlab.models.preprocessing import Preprocessing

    stored = hyper_parameters.get("data_config")
    if stored is None:
        return None
    moved = {field.name for field in fields(Preprocessing)}
    return {key: value for key, value in stored.items() if key not in moved}


def trained_preprocessing(path: str | Path) -> Preprocessing | None:
    """The preprocessing a vitlab training checkpoint (of either task, e.g. ``task=mpp``'s
    ``last.ckpt``) was trained with; None for plain weights files and checkpoints that do not say
    (a readable torch file: check it with ``weights.checkpoint_format`` first)."""
    contents = load_torch_file(Path(path))
    if not is_training_checkpoint(contents):
        return None
    return preprocessing_of(TrainingCheckpoint.from_contents(contents, Path(path)).hyper_parameters)


def check_fits(state_dict: Mapping[str, Tensor], checkpoint: Path) -> None:
    """One line naming the first weight whose shape differs, both shapes and the option behind it."""
    stored = read_training_checkpoint(checkpoint).state_dict
    for name, tensor in state_dict.items():
        if name in stored and stored[name].shape != tensor.shape:
            raise ConfigError(
                f"ckpt_path={checkpoint} does not fit the model: {name} has shape "
                f"{list(stored[name].shape)} in the checkpoint and {list(tensor.shape)} in the model "
                f"configured now; check {_option_behind(name)} (resuming keeps the run's own values "
                "unless the command overrides them)."
            )
    missing = sorted(set(state_dict) ^ set(stored))
    if missing:
        raise ConfigError(
            f"ckpt_path={checkpoint} does not fit the model: weights {missing[:3]} are in only one of "
            "them; check model= and model.depth (resuming keeps the run's own values unless overridden)."
        )


def _option_behind(weight_name: str) -> str:
    if "position_embedding" in weight_name:
        return "model.image_size and model.patch_size"
    if "patch_embedding" in weight_name or "conv_proj" in weight_name:
        return "model.patch_size"
    if "head" in weight_name:
        return "the data's classes (data=, data.root=, data.num_classes=)"
    return "model= (the variant's width)"


def load_classifier(ckpt_path: str | Path) -> ViTClassifier:
    """The ``ViTClassifier`` a training checkpoint holds, built from its hyper-parameters, or one
    line saying why it cannot be (e.g. the old torchvision-stem hybrid, refused by its stem)."""
    from vitlab.training.module import ViTClassifier  # here: the models it builds import this module

    path = Path(ckpt_path)
    stored = read_training_checkpoint(path)
    try:
        module = ViTClassifier(**stored.hyper_parameters)
        module.load_state_dict(stored.state_dict)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"ckpt_path={path}: {error}") from None
    return module
