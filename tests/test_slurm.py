"""SLURM: the launcher's resource requests, and the README's command on a real local cluster, with a
job preempted mid-run that is checkpointed, requeued and resumed to the same end."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONFIG_DIR, TINY_RUN
from hydra import compose, initialize_config_dir
from lightning.fabric.plugins.environments import SLURMEnvironment

from vitlab.slurm import REQUEUE_CHECKPOINT, RequeueOnSignal, fresh_main_port_after_requeue, requeued_run
from vitlab.train import continue_run, train

# With pytest-xdist, one worker runs every test of the session's local cluster (and starts it once).
pytestmark = pytest.mark.xdist_group("slurm")

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def slurm_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["launcher=slurm", *overrides], return_hydra_config=True)


def launcher_config(*overrides: str):
    return slurm_config(*overrides).hydra.launcher


def test_slurm_jobs_ask_for_gpus_unless_the_trainer_runs_on_cpus():
    gpu = launcher_config("trainer=ddp", "trainer.num_nodes=2", "trainer.devices=8")
    assert (gpu.nodes, gpu.tasks_per_node, gpu.gpus_per_node) == (2, 8, 8)
    cpu = launcher_config("trainer=ddp", "trainer.accelerator=cpu", "data.num_workers=3")
    assert (cpu.tasks_per_node, cpu.gpus_per_node) == (2, None)
    assert cpu.cpus_per_task == 3 + 1  # the training process and its loader workers


def test_each_restart_of_a_requeued_job_listens_on_a_port_of_its_own(monkeypatch):
    # The first run's rank 0 may still hold Lightning's port, derived from the (unchanged) job id.
    monkeypatch.setattr(os, "environ", dict(os.environ))  # Lightning sets MASTER_PORT: none may leak
    monkeypatch.setenv("SLURM_JOB_ID", "81234")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert fresh_main_port_after_requeue() is None
    first = SLURMEnvironment().main_port
    monkeypatch.delenv("MASTER_PORT")
    ports = []
    for restart in ("1", "2"):
        monkeypatch.setenv("SLURM_RESTART_COUNT", restart)
        monkeypatch.delenv("MASTER_PORT", raising=False)
        ports.append(fresh_main_port_after_requeue())
        assert SLURMEnvironment().main_port == ports[-1]  # what Lightning's DDP then listens on
    assert len({first, *ports}) == 3 and all(25000 <= p < 32000 for p in ports)
    monkeypatch.setenv("MASTER_PORT", "12345")  # the user's port is kept
    assert fresh_main_port_after_requeue() is None and SLURMEnvironment().main_port == 12345


def test_the_requeue_signal_is_one_the_loader_workers_ignore():
    with pytest.raises(ValueError, match="signal_name=TERM: use USR1 or USR2, which the data-loader"):
        RequeueOnSignal("TERM")  # SLURM would signal the workers too, and they would die of it


@pytest.mark.slow  # three short trainings
def test_a_signalled_run_checkpoints_requeues_its_job_and_the_requeued_run_ends_at_the_same_step(
    compose_config, monkeypatch
):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    commands, run = [], subprocess.run
    monkeypatch.setattr(
        subprocess, "run", lambda c, **kw: commands.append(c) if c[0] == "scontrol" else run(c, **kw)
    )

    class SignalAtStep(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM before a time limit, or scancel --signal

    cfg = compose_config(
        "launcher=slurm", "callbacks.requeue_on_signal.check_every_n_steps=1", "trainer.max_epochs=2"
    )
    output_dir = Path(cfg.paths.output_dir)
    before = signal.getsignal(signal.SIGUSR2)
    with pytest.raises(SystemExit):
        train(cfg, callbacks=[SignalAtStep()])
    assert commands == [["scontrol", "requeue", "1234"]]
    assert signal.getsignal(signal.SIGUSR2) is before  # handed back when the run stopped
    assert requeued_run(output_dir)
    checkpoint = output_dir / "checkpoints" / REQUEUE_CHECKPOINT
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2  # the step after the signal

    cfg.ckpt_path = str(output_dir)  # what train.py's main sets for a requeued job's run folder
    cfg, overrides = continue_run(cfg)
    resumed = train(cfg, overrides=overrides)
    uninterrupted = train(
        compose_config("trainer.max_epochs=2", f"paths.output_dir={output_dir.parent / 'alone'}")
    )
    assert resumed["global_step"] == uninterrupted["global_step"]
    assert commands == [["scontrol", "requeue", "1234"]]


def readme_slurm_command() -> list[str]:
    """The README's SLURM line for CPU nodes, as typed, in a tiny run: one block of each model, and
    the loader workers of every image dataset (``data.num_workers=null``, which the tiny run's data
    sets to 0), so each task asks its share of the node by ``sinfo``, as with nothing else set."""
    lines = (ROOT / "README.md").read_text().splitlines()
    line = next(line for line in lines if line.startswith("python train.py -m launcher=slurm trainer.acc"))
    words = line.split("#")[0].split()
    assert words[:2] == ["python", "train.py"], line
    return [*words[2:], *TINY_RUN, "model.depth=1", "data.num_workers=null"]


@pytest.fixture
def sinfo_prints(tmp_path, monkeypatch):
    """``sinfo_prints(lines)``: an ``sinfo`` first on PATH that prints ``lines`` ("%P %c %m %G": the
    partition, CPUs, memory in MB and GRES of each kind of node)."""

    def install(lines: str) -> None:
        script = tmp_path / "bin" / "sinfo"
        script.parent.mkdir(exist_ok=True)
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")

    return install


@pytest.mark.parametrize(
    ("nodes", "devices", "cpus"),
    [("debug* 2 7000 (null)", 2, 1), ("debug* 2 7000 (null)", 1, 2), ("cpu* 64+ 250000 (null)", 2, 8)],
)
def test_cpu_jobs_ask_for_their_share_of_a_node_of_the_partition(sinfo_prints, nodes, devices, cpus):
    sinfo_prints(f"gpu 32 500000 gpu:a100:4(S:0-1)\n{nodes}")
    launcher = launcher_config("trainer.accelerator=cpu", f"trainer.devices={devices}")
    assert launcher.cpus_per_task == cpus  # the process and its loader workers (at most 8 in all)


def test_without_sinfo_jobs_ask_for_eight_cpus_per_task(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launcher_config("trainer.accelerator=cpu", "trainer.devices=2").cpus_per_task == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.num_workers=3"],
            "hydra.launcher.cpus_per_task=4 x 2 task(s) per node (trainer.devices) asks 8 CPUs per node, "
            "but the nodes of the default partition have at most 2: the jobs could never start. Lower "
            "data.num_workers",
        ),
        (["hydra.launcher.mem_gb=16"], "hydra.launcher.mem_gb=16 asks 16 GB per node, but the nodes of"),
        (
            ["trainer.accelerator=gpu", "hydra.launcher.partition=debug"],
            "gpus_per_node=2 asks that many GPUs per node, but the nodes of partition debug have at most 0",
        ),
    ],
)
def test_a_job_no_node_can_run_is_refused_before_it_is_submitted(
    sinfo_prints, run_command, overrides, message
):
    from vitlab.train import main

    sinfo_prints("debug* 2 7000 (null)")
    error = run_command(main, "-m", *TINY_RUN, "launcher=slurm", "trainer.devices=2", *overrides)
    assert isinstance(error, str) and error.startswith("error: ") and message in error, error


def test_a_warning_submitit_repeats_on_every_poll_is_said_once(sinfo_prints, caplog):
    from vitlab.slurm import BeforeSubmitting

    sinfo_prints("debug* 2 7000 (null)")
    submitit = logging.getLogger("submitit")
    before = list(submitit.filters)
    try:
        BeforeSubmitting().on_multirun_start(slurm_config(*TINY_RUN))
        for call in range(3):
            submitit.warning(f"Call #{call} - Bypassing sacct error boom, status may be inaccurate.")
        submitit.warning("another warning")
    finally:
        submitit.filters = before
    assert caplog.text.count("Bypassing sacct error") == 1 and "another warning" in caplog.text


@pytest.fixture(scope="module")
def preempted_sweep(slurm_cluster, tmp_path_factory) -> Path:
    """Runs the README's SLURM command for CPU nodes on the local cluster (2 jobs, each DDP over 2
    CPU tasks that together ask the whole node, so they run one after the other); job 0 gets
    ``scancel --signal=USR2`` in its second epoch, as SLURM warns before a preemption: every process
    of the job, its loader workers too (with ``num_workers=0`` there were none to get it)."""
    tmp = tmp_path_factory.mktemp("slurm_sweep")
    env = {
        **os.environ,  # with pytest's own WANDB_SERVICE, as from a notebook: each job starts its own
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),  # PauseAtStep
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MASTER_PORT", None)  # one left by an in-process Lightning run would send both jobs to one port
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *readme_slurm_command(),
        "data.train_size=96",  # 3 steps per epoch on each of 2 ranks
        "data.test_size=17",  # odd: a padded duplicate test image would show
        "trainer.max_epochs=2",
        "logger=[csv,wandb]",
        "callbacks.requeue_on_signal.check_every_n_steps=1",
        "+callbacks.pause._target_=slurm_cluster.PauseAtStep",
        "+callbacks.pause.step=4",  # the first step of epoch 2
        f"paths.log_dir={tmp / 'logs'}",
    ]
    log = open(tmp / "sweep.log", "w")  # noqa: SIM115
    sweep = subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    signalled = False
    try:
        deadline = time.monotonic() + 900  # generous: a loaded 2-core machine is slow
        while sweep.poll() is None:
            assert time.monotonic() < deadline, (tmp / "sweep.log").read_text()[-3000:]
            for marker in tmp.glob("logs/train/multiruns/*/*/paused"):  # a job at step 4
                if marker.parent.name == "0" and not signalled:
                    sweep_dir = marker.parents[1]
                    (job_0,) = [p.name for p in (sweep_dir / ".submitit").iterdir() if p.name.endswith("_0")]
                    subprocess.run(["scancel", "--signal=USR2", job_0], env=slurm_cluster.env, check=True)
                    time.sleep(2)  # let the signal land before rank 0 goes on
                    signalled = True
                marker.unlink()
            time.sleep(1)
        assert sweep.returncode == 0 and signalled, (tmp / "sweep.log").read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
            subprocess.run(["scancel", "--full", "--partition=debug"], env=slurm_cluster.env)
    (sweep_dir,) = (tmp / "logs" / "train" / "multiruns").iterdir()
    return sweep_dir


def results(sweep_dir: Path, job: str) -> dict:
    return json.loads((sweep_dir / job / "results.json").read_text())


@pytest.mark.slow
def test_the_readme_slurm_command_runs_two_jobs_each_ddp_over_two_tasks(preempted_sweep, slurm_cluster):
    summary = (preempted_sweep / "summary.md").read_text().splitlines()
    assert len(summary) == 2 + 2  # header, rule, one row per job
    assert sorted(p.parent.name for p in preempted_sweep.rglob("results.json")) == ["0", "1"]
    (script,) = (preempted_sweep / ".submitit").glob("*/*_submission.sh")  # one job array
    assert "--ntasks-per-node=2" in script.read_text() and "gpus" not in script.read_text()
    # each task's share of the node (by sinfo), not 8: asked for more than the node has, the jobs
    # would pend (Reason=PartitionConfig) while the sweep waited without a word
    (cpus,) = map(int, re.findall(r"#SBATCH --cpus-per-task=(\d+)", script.read_text()))
    node_cpus = int(
        subprocess.run(
            ["sinfo", "-h", "-o", "%c"], env=slurm_cluster.env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert cpus == node_cpus // 2 > 1  # 2 tasks; more than the tiny run's 0 workers + 1
    assert "export SLURM_KILL_BAD_EXIT=1" in script.read_text()  # one failed task ends the job
    for job in ("0", "1"):
        (job_folder,) = (preempted_sweep / ".submitit").glob(f"*_{job}")
        assert sorted(p.name.split("_")[-2] for p in job_folder.glob("*_log.out")) == ["0", "1"]  # 2 tasks


@pytest.mark.slow
def test_test_metrics_of_slurm_jobs_count_every_test_image_once_across_ranks(preempted_sweep):
    for job in ("0", "1"):
        run = results(preempted_sweep, job)
        matrix = run["test_confusion_matrix"]
        assert sum(map(sum, matrix)) == 17  # both ranks' halves, no padded duplicate
        correct = sum(matrix[i][i] for i in range(len(matrix)))
        assert run["metrics"]["test/acc"] == pytest.approx(correct / 17)


@pytest.mark.slow
def test_a_job_signalled_mid_run_is_requeued_and_ends_at_the_same_step_as_one_left_alone(preempted_sweep):
    preempted, left_alone = results(preempted_sweep, "0"), results(preempted_sweep, "1")
    assert (preempted_sweep / "0" / "checkpoints" / REQUEUE_CHECKPOINT).is_file()
    assert not (preempted_sweep / "1" / "checkpoints" / REQUEUE_CHECKPOINT).exists()
    job_log = "".join(p.read_text() for p in (preempted_sweep / ".submitit").glob("*_0/*_0_log.*"))
    assert job_log.index("signalled: checkpoint") < job_log.index(
        "job requeued (restart 1): continuing its run"
    )
    assert preempted["global_step"] == left_alone["global_step"] > 4  # past the step it was stopped at
    assert preempted["epochs"] == left_alone["epochs"]


@pytest.mark.slow
def test_a_requeued_job_keeps_its_earlier_metrics_and_its_wandb_run(preempted_sweep):
    rows = (preempted_sweep / "0" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {
        row.split(",")[header.index("epoch")] for row in rows[1:] if row.split(",")[header.index("val/acc")]
    }
    assert epochs == {"0", "1"}  # epoch 0's validation was logged before the requeue
    # one W&B run: each process writes its own offline folder, all under the run's one id
    run_ids = {p.name.rsplit("-", 1)[-1] for p in (preempted_sweep / "0" / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1
