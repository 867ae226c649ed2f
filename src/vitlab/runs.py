"""Run folders: the one this command owns, which runs were interrupted or finished, and how one
continues.

Every command claims a folder of its own (``<log_dir>/<task>/runs/<time>[_N]/``, multiruns
``.../multiruns/<time>[_N]/``) with an atomic ``mkdir``, so commands started in the same second never
share one, and records it: on failure the command removes exactly what it created. A training run
folder holds ``checkpoints/`` and, once the run has tested and finished, ``results.json`` (a debug
run: ``debug_results.json``). A folder with a checkpoint and neither is an interrupted run:
``ckpt_path=last`` continues the newest one, ``ckpt_path=<folder or .ckpt>`` a given one.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, read_write

from vitlab.checkpoint import read_training_checkpoint
from vitlab.errors import ConfigError, ExistingFileError, MissingFileError

log = logging.getLogger(__name__)

RESULTS = "results.json"
VALIDATION_IS_TEST = "test split"  # results.json's "validation" when the test split validated
DEBUG_RESULTS = "debug_results.json"  # a debug run's (vitlab.train.debug_run): never a result
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"

# ----------------------------------------------------------------------------------------------
# The folders this command created


_created: list[Path] = []


def claim_folder(base: Path) -> Path:
    """A new folder named ``base`` or, when that is taken, ``base_1``, ``base_2``, ...: created with an
    atomic ``mkdir`` (never by waiting), and recorded as this command's own."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(10_000):
        folder = base if suffix == 0 else base.with_name(f"{base.name}_{suffix}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        record_created(folder)
        return folder
    raise ExistingFileError(f"{base}: 10000 folders of that name exist; clean up {base.parent}.")


def forget_created() -> None:
    """A command starts, or ended well: nothing it created is to be removed any more."""
    _created.clear()


def record_created(folder: Path) -> None:
    """Record a folder this command made (e.g. a multirun job's), to be removed if the command fails."""
    _created.append(folder.resolve())


def keep(folder: Path) -> None:
    """The folder now holds work worth keeping (a checkpoint): a failure no longer removes it."""
    resolved = folder.resolve()
    _created[:] = [path for path in _created if path != resolved]


def remove_created(only: Path | None = None) -> list[Path]:
    """Remove the folders this command created (or just ``only``, if it is one of them) and that hold
    no kept run; a sweep folder stays while any job folder is left in it. Rank 0 only."""
    if not is_rank_zero():
        return []
    removed = []
    for folder in sorted(_created, key=lambda path: len(path.parts), reverse=True):  # jobs first
        if only is not None and folder != only.resolve():
            continue
        _created.remove(folder)
        if folder.is_dir() and not any(path.is_dir() and path.name.isdigit() for path in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _in_ddp_child() -> bool:
    """A process Lightning started for another device: its folder is rank 0's, never its own."""
    return "LOCAL_RANK" in os.environ and os.environ["LOCAL_RANK"] != "0"


def is_rank_zero() -> bool:
    """Whether this process writes the run's files (rank 0, not a DDP child)."""
    return rank_zero_only.rank == 0 and not _in_ddp_child()


def holds_checkpoints(folder: Path) -> bool:
    return any((folder / "checkpoints").glob("*.ckpt"))


def holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` already holds another command's run (its config, checkpoints or results)."""
    return folder.is_dir() and any(
        (folder / name).exists() for name in (".hydra", "checkpoints", RESULTS, "multirun.yaml")
    )


class CallbackError(BaseException):
    """Carries a ``UserError`` out of a Hydra callback, past Hydra's guard that turns a callback's
    ``Exception`` into a warning; the command wrapper raises ``error`` in its place."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class RunFolder(HydraCallback):
    """Gives each command a run (or sweep) folder of its own before Hydra writes anything into it.

    The default ``hydra.run.dir`` / ``hydra.sweep.dir`` (a time stamp) is claimed with a suffix when
    taken; a folder named on the command line (``hydra.run.dir=...``) that holds another run is
    refused (``ckpt_path=`` is how a run continues in its folder)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "sweep")

    @staticmethod
    def _claim(config: DictConfig, kind: str) -> None:
        if "LOCAL_RANK" in os.environ:  # a DDP process Lightning started: rank 0 owns the folder
            return
        key = f"hydra.{kind}.dir"
        node = config.hydra[kind]
        folder = Path(str(node.dir))
        named = any(o.split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)
        if named:
            if holds_a_run(folder):
                raise CallbackError(
                    ExistingFileError(
                        f"{key}={folder} already holds another run: give a new folder, or leave {key} "
                        "out for a fresh one (continue a run in its own folder with ckpt_path=<its folder>)."
                    )
                )
            if not folder.exists():
                folder.mkdir(parents=True)
                record_created(folder)
            return
        claimed = claim_folder(folder)
        with read_write(node):
            node.dir = str(claimed)


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run's checkpoint with the highest stored ``global_step``, of any kind (last, exception,
    best); on a tie, one with the optimizer state (the best is weights only), then the newest file."""

    def progress(path: Path) -> tuple[int, bool, float]:
        checkpoint = read_training_checkpoint(path)
        return checkpoint.global_step, checkpoint.has_optimizer_state, path.stat().st_mtime

    return max((run_dir / "checkpoints").glob("*.ckpt"), key=progress, default=None)


def interrupted_runs(runs_dir: Path) -> list[Path]:
    """Single-run folders under ``runs_dir`` with a checkpoint and no results (a finished debug run's
    included), oldest first."""
    runs = [
        run
        for run in runs_dir.glob("*")
        if run.is_dir()
        and not any((run / name).exists() for name in (RESULTS, DEBUG_RESULTS))
        and any((run / "checkpoints").glob("*.ckpt"))
    ]
    return sorted(runs, key=lambda run: max(p.stat().st_mtime for p in (run / "checkpoints").glob("*.ckpt")))


def run_folder(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), if it is one of ours."""
    run = checkpoint.resolve().parent.parent
    return run if (run / HYDRA_OVERRIDES).is_file() else None


def resolve_resume(ckpt_path: str, runs_dir: Path) -> tuple[Path, Path | None]:
    """``(checkpoint file, run folder or None)`` for ``ckpt_path=last``, a run folder or a .ckpt file."""
    if ckpt_path == "last":
        runs = interrupted_runs(runs_dir)
        if not runs:
            raise ConfigError(
                f"ckpt_path=last: no interrupted run under {runs_dir} (a run folder with a checkpoint and "
                "no results.json). Pass a run folder or a .ckpt file: ckpt_path=/path/to/run."
            )
        path = runs[-1]
    else:
        path = Path(ckpt_path).expanduser()
    if path.is_dir():
        checkpoint = newest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(
                f"ckpt_path={path}: the folder holds no checkpoints/*.ckpt. Pass a run folder of "
                f"{runs_dir} or a .ckpt file."
            )
        return checkpoint, path.resolve()
    if not path.is_file():
        raise MissingFileError(
            f"ckpt_path={ckpt_path}: no such checkpoint file or run folder. Pass a .ckpt file, a run "
            "folder, or ckpt_path=last for the newest interrupted run."
        )
    read_training_checkpoint(path)  # a file that is not a checkpoint fails here, in one line
    return path, run_folder(path)


def finished_results(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's results.json, or None if the run did not finish."""
    results = run_dir / RESULTS
    return json.loads(results.read_text()) if results.is_file() else None


def set_aside_name(results: dict[str, Any]) -> str:
    """``results_step<N>.json``: where a finished run's results go when it is trained further."""
    return f"results_step{results.get('global_step', 0)}.json"


def set_aside_results(run_dir: Path) -> None:
    """Keep a finished run's results beside the ones its continuation will write."""
    results = finished_results(run_dir)
    if results is not None and is_rank_zero():
        (run_dir / RESULTS).rename(run_dir / set_aside_name(results))


def save_overrides(run_dir: Path, overrides: list[str]) -> None:
    """Record the overrides a continued run now runs with, as Hydra recorded the first ones."""
    if rank_zero_only.rank == 0:
        (run_dir / HYDRA_OVERRIDES).write_text(yaml.safe_dump(list(overrides)))


def resume_command(run_dir: Path) -> str:
    """The command line that continues the run in ``run_dir``, as the user started this one."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "vitlab-train"
    launcher = f"python {sys.argv[0]}" if program.endswith(".py") else program
    return f"{launcher} ckpt_path={run_dir}"


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the W&B run logged in ``run_dir`` (``wandb/[offline-]run-<time>-<id>``), if any."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def earlier_metrics(run_dir: Path, up_to_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of the run's csv/metrics.csv up to ``up_to_step`` (the checkpoint's step):
    Lightning's CSV logger deletes the file when it starts, and later rows will be logged again."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if not row.get("step") or int(row["step"]) <= up_to_step]
        return list(reader.fieldnames or []), rows


@rank_zero_only  # other ranks' CSV loggers have no file (a DDP job under SLURM runs this on every rank)
def keep_earlier_metrics(loggers: list, header: list[str], rows: list[dict[str, str]]) -> None:
    """Put the earlier rows back into each CSV logger's metrics.csv; new rows are appended to them."""
    for logger in loggers:
        if isinstance(logger, CSVLogger) and header:
            writer = logger.experiment
            with open(writer.metrics_file_path, "w", newline="") as handle:
                out = csv.DictWriter(handle, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = list(header)  # new columns make the writer rewrite the file with them
