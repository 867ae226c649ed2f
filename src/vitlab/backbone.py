"""The model an inspection entry point looks at (``vitlab-analyze``, ``vitlab-fewshot``): a training
checkpoint, pretrained weights or a random initialisation, with the preprocessing that belongs to it.
Both entry points share the config keys ``ckpt_path``, ``model.*``, ``preprocessing.*`` and ``seed``."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vitlab.checkpoint import eval_transform_for, load_classifier
from vitlab.data.transforms import Pipeline, eval_transform
from vitlab.errors import ConfigError
from vitlab.models import ModelConfig, VisionTransformer
from vitlab.models.preprocessing import resolve_preprocessing

log = logging.getLogger(__name__)


def load_backbone(cfg: DictConfig) -> tuple[VisionTransformer, Pipeline]:
    """``(model in eval mode, its evaluation transform)`` from an entry point's config.

    A checkpoint (``ckpt_path``) brings its own model and preprocessing, and its model's name to
    ``model.name``. Otherwise the model is what the model config says (``ModelConfig``), without a
    classifier, random (seeded by ``seed``) when no weights are named, and images are prepared as
    the weights expect, each of ``preprocessing.mean/std/interpolation/crop_pct`` the user's where
    set (as training does).
    """
    try:
        if cfg.ckpt_path:
            module = load_classifier(cfg.ckpt_path)
            with open_dict(cfg):  # what is saved and logged names the checkpoint's model, not the default
                cfg.model.name, cfg.model.pretrained = module.hparams.model_name, None
            return module.model.eval(), eval_transform_for(module)
        spec = ModelConfig.from_config(cfg.model)
        user = OmegaConf.to_container(cfg.preprocessing)
        resize_size = user.pop("resize_size", None)
        preprocessing = resolve_preprocessing(spec.pretrained, spec.pretrained_file, **user)
        torch.manual_seed(cfg.seed)
        model = spec.create(num_classes=0)
    except ValueError as error:  # weights that do not fit, preprocessing that cannot be told
        raise ConfigError(str(error)) from None
    log.info(
        "inputs: %s, resize_size %s (from %s)", preprocessing, resize_size, spec.weights or "random weights"
    )
    return model.eval(), eval_transform(model.image_size, resize_size=resize_size, **preprocessing)


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other value as torch reads it."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
