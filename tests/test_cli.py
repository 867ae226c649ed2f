"""The command lines users type: train.py as a script, DDP, multirun sweeps, Optuna, W&B sweeps."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RUN
from test_resume import assert_metrics_match_confusion

ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    flags = [o for o in overrides if o.startswith("-")]
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *flags,
        *TINY_RUN,
        f"paths.log_dir={tmp_path / 'logs'}",
        *overrides,
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def wandb_records(run_file: Path):
    """The protobuf records of an offline ``.wandb`` file (LevelDB log format, W&B header)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow
def test_two_cpu_processes_train_with_ddp_and_count_each_test_image_once(tmp_path):
    result = run_train(
        tmp_path,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "data.test_size=17",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=400,
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sum(map(sum, results["test_confusion_matrix"])) == 17  # not 18: no padded duplicate
    assert_metrics_match_confusion(results["metrics"], results["test_confusion_matrix"])  # synced counts
    assert results["global_step"] == 2 * 2  # 48 images / 2 ranks / batch 16 = 2 steps per epoch
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "epoch_001.ckpt",
        "last.ckpt",
    ]
    assert len(list(tmp_path.rglob("results.json"))) == 1  # only rank 0 writes
    assert result.stdout.count("output_dir: ") == 1  # the config tree printed once, not per process


@pytest.mark.slow
def test_multirun_sweep_writes_a_summary_and_groups_its_wandb_runs(tmp_path):
    run_train(tmp_path, "-m", "model.patch_size=8,16", "logger=[csv,wandb]", "test=false")
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    summary = (sweep / "summary.md").read_text().splitlines()
    assert len(summary) == 2 + 2  # header, rule, one row per job
    assert "model.patch_size=8" in summary[2] and "model.patch_size=16" in summary[3]
    groups, configs, val_metrics = set(), [], []
    for job in ("0", "1"):
        (run_file,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")
        for record in wandb_records(run_file):
            if record.HasField("run"):
                groups.add(record.run.run_group)
                configs.append({item.key: json.loads(item.value_json) for item in record.run.config.update})
            if record.HasField("config"):
                configs.append({item.key: json.loads(item.value_json) for item in record.config.update})
            if record.HasField("history"):
                val_metrics += [item.key or "/".join(item.nested_key) for item in record.history.item]
    assert groups == {sweep.name}
    merged = {k: v for config in configs for k, v in config.items()}
    assert merged["model"]["name"] == "vit_ti16" and merged["optimizer"]["lr"] == pytest.approx(1e-3)
    assert "api_key" not in json.dumps(merged).lower()
    # the W&B run's config holds the run's provenance, completed at the end with the data's fingerprints
    assert merged["provenance"]["command"] and merged["provenance"]["data"]["splits"]["train"]["images"] > 0
    assert val_metrics.count("val/acc") == 2  # one validation epoch per job
    assert {"val/predictions/_type", "val/confusion_matrix/_type"} <= set(val_metrics)  # logged tables


@pytest.mark.slow
def test_optuna_search_runs_two_trials(tmp_path):
    run_train(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "test=false")
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    optimisation = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optimisation["name"] == "optuna"
    assert {"optimizer.lr", "optimizer.weight_decay"} <= set(optimisation["best_params"])
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(trials) == 2
    assert optimisation["best_value"] == pytest.approx(max(t["metrics"]["val/acc_best"] for t in trials))


def test_wandb_sweep_command_is_accepted_by_train(compose_config):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep = yaml.safe_load((ROOT / "scripts" / "wandb_sweep.yaml").read_text())
    assert sweep["program"] == "train.py" and "${args_no_hyphens}" in sweep["command"]
    chosen = {
        name: {"value": spec["values"][-1] if "values" in spec else spec["min"]}
        for name, spec in sweep["parameters"].items()
    }
    agent_args = create_sweep_command_args({"args": chosen})["args_no_hyphens"]
    extra = [arg for arg in sweep["command"] if not arg.startswith("${")]
    cfg = compose_config(*agent_args, *extra)
    assert cfg.model.name == sweep["parameters"]["model"]["values"][-1]
    assert cfg.optimizer.lr == pytest.approx(sweep["parameters"]["optimizer.lr"]["min"])
    assert cfg.trainer.max_epochs == 10


def test_invalid_options_fail_before_any_data_loads_and_name_the_option(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=imagefolder",
        f"data.root={tmp_path / 'absent'}",
        "optimizer.lr=-1",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.startswith("error: optimizer.lr=-1: Invalid learning rate")
    assert "Traceback" not in result.stderr
    assert (
        "FileNotFoundError" not in result.stderr and "not found" not in result.stderr
    )  # data never looked at


@pytest.mark.slow
def test_console_script_is_installed():
    script = Path(sys.executable).parent / "vitlab-train"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "model: _options, r50_vit_b16, r50_vit_l32, vit_b16, vit_b32" in result.stdout  # _options: shared
