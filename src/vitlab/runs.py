"""Training run folders: which runs were interrupted, which checkpoint continues them, and how.

A run folder (``<log_dir>/train/runs/<time>/``) holds ``checkpoints/`` and, once the run has tested
and finished, ``results.json``. A folder with a checkpoint and no ``results.json`` is an interrupted
run: ``ckpt_path=last`` continues the newest one, ``ckpt_path=<folder or .ckpt>`` a given one.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from vitlab.checkpoint import read_training_checkpoint
from vitlab.errors import ConfigError, MissingFileError

RESULTS = "results.json"
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run's checkpoint with the highest stored ``global_step``, of any kind (last, exception,
    best); on a tie, one with the optimizer state (the best is weights only), then the newest file."""

    def progress(path: Path) -> tuple[int, bool, float]:
        checkpoint = read_training_checkpoint(path)
        return checkpoint.global_step, checkpoint.has_optimizer_state, path.stat().st_mtime

    return max((run_dir / "checkpoints").glob("*.ckpt"), key=progress, default=None)


def interrupted_runs(runs_dir: Path) -> list[Path]:
    """Single-run folders under ``runs_dir`` with a checkpoint and no results.json, oldest first."""
    runs = [
        run
        for run in runs_dir.glob("*")
        if run.is_dir() and not (run / RESULTS).exists() and any((run / "checkpoints").glob("*.ckpt"))
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
