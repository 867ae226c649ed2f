"""The one wrapper every command shares (train, eval, predict, analyze, fewshot): Hydra's main, the
error path, the run folder the command owns, and W&B's finish.

A command module defines ``run(cfg)`` and ``main = command("<config name>", run)``. Then:
- composition errors (a misspelled option, an unknown config) and every ``vitlab.errors.UserError``
  are printed once, as the last line (``error: ...``), with a non-zero exit; anything else is a bug
  and keeps its traceback. ``VITLAB_TRACEBACK=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the whole
  chain for user errors too;
- the config is validated before anything long is printed;
- a failed job removes exactly the folders this command created (``vitlab.runs``) and finishes W&B;
- a successful job ends with one line saying where its results went.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import vitlab.cli.output
import vitlab.slurm
import vitlab.training.trainer  # noqa: F401 - registers ${grad_accumulation:...}
from vitlab import runs
from vitlab.cli.validate import unknown_option_message
from vitlab.errors import UserError
from vitlab.loggers import finish_wandb

log = logging.getLogger(__name__)


def config_path() -> str:
    """Where Hydra finds the config tree: the repository's ``conf/`` in a source checkout, else the
    copy an installed wheel carries as the ``vitlab.conf`` package."""
    checkout = Path(__file__).resolve().parents[3] / "conf"
    return str(checkout) if (checkout / "train.yaml").is_file() else "pkg://vitlab.conf"


CONFIG_PATH = config_path()


@contextmanager
def initialize_configs() -> Iterator[None]:
    """Hydra's compose API over the config tree the commands read (checkout or installed wheel)."""
    from hydra import initialize_config_dir, initialize_config_module

    if CONFIG_PATH.startswith("pkg://"):
        with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
            yield
    else:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            yield


def output_dir() -> Path:
    """This job's folder (Hydra's ``runtime.output_dir``; a continued run moves it to its own)."""
    return Path(HydraConfig.get().runtime.output_dir)


def _job(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """One job (the whole command, or one job of a multirun): what it created goes if it fails."""

    @functools.wraps(run)
    def job(cfg: DictConfig) -> Any:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        folder = output_dir()
        if multirun and not runs.holds_checkpoints(folder):  # not a requeued job continuing its run
            runs.record_created(folder)
        try:
            if multirun:  # Hydra reports a multirun's failed jobs after the last one
                result = run(cfg)
            else:  # in one line, before Hydra would add its own "Error executing job" line
                with user_errors_exit(show_tracebacks=_tracebacks_asked()):
                    result = run(cfg)
        except BaseException as error:
            _remove_created(only=output_dir())
            if multirun:
                log.error("job failed: %s", error if isinstance(error, UserError) else repr(error))
            raise
        finally:
            finish_wandb()
        results = output_dir() / runs.RESULTS
        if results.is_file() and runs.is_rank_zero():
            log.info("results: %s", results)
        return result

    return job


def command(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """``main()`` of the command whose config is ``conf/<config_name>.yaml`` and whose work is
    ``run(cfg)``; its job (and log file) is named after ``run``'s module."""
    job = _job(run)
    job.__module__ = run.__module__  # Hydra names the job (and its .log) after the task's module
    hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(job)

    def main() -> None:
        runs.forget_created()
        with _errors_to_us() as show_tracebacks, user_errors_exit(show_tracebacks):
            try:
                hydra_main()
            except CompactHydraException as error:  # composition: before any folder or file
                if show_tracebacks:
                    raise
                raise SystemExit(f"error: {composition_message(error)}") from None
            except runs.CallbackError as carried:
                raise carried.error from None
        runs.forget_created()

    main.__doc__ = f"``vitlab-{config_name}``: runs ``{run.__module__}.{run.__name__}``."
    main.__module__ = run.__module__
    return main


@contextmanager
def user_errors_exit(show_tracebacks: bool = False) -> Iterator[None]:
    """The error path of every command (and of scripts that run commands' code): a ``UserError`` is
    the last line, ``error: <message>``, and a non-zero exit; any failure removes the folders this
    command created and holds nothing to keep."""
    try:
        yield
    except UserError as error:
        _remove_created()
        if show_tracebacks:
            raise
        raise SystemExit(f"error: {error}") from None
    except BaseException:
        _remove_created()
        raise


def _remove_created(only: Path | None = None) -> None:
    """After a failure: remove (and say so) the folders this command created that hold nothing to keep,
    and stop logging into them (Hydra's job log handler would reopen a removed file at the next line
    logged in this process: a command run in process, as tests and notebooks do)."""
    for removed in runs.remove_created(only):
        log.info("removed %s, which this command created and which holds nothing to keep", removed)
        for logger in (logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)):
            for handler in list(getattr(logger, "handlers", [])):
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(
                    removed
                ):
                    logger.removeHandler(handler)
                    handler.close()


_FULL_ERROR, _OURS = "HYDRA_FULL_ERROR", "VITLAB_SET_HYDRA_FULL_ERROR"


@contextmanager
def _errors_to_us() -> Iterator[bool]:
    """Hydra prints a job's exception itself and exits, unless ``HYDRA_FULL_ERROR`` is set: set it,
    so every error reaches the wrapper, and yield whether the user asked for tracebacks (a process
    this one starts inherits both variables, and so knows the setting was ours)."""
    asked = _tracebacks_asked()
    ours = _FULL_ERROR not in os.environ
    if ours:
        os.environ[_FULL_ERROR] = os.environ[_OURS] = "1"
    try:
        yield asked
    finally:
        if ours:
            os.environ.pop(_FULL_ERROR, None)
            os.environ.pop(_OURS, None)


def _tracebacks_asked() -> bool:
    """``VITLAB_TRACEBACK=1``, or ``HYDRA_FULL_ERROR=1`` set by the user (not by this wrapper)."""
    return os.environ.get("VITLAB_TRACEBACK") == "1" or (
        os.environ.get(_FULL_ERROR) == "1" and not os.environ.get(_OURS)
    )


def composition_message(error: CompactHydraException) -> str:
    """Hydra's composition error in one message: a misspelled key with the closest valid names."""
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(
        cause.parent_node, DictConfig
    ):
        return unknown_option_message(cause.full_key, cause.parent_node, root=cause.parent_node._get_root())
    # Hydra's own message, less the search path it appends to "Could not find" (not the user's concern)
    lines = [str(error).split("\nConfig search path:")[0].rstrip()]
    lines += [str(cause)] if isinstance(cause, OmegaConfBaseException) else []
    return "\n".join(lines)
