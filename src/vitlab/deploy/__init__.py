"""Deployment: a trained classifier as an ONNX or ``torch.export`` file that carries what it needs
(class names, preprocessing), run by ONNX Runtime, shown in a Gradio demo, packed as a Space.

The packages (onnx, onnxscript, onnxruntime, gradio) are the optional extra ``deploy``: ``require``
turns their absence into one line saying what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitlab.errors import MissingDependencyError

if TYPE_CHECKING:
    from vitlab.deploy.onnx import OnnxClassifier
    from vitlab.training.module import ViTClassifier

INSTALL = 'pip install -e ".[deploy]" (or pip install onnx onnxscript onnxruntime gradio)'


def require(*packages: str, purpose: str) -> None:
    """Import each package or raise one line naming the missing one, what needs it, and the install."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingDependencyError(
                f"{purpose} needs {package}, which is not installed: {INSTALL}."
            ) from None


def load_predictor(path: str | Path) -> ViTClassifier | OnnxClassifier:
    """What predicts from ``path``, chosen by its suffix: an exported ``.onnx`` file (ONNX Runtime)
    or a training checkpoint; both give logits for normalised inputs and carry ``class_names``,
    ``image_size`` and the ``hparams`` that hold their preprocessing."""
    if Path(path).suffix == ".onnx":
        require("onnxruntime", purpose=f"ckpt_path={path}")
        from vitlab.deploy.onnx import OnnxClassifier

        return OnnxClassifier(Path(path))
    from vitlab.checkpoint import load_classifier

    return load_classifier(path)


def predictor_provenance(predictor: Any, path: str | Path) -> Mapping[str, Any] | None:
    """Where the model in ``path`` was trained: the training checkpoint's provenance, which an
    export carries in its metadata (None for files made before provenance was recorded)."""
    if Path(path).suffix == ".onnx":
        return predictor.provenance
    from vitlab.checkpoint import checkpoint_provenance

    return checkpoint_provenance(path)
