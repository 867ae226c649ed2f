"""Experiment loggers from config, with W&B that never blocks or loses a run."""

from __future__ import annotations

import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    """True when wandb could authenticate: ``WANDB_API_KEY`` or a ``~/.netrc`` entry from ``wandb login``.
    (The key itself is never read into our config or output.)"""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        hosts = netrc.netrc(netrc_path).hosts
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    return any(host in base_url for host in hosts)


def wandb_mode() -> str:
    """``WANDB_MODE`` when set, otherwise online only when a key is configured."""
    return os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")


def build_loggers(
    logger_cfg: DictConfig | None, run_name: str, group: str | None, config: dict[str, Any]
) -> list[Logger]:
    """Instantiate every logger in ``cfg.logger`` and record the resolved config with each."""
    loggers: list[Logger] = []
    for name, options in (logger_cfg or {}).items():
        if not isinstance(options, DictConfig) or "_target_" not in options:
            continue
        if options._target_.endswith("WandbLogger"):
            loggers.append(_wandb_logger(options, run_name, group))
        else:
            loggers.append(instantiate(options))
        log.info("logger %s: %s", name, type(loggers[-1]).__name__)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def _wandb_logger(options: DictConfig, run_name: str, group: str | None) -> WandbLogger:
    overrides: dict[str, Any] = {
        "name": options.get("name") or run_name,
        "group": options.get("group") or group,
    }
    mode = "offline" if options.get("offline") else wandb_mode()
    if mode == "offline" and not options.get("offline"):
        log.warning(
            "W&B: no API key found (set WANDB_API_KEY or run `wandb login`): logging offline under %s. "
            "Upload later with `wandb sync %s/wandb/offline-run-*`.",
            options.save_dir,
            options.save_dir,
        )
    Path(options.save_dir).mkdir(parents=True, exist_ok=True)
    if mode == "offline":
        _stage_media_in(Path(options.save_dir))
    logger = _without_anonymous(instantiate(options, **overrides, offline=mode == "offline", mode=mode))
    try:
        logger.experiment  # noqa: B018  start the run now, so a network failure is caught here
    except Exception as error:  # any wandb/network failure must not stop training
        import wandb

        log.warning("W&B: could not start an online run (%s); logging offline instead.", error)
        wandb.finish()
        _stage_media_in(Path(options.save_dir))
        logger = _without_anonymous(instantiate(options, **overrides, offline=True, mode="offline"))
        logger.experiment  # noqa: B018
    return logger


def _without_anonymous(logger: WandbLogger) -> WandbLogger:
    """Lightning passes wandb's deprecated ``anonymous`` setting (as None), which wandb answers with
    "The anonymous setting has no effect" at every run; it has no effect, so it is not passed."""
    logger._wandb_init.pop("anonymous", None)
    return logger


_DATA_DIR = "WANDB_DATA_DIR"
_user_data_dir: list[str | None] = []  # the value to restore when the run ends


def _stage_media_in(save_dir: Path) -> None:
    """Offline, wandb copies a table's images and files into its global staging folder
    (``~/.local/share/wandb/artifacts/staging``) and the run's records point there; nothing ever
    cleans it, and a copied run folder would lack its media. Staging inside the run's own folder
    keeps the run self-contained and the global folder from growing."""
    _user_data_dir.append(os.environ.get(_DATA_DIR))
    os.environ[_DATA_DIR] = str(save_dir.resolve() / "wandb" / "media-staging")


def finish_wandb() -> None:
    """End the W&B run so the next job of a multirun starts its own (a known Hydra + W&B pitfall)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    while _user_data_dir:
        previous = _user_data_dir.pop()
        if previous is None:
            os.environ.pop(_DATA_DIR, None)
        else:
            os.environ[_DATA_DIR] = previous
