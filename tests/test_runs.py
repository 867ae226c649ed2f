"""Run folders: which run ``ckpt_path=last`` continues, and from which of its checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vitlab.errors import ConfigError
from vitlab.runs import earlier_metrics, interrupted_runs, newest_checkpoint, resolve_resume


def fake_run(runs: Path, name: str, steps: dict[str, int], finished: bool = False, age: float = 0) -> Path:
    """A run folder with checkpoints of the given global steps (``age``: seconds in the past)."""
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    for file, step in steps.items():
        path = run / "checkpoints" / file
        torch.save({"global_step": step, "state_dict": {}, "optimizer_states": [{}]}, path)
        os.utime(path, (path.stat().st_mtime - age,) * 2)
    if finished:
        (run / "results.json").write_text("{}")
    return run


def test_last_continues_the_newest_interrupted_single_run(tmp_path):
    runs = tmp_path / "train" / "runs"
    older = fake_run(runs, "a", {"last.ckpt": 9}, age=100)
    fake_run(runs, "b", {"last.ckpt": 9}, finished=True)  # finished: not to continue
    (runs / "c").mkdir()  # no checkpoint: nothing to continue
    fake_run(tmp_path / "train" / "multiruns" / "m", "0", {"last.ckpt": 3})  # a sweep job: never picked
    assert interrupted_runs(runs) == [older]
    assert resolve_resume("last", runs) == (older / "checkpoints" / "last.ckpt", older.resolve())


def test_within_a_run_the_checkpoint_with_the_highest_step_wins_whatever_its_kind(tmp_path):
    run = fake_run(tmp_path, "r", {"last.ckpt": 3, "on_exception.ckpt": 5, "epoch_000.ckpt": 3})
    assert newest_checkpoint(run).name == "on_exception.ckpt"
    assert resolve_resume(str(run), tmp_path)[0].name == "on_exception.ckpt"


def test_a_best_checkpoint_without_optimizer_state_loses_a_tie(tmp_path):
    run = fake_run(tmp_path, "r", {"last.ckpt": 3}, age=100)
    torch.save({"global_step": 3, "state_dict": {}}, run / "checkpoints" / "epoch_000.ckpt")  # newer
    assert newest_checkpoint(run).name == "last.ckpt"


def test_resume_errors_name_the_option_and_the_fix(tmp_path):
    with pytest.raises(
        ConfigError, match=r"ckpt_path=last: no interrupted run under .*ckpt_path=/path/to/run"
    ):
        resolve_resume("last", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*absent: no such checkpoint file or run folder"):
        resolve_resume(str(tmp_path / "absent"), tmp_path)
    (tmp_path / "weights.pth").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(
        ConfigError, match=r"weights.pth is not a Lightning checkpoint written by vitlab-train"
    ):
        resolve_resume(str(tmp_path / "weights.pth"), tmp_path)


def test_earlier_metrics_keep_the_rows_up_to_the_checkpoint_step(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss\n0,0,1.0\n0,1,0.9\n0,2,0.8\n0,3,0.7\n"
    )
    header, rows = earlier_metrics(tmp_path, up_to_step=2)
    assert header == ["epoch", "step", "train/loss"]
    assert [row["step"] for row in rows] == ["0", "1", "2"]  # steps 3+ are trained (and logged) again
