"""A real one-node SLURM cluster on this machine for the tests: munged, slurmctld and slurmd on
127.0.0.1, configured in a temporary folder and stopped at the end of the session.

Debian's ``slurm-wlm`` and ``munge`` packages are installed when missing and the machine allows it
(root, apt reachable); ``.ci/run`` installs them up front so the tests only start the daemons. Where a
cluster cannot be had, the tests that need it skip with the reason.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "sbatch", "scontrol")
PARTITION = "debug"
CLUSTER_NAME = "vitlab-test"


def local_cluster_is_current() -> bool:
    """Whether ``SLURM_CONF`` names the suite's own one-node cluster (the fixture below sets it)."""
    conf = os.environ.get("SLURM_CONF")
    return conf is not None and f"ClusterName={CLUSTER_NAME}\n" in Path(conf).read_text()


def _missing_programs() -> list[str]:
    return [
        name for name in DAEMONS if shutil.which(name, path=os.environ["PATH"] + ":/usr/sbin:/sbin") is None
    ]


def _install_packages() -> str | None:
    """Installs the packages with apt; returns why it could not, or None."""
    if os.geteuid() != 0:
        return "not root, so slurm-wlm and munge cannot be installed (apt-get install slurm-wlm munge)"
    if shutil.which("apt-get") is None:
        return "no apt-get to install slurm-wlm and munge with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(folder: Path, host: str, munge_socket: Path) -> str:
    # cred_expire: a requeued job may start again after this many seconds (default 120);
    # sched_interval: the scheduler looks at pending jobs this often (default 60 s);
    # FirstJobId: random, because Lightning takes a job's DDP port from the last 4 digits of its id,
    # so two clusters on one machine (two test sessions) numbering jobs from 1 would share ports.
    """One node (this host at 127.0.0.1) with most of its memory and at least 4 CPUs, so that each
    of a 2-task job's tasks gets a share by ``sinfo`` (2) that 0 loader workers would not ask even on
    a 2-core machine (``config_overrides`` lets the node claim more CPUs than it has), and one
    partition."""
    cpus = max(os.cpu_count() or 1, 4)
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    return f"""\
ClusterName={CLUSTER_NAME}
FirstJobId={random.randrange(1, 10_000)}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _node_state(env: dict[str, str]) -> str:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


class LocalSlurm:
    """munged + slurmctld + slurmd for this host, configured and logging under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._processes: list[subprocess.Popen] = []

    def start(self, timeout_s: float = 60) -> None:
        """Starts the daemons and waits until the node is idle; raises RuntimeError with the logs' tail."""
        for sub in ("state", "spool", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        munge = self.folder / "munge"
        key, munge_socket = munge / "munge.key", munge / "munge.socket"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(_slurm_conf(self.folder, host, munge_socket))
        self._spawn(
            "munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
            f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'seed'}",
            f"--log-file={munge / 'munged.log'}",
        )  # fmt: skip
        self._spawn("slurmctld", "-D", "-c", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        deadline = time.monotonic() + timeout_s
        while _node_state(self.env) != "idle":
            if time.monotonic() > deadline or any(p.poll() is not None for p in self._processes):
                raise RuntimeError(f"the local SLURM node did not become idle: {self.logs_tail()}")
            time.sleep(0.5)

    def _spawn(self, *command: str) -> None:
        log = open(self.folder / f"{command[0]}.out", "w")  # noqa: SIM115 - the daemon holds it open
        self._processes.append(
            subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def logs_tail(self) -> str:
        names = ("slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out")
        tails = [f"{n}: {(self.folder / n).read_text()[-400:]}" for n in names if (self.folder / n).is_file()]
        return " | ".join(tails)

    def stop(self) -> None:
        """Cancels what is left in the queue and stops the daemons this object started."""
        subprocess.run(["scancel", "--full", "--partition", PARTITION], env=self.env, capture_output=True)
        for process in reversed(self._processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """A running one-node SLURM cluster; ``SLURM_CONF`` points at it while the session lasts, so
    ``sbatch``, ``squeue`` and submitit (in subprocesses too) talk to it."""
    missing = _missing_programs()
    if missing:
        reason = _install_packages()
        if reason:
            pytest.skip(f"no local SLURM cluster: {', '.join(missing)} missing and {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        cluster.stop()
        pytest.skip(f"no local SLURM cluster: {error}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if previous is None:
        del os.environ["SLURM_CONF"]
    else:
        os.environ["SLURM_CONF"] = previous
    cluster.stop()


class PauseAtStep(L.Callback):
    """Test hook run inside SLURM jobs: after training step ``step``, rank 0 writes ``paused`` in the
    run folder and waits until the test deletes it, so a signal can be sent at a known point."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            marker = Path(trainer.default_root_dir) / "paused"
            marker.touch()
            deadline = time.monotonic() + 300
            while marker.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
