"""Running on SLURM: resource requests derived from the run's config, and surviving preemption and
time limits by checkpointing, requeueing and resuming the same run.

SLURM warns a job with a signal (``USR2`` from submitit's ``--signal=USR2@<signal_delay_s>``, or
``scancel --signal=USR2``) before it preempts it or its time runs out. :class:`RequeueOnSignal`
replaces submitit's handler for that signal while fitting, because submitit's only resubmits the job
from scratch (and gives up on time limits). At the next step boundary all ranks agree, write
``checkpoints/requeue.ckpt`` in the run folder, and rank 0 requeues the job. The requeued job runs
the same config in the same run folder, which :func:`requeued_run` tells train.py to continue, as
``ckpt_path=<run folder>`` would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

REQUEUE_CHECKPOINT = "requeue.ckpt"


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """One GPU per device, unless the run is on CPUs (then none are requested)."""
    return None if accelerator == "cpu" else devices


def cpus_per_task(num_workers: int | None, default: int = 8) -> int:
    """The training process plus its data-loader workers; ``default`` when the workers follow the CPUs."""
    return default if num_workers is None else num_workers + 1


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
        if not hasattr(signal, f"SIG{signal_name}"):
            raise ValueError(f"signal_name={signal_name}: not a signal; use USR1, USR2 or TERM.")
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
        if trainer.is_global_zero:
            log.warning("job %s signalled: checkpoint %s written, requeueing", self._job_id(), path)
            subprocess.run(["scontrol", "requeue", str(self._job_id())], check=True)
        sys.exit(0)  # every rank: SLURM stops the old job and starts the requeued one
