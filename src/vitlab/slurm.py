"""Running on SLURM: resource requests derived from the run's config, and surviving preemption and
time limits by checkpointing, requeueing and resuming the same run.

SLURM warns a job with a signal (``USR2`` from submitit's ``--signal=USR2@<signal_delay_s>``, or
``scancel --signal=USR2``) before it preempts it or its time runs out. :class:`RequeueOnSignal`
replaces submitit's handler for that signal while fitting, because submitit's only resubmits the job
from scratch (and gives up on time limits). At the next step boundary all ranks agree, write
``checkpoints/requeue.ckpt`` in the run folder, and rank 0 requeues the job. The requeued job runs
the same config in the same run folder, which :func:`requeued_run` tells train.py to continue, as
``ckpt_path=<run folder>`` would. SLURM signals every process of the job's tasks: the data-loader
workers ignore the signal (``vitlab.data.datamodule.WARNING_SIGNALS``), or they would die of it or run
submitit's handler, inherited from the training process, and requeue the job from scratch.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from vitlab.data.datamodule import WARNING_SIGNALS
from vitlab.errors import ConfigError
from vitlab.loggers import finish_wandb
from vitlab.runs import CallbackError

log = logging.getLogger(__name__)

REQUEUE_CHECKPOINT = "requeue.ckpt"


MAX_CPUS_PER_TASK = 8  # when the loader workers follow the CPUs: the process and 7 workers


@dataclass(frozen=True)
class NodeSize:
    """The most one node of a partition has (``sinfo``): CPUs, memory in GB, GPUs."""

    cpus: int
    mem_gb: float
    gpus: int


def _number(field: str) -> int:
    """``sinfo``'s count, ``+`` marking nodes that differ (``4+``: 4 or more)."""
    return int(field.rstrip("+")) if field.rstrip("+").isdigit() else 0


def partition_node_size(partition: str | None) -> NodeSize | None:
    """The largest node of ``partition`` (None: the default partition), or None without ``sinfo``."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    command = [sinfo, "-h", "-o", "%P %c %m %G", *(["-p", partition] if partition else [])]
    try:
        lines = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split() for line in lines.splitlines() if len(line.split()) >= 3]
    if not partition and any(row[0].endswith("*") for row in rows):
        rows = [row for row in rows if row[0].endswith("*")]
    if not rows:
        return None
    gpus = [sum(map(int, re.findall(r"gpu(?::[^:,(]+)?:(\d+)", " ".join(row[3:])))) for row in rows]
    return NodeSize(
        max(_number(row[1]) for row in rows), max(_number(row[2]) for row in rows) / 1024, max(gpus)
    )


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """One GPU per device, unless the run is on CPUs (then none are requested)."""
    return None if accelerator == "cpu" else devices


def cpus_per_task(num_workers: int | None, partition: str | None = None, tasks_per_node: Any = 1) -> int:
    """The training process plus its data-loader workers; when the workers follow the CPUs, this
    task's share of a node of ``partition`` (at most 8), so that a small cluster can run the job."""
    if num_workers is not None:
        return num_workers + 1
    node = partition_node_size(partition)
    if node is None or node.cpus == 0:
        return MAX_CPUS_PER_TASK
    tasks = tasks_per_node if isinstance(tasks_per_node, int) and tasks_per_node > 0 else 1
    return max(1, min(MAX_CPUS_PER_TASK, node.cpus // tasks))


def check_fits_partition(launcher: Any) -> None:
    """A job asking more per node than any node of its partition has would pend forever (Reason
    PartitionConfig) while the sweep waits without a word: refuse it before submitting."""
    node = partition_node_size(launcher.get("partition"))
    if node is None:
        return
    where = f"partition {launcher.get('partition')}" if launcher.get("partition") else "the default partition"
    tasks = launcher.get("tasks_per_node") or 1
    cpus = (launcher.get("cpus_per_task") or 1) * tasks
    asks = [
        (
            cpus,
            node.cpus,
            f"hydra.launcher.cpus_per_task={launcher.get('cpus_per_task')} x {tasks} task(s) per node "
            f"(trainer.devices) asks {cpus} CPUs",
            "lower data.num_workers (the task's CPUs are its workers + 1) or trainer.devices",
        ),
        (
            launcher.get("mem_gb") or 0,
            node.mem_gb,
            f"hydra.launcher.mem_gb={launcher.get('mem_gb')} asks {launcher.get('mem_gb')} GB",
            "lower hydra.launcher.mem_gb (null: the cluster's default)",
        ),
        (
            launcher.get("gpus_per_node") or 0,
            node.gpus,
            f"hydra.launcher.gpus_per_node={launcher.get('gpus_per_node')} asks that many GPUs",
            "lower trainer.devices, choose a GPU partition (hydra.launcher.partition=...), or train on "
            "CPUs with trainer.accelerator=cpu",
        ),
    ]
    for asked, has, what, fix in asks:
        if asked > has:
            raise ConfigError(
                f"{what} per node, but the nodes of {where} have at most {has:g}: the jobs could never "
                f"start. {fix[0].upper()}{fix[1:]}."
            )


class FirstOnly(logging.Filter):
    """Lets the first record holding ``text`` through and drops the rest: a warning that comes back
    on every poll is said once."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        first, self.seen = not self.seen, True
        return first


class BeforeSubmitting(HydraCallback):
    """Hydra callback of ``launcher=slurm``: refuses jobs no node of the partition can run, and says
    submitit's "Bypassing sacct error" (every poll, on clusters without accounting) once."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        submitit = logging.getLogger("submitit")
        if not any(isinstance(f, FirstOnly) for f in submitit.filters):
            submitit.addFilter(FirstOnly("Bypassing sacct error"))
        try:
            check_fits_partition(config.hydra.launcher)
        except ConfigError as error:
            raise CallbackError(error) from None


OmegaConf.register_new_resolver("slurm_gpus_per_node", gpus_per_node, replace=True)
OmegaConf.register_new_resolver("slurm_cpus_per_task", cpus_per_task, replace=True)


def requeued_run(output_dir: Path) -> bool:
    """Whether ``output_dir`` is the run folder of a job that was requeued after a checkpoint."""
    path = output_dir / "checkpoints" / REQUEUE_CHECKPOINT
    if path.is_file():
        log.info(
            "job requeued (restart %s): continuing its run %s",
            os.environ.get("SLURM_RESTART_COUNT", "?"),
            output_dir,
        )
    return path.is_file()


def fresh_main_port_after_requeue() -> int | None:
    """A requeued job keeps its job id, from which Lightning derives the DDP port (15000 + its last
    four digits). On the same node the job's previous run may still hold that port (processes still
    dying, the socket in TIME_WAIT): rank 0 then fails with EADDRINUSE while the other ranks wait
    for it. So each restart takes its own port, in 25000-31999 (below Linux's ephemeral ports, above
    Lightning's); a ``MASTER_PORT`` already set is kept. Returns the port set, if any."""
    job_id, restarts = os.environ.get("SLURM_JOB_ID"), int(os.environ.get("SLURM_RESTART_COUNT", 0))
    if job_id is None or restarts == 0 or "MASTER_PORT" in os.environ:
        return None
    port = 25000 + (int(job_id[-4:]) + 997 * restarts) % 7000
    os.environ["MASTER_PORT"] = str(port)
    return port


class RequeueOnSignal(L.Callback):
    """On SLURM's warning signal: checkpoint the run, requeue the job, exit; nothing outside SLURM.

    The ranks check for the signal together every ``check_every_n_steps`` training steps (one small
    all-reduce each time) and after each validation, so they stop at the same step; keep the signal's
    lead time (submitit's ``signal_delay_s``) above that many steps plus a checkpoint write. A job is
    requeued at most ``max_requeues`` times, so a time limit too short to make progress cannot loop.
    """

    def __init__(
        self, signal_name: str = "USR2", check_every_n_steps: int = 10, max_requeues: int = 10
    ) -> None:
        if signal_name not in WARNING_SIGNALS:  # the signals the loader workers ignore
            raise ValueError(
                f"signal_name={signal_name}: use {' or '.join(WARNING_SIGNALS)}, which the data-loader "
                "workers ignore (SLURM signals them too)."
            )
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps}: must be at least 1.")
        self.signum = getattr(signal, f"SIG{signal_name}")
        self.check_every_n_steps = check_every_n_steps
        self.max_requeues = max_requeues
        self._signalled = False
        self._previous_handler: Any = None

    @staticmethod
    def _job_id() -> str | None:
        return os.environ.get("SLURM_JOB_ID")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True  # acted on at the next step boundary, where the state is consistent

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._job_id() is not None:
            self._previous_handler = signal.signal(self.signum, self._on_signal)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.check_every_n_steps == 0:
            self._maybe_requeue(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._maybe_requeue(trainer)

    def _maybe_requeue(self, trainer: L.Trainer) -> None:
        if self._previous_handler is None or not trainer.strategy.reduce_boolean_decision(
            self._signalled, all=False
        ):
            return
        path = Path(trainer.default_root_dir) / "checkpoints" / REQUEUE_CHECKPOINT
        trainer.save_checkpoint(path)
        self._signalled = False
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        if restarts >= self.max_requeues:
            log.warning(
                "job signalled after %d requeues (max_requeues=%d): not requeued; resume by hand with ckpt_path=%s",
                restarts,
                self.max_requeues,
                path,
            )
            return
        for logger in trainer.loggers:
            logger.save()  # the metrics so far, which the resumed run keeps
        # Once requeued, SLURM ends every process of the job: W&B's service and the loader workers
        # too. So W&B is finished now, and the workers' end is no failure (torch would raise it from
        # SIGCHLD, and the job would end with an error instead of exiting for its requeued run);
        # then every rank waits until all are done before rank 0 requeues.
        finish_wandb()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        trainer.strategy.barrier("requeue_on_signal")
        if trainer.is_global_zero:
            log.warning("job %s signalled: checkpoint %s written, requeueing", self._job_id(), path)
            subprocess.run(["scontrol", "requeue", str(self._job_id())], check=True)
        sys.exit(0)  # every rank: SLURM stops the old job and starts the requeued one
