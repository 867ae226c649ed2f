"""The model an inspection entry point looks at (``vitlab-analyze``, ``vitlab-fewshot``): a training
checkpoint, pretrained weights or a random initialisation, with the preprocessing that belongs to it.
Both entry points share the config keys ``ckpt_path``, ``model.*``, ``preprocessing.*`` and ``seed``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, open_dict

from vitlab.checkpoint import load_classifier
from vitlab.cli.preprocessing import command_preprocessing
from vitlab.data.transforms import Pipeline, eval_transform
from vitlab.errors import ConfigError
from vitlab.models import ModelConfig, VisionTransformer
from vitlab.models.preprocessing import checkpoint_preprocessing, resolve_preprocessing


def load_inspected_model(cfg: DictConfig) -> tuple[VisionTransformer, Pipeline]:
    """``(model in eval mode, its evaluation transform)`` from an entry point's config.

    A checkpoint (``ckpt_path``) brings its own model and preprocessing, and its model's name to
    ``model.name``. Otherwise the model is what the model config says (``ModelConfig``), without a
    classifier, random (seeded by ``seed``) when no weights are named, and images are prepared as
    the weights expect. Either way each ``preprocessing.*`` option the user sets wins (as in training).
    """
    if cfg.ckpt_path:
        module = load_classifier(cfg.ckpt_path)
        with open_dict(cfg):  # what is saved and logged names the checkpoint's model, not the default
            cfg.model.name, cfg.model.pretrained = module.hparams.model_name, None
        model = module.model
        preprocessing = command_preprocessing(
            cfg,
            lambda options: checkpoint_preprocessing(cfg.ckpt_path, module.hparams, options),
            model.image_size,
            f"ckpt_path={cfg.ckpt_path}",
        )
        return model.eval(), eval_transform(model.image_size, preprocessing)
    try:
        spec = ModelConfig.from_config(cfg.model)
        preprocessing = (
            command_preprocessing(  # before the weights load: a file that does not tell fails fast
                cfg,
                lambda options: resolve_preprocessing(spec.pretrained, spec.pretrained_file, options),
                cfg.model.image_size,
                spec.weights or "random weights",
            )
        )
        torch.manual_seed(cfg.seed)
        model = spec.create(num_classes=0)
    except ValueError as error:  # weights that do not fit, preprocessing that cannot be told
        raise ConfigError(str(error)) from None
    return model.eval(), eval_transform(model.image_size, preprocessing)


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other value as torch reads it."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
