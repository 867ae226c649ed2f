"""Every command's one ``Preprocessing``, at the config edge: resolved from the user's
``preprocessing.*`` options on top of the weights' or the checkpoint's, logged once, and written
back into ``cfg.preprocessing`` so the printed and saved config shows what ran."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vitlab.checkpoint import stored_preprocessing
from vitlab.errors import ConfigError
from vitlab.models.preprocessing import Preprocessing, describe

log = logging.getLogger(__name__)


def command_preprocessing(
    cfg: DictConfig, resolve: Callable[[Mapping[str, Any]], Preprocessing], image_size: int, source: str
) -> Preprocessing:
    """``resolve(options)`` (``options``: the command's ``preprocessing.*``), logged with the sizes
    it gives ``image_size`` and where it came from (``source``); its ``ValueError``s are config errors."""
    try:
        preprocessing = resolve(OmegaConf.to_container(cfg.preprocessing))
        log.info("inputs: %s (from %s)", describe(preprocessing, image_size), source)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    with open_dict(cfg):
        cfg.preprocessing = stored_preprocessing(preprocessing)
    return preprocessing
