"""Offline W&B runs that can be reviewed elsewhere: every file a run's records point to lies inside
its run folder, and wandb's global staging folder does not grow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import wandb_records

from vitlab.train import train


def referenced_files(run_file: Path) -> dict[str, Path]:
    """The local files an offline run's records point to, by their name in the run: artifact
    contents (a table's images and JSON) by absolute path, media files relative to ``files/``."""
    found = {}
    for record in wandb_records(run_file):
        if record.HasField("artifact"):
            contents = record.artifact.manifest.contents
            found |= {entry.path: Path(entry.local_path) for entry in contents if entry.local_path}
        if record.HasField("files"):
            found |= {item.path: run_file.parent / "files" / item.path for item in record.files.files}
    return found


@pytest.mark.slow
def test_an_offline_wandb_run_folder_holds_every_media_file_it_points_to(
    compose_config, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user_data"))  # wandb's default staging root
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    cfg = compose_config("logger=[csv,wandb]", "test=false")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    files = referenced_files(run_file)
    assert any(name.endswith(".png") for name in files)  # the sample predictions' images and overlays
    copy = shutil.copytree(run_dir, tmp_path / "elsewhere")
    for file in files.values():
        assert file.resolve().is_relative_to(run_dir.resolve()), f"{file} lies outside the run folder"
        assert (copy / file.resolve().relative_to(run_dir.resolve())).is_file()
    staged = list((tmp_path / "user_data").rglob("*")) if (tmp_path / "user_data").exists() else []
    assert [p for p in staged if p.is_file()] == []
    assert "WANDB_DATA_DIR" not in os.environ  # restored when the run ended


# Another program's W&B run held open under ``RUN_ID``; prints its service token and, when given a
# command, runs it as its child (which inherits the token, as W&B's own workers do).
HOLDER = """
import os, subprocess, sys, wandb
wandb.init(mode="offline", id=sys.argv[2], dir=sys.argv[1], project="vitlab")
print(os.environ["WANDB_SERVICE"], flush=True)
if len(sys.argv) > 3:
    sys.exit(subprocess.run(sys.argv[3:]).returncode)
sys.stdin.read()
"""
# A vitlab run resuming W&B run ``RUN_ID`` (as a requeued SLURM job does) and logging one metric.
RESUMER = """
import sys
from omegaconf import OmegaConf
from vitlab.loggers import build_loggers, finish_wandb
options = dict(_target_="lightning.pytorch.loggers.WandbLogger", project="vitlab", save_dir=sys.argv[1],
               id=sys.argv[2], resume="allow")
(logger,) = build_loggers(OmegaConf.create({"wandb": options}), run_name="r", group=None, config={})
logger.log_metrics({"x": 1.0}, step=0)
print("logged into", logger.experiment.id)
finish_wandb()
"""
RUN_ID = "heldrun1"


def _wandb_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return env | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_a_job_launched_by_another_wandb_program_resumes_its_run_in_a_service_of_its_own(tmp_path):
    # The requeued-SLURM-job failure: the submitting program's service still held the preempted
    # job's run id, and the requeued job, inheriting WANDB_SERVICE, was told "run ID ... is in use".
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "other"), RUN_ID],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_wandb_env(),
    )
    try:
        token = holder.stdout.readline().strip()
        assert token, "the holder did not start its W&B run"
        job = subprocess.run(
            [sys.executable, "-c", RESUMER, str(tmp_path / "job"), RUN_ID],
            capture_output=True,
            text=True,
            env=_wandb_env() | {"WANDB_SERVICE": token},
            timeout=300,
        )
    finally:
        holder.communicate(input="", timeout=120)
    assert job.returncode == 0, job.stderr[-3000:]
    assert f"logged into {RUN_ID}" in job.stdout
    assert "could not start" not in job.stderr  # no fallback was needed
    (run_dir,) = (tmp_path / "job" / "wandb").glob(f"offline-run-*-{RUN_ID}")
    assert [r for r in wandb_records(next(run_dir.glob("*.wandb"))) if r.HasField("history")]


@pytest.mark.slow
def test_a_run_whose_id_is_held_in_its_parents_service_starts_again_rather_than_fail(tmp_path):
    # A child shares its parent's service by design; if that service holds the id, the logger
    # starts a service of its own and the run goes on, never failing for W&B's sake.
    child = [sys.executable, "-c", RESUMER, str(tmp_path / "job"), RUN_ID]
    holder = subprocess.run(
        [sys.executable, "-c", HOLDER, str(tmp_path / "parent"), RUN_ID, *child],
        capture_output=True,
        text=True,
        env=_wandb_env(),
        timeout=300,
    )
    assert holder.returncode == 0, holder.stderr[-3000:]
    assert f"logged into {RUN_ID}" in holder.stdout
    assert f"run ID {RUN_ID} is in use" in holder.stderr  # the first attempt did meet the held id
    assert list((tmp_path / "job" / "wandb").glob(f"offline-run-*-{RUN_ID}"))


def test_the_tensorboard_logger_writes_its_event_file_into_the_run_folder(compose_config):
    cfg = compose_config("logger=tensorboard", "test=false")
    train(cfg)
    (events,) = (Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*")
    assert events.stat().st_size > 0
