"""Offline W&B runs that can be reviewed elsewhere: every file a run's records point to lies inside
its run folder, and wandb's global staging folder does not grow."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
