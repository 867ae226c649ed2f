"""Experiment loggers from config, with W&B that never blocks or loses a run."""

from __future__ import annotations

import logging
import netrc
import os
import re
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
        logger = (
            _wandb_logger(options, run_name, group)
            if options._target_.endswith("WandbLogger")
            else instantiate(options)
        )
        if logger is None:
            continue
        loggers.append(logger)
        log.info("logger %s: %s", name, type(loggers[-1]).__name__)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def _wandb_logger(options: DictConfig, run_name: str, group: str | None) -> WandbLogger | None:
    """The W&B logger, started now so that any failure shows here, where it cannot cost the run:
    online, else offline with a service of its own, else offline under a fresh id (the given one
    cannot be resumed), else no W&B logger at all (the other loggers go on)."""
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
    _use_own_wandb_service()
    attempts = [(mode, overrides), ("offline", overrides)]  # the second after a reset, with a clean service
    if options.get("id"):
        attempts.append(("offline", {**overrides, "id": None, "resume": None}))
    import wandb

    # wandb's banner (version, sync hints, where run data is saved, the run's page twice) is about a
    # dozen lines around a run; the one that matters, the run and where it is, is logged once instead.
    quiet = wandb.Settings(quiet=True)
    for attempt, (mode, kwargs) in enumerate(attempts, start=1):
        if mode == "offline":
            _stage_media_in(Path(options.save_dir))
        try:
            logger = _without_anonymous(
                instantiate(options, **kwargs, offline=mode == "offline", mode=mode, settings=quiet)
            )
            run = logger.experiment  # start the run now
            log.info("W&B run %r (%s): %s", run.name, mode, run.url if mode == "online" else run.dir)
            return logger
        except Exception as error:  # any wandb/network failure must not stop training
            _reset_wandb()
            if attempt < len(attempts):
                next_mode, next_kwargs = attempts[attempt]
                fresh = " under a new run id" if "id" in next_kwargs else ""
                log.warning(
                    "W&B: could not start the %s run (%s); logging %s%s instead.",
                    mode,
                    error,
                    next_mode,
                    fresh,
                )
            else:
                log.warning("W&B: could not start a run (%s); this run goes on without W&B.", error)
    return None


def _use_own_wandb_service() -> None:
    """wandb joins the service an inherited ``WANDB_SERVICE`` names. That is meant for this process
    and its parent, but a job started by another program that had W&B open (a SLURM job submitted
    from a notebook, a sweep started by a test) would log into that program's service, where a run
    of the same id it never finished stays "in use" (a requeued job resuming its run). Such a job
    starts a service of its own."""
    from wandb.env import SERVICE

    started_by = re.match(r"[^-]+-(\d+)-", os.environ.get(SERVICE, ""))
    if started_by and int(started_by.group(1)) not in (os.getpid(), os.getppid()):
        log.info("W&B: not joining the service of process %s (inherited %s)", started_by.group(1), SERVICE)
        os.environ.pop(SERVICE)


def _reset_wandb() -> None:
    """After a failed start: end what was started, and drop the service connection (a half-started
    run may still hold its id there) so the next attempt starts clean."""
    import wandb
    from wandb.env import SERVICE

    wandb.finish()
    wandb.teardown()
    os.environ.pop(SERVICE, None)


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


def record_in_wandb(loggers: list[Logger], results: dict[str, Any]) -> None:
    """Complete the W&B run with what is known only at the end: the whole provenance (data
    fingerprints and wall time) in its config, and the metrics results.json holds in its summary."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.config.update({"provenance": results["provenance"]}, allow_val_change=True)
            run.summary.update(results["metrics"])


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
