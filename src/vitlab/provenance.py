"""Where a result came from: the code, the command, the packages, the machine and the data.

Every ``results.json`` holds it under ``provenance``, every training checkpoint holds the same dict
(``vitlab.checkpoint.stamp_provenance``) and the W&B run's config too, so that any published number
can be traced to the commit and command that made it, and re-made.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
ALWAYS_LISTED = ("torch", "torchvision", "lightning")
LISTED_WHEN_USED = ("timm", "onnxruntime", "onnx")  # listed when the process imported them


def _git(*args: str) -> str | None:
    """``git -C <vitlab's source folder> <args>``'s output, or None without git or a checkout."""
    try:
        done = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(PACKAGE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """``git_commit`` (40 hex) and ``git_dirty`` of the vitlab source that runs; for an installed
    wheel (no checkout holding this package) the package version instead. Changes under ``docs/``
    are not the code's: a study that rewrites its own records there stays clean for its next run."""
    top = _git("rev-parse", "--show-toplevel")
    if top is not None and (Path(top) / "src" / "vitlab").resolve() == PACKAGE_DIR:
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)docs")
        if commit is not None and status is not None:
            return {"git_commit": commit, "git_dirty": bool(status)}
    return {"package_version": importlib.metadata.version("vitlab")}


def versions() -> dict[str, str]:
    """Python and the packages a result depends on, verbatim (``torch.__version__`` says CPU/CUDA)."""
    found = {"python": platform.python_version()}
    used = [name for name in LISTED_WHEN_USED if name in sys.modules]
    for name in (*ALWAYS_LISTED, *used):
        try:
            module = sys.modules.get(name) or __import__(name)
            found[name] = str(module.__version__)
        except (ImportError, AttributeError):
            continue
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The CPU (model, cores this process may use), the GPUs (name, count) and CUDA version."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cpu_cores": usable,
        "gpu": torch.cuda.get_device_name(0) if gpus else None,
        "gpu_count": gpus,
        "cuda": torch.version.cuda,
    }


def command(overrides: Sequence[str] | None) -> dict[str, Any]:
    """The command as typed, its arguments, and Hydra's overrides (what the run's config differs by)."""
    return {"command": shlex.join(sys.argv), "argv": list(sys.argv), "overrides": list(overrides or [])}


def hydra_overrides() -> list[str]:
    """The command line's Hydra overrides (none when called outside a Hydra command)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def files_fingerprint(files: Iterable[Path], root: Path | None = None) -> str:
    """SHA-256 of the sorted ``(name relative to root, size)`` of a split's files: the same images
    give the same fingerprint on any machine, and a file added, removed or changed in size does not."""
    entries = sorted(
        f"{path.relative_to(root) if root is not None else path.name}\t{path.stat().st_size}"
        for path in map(Path, files)
    )
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


class Provenance:
    """The provenance of one command: fixed at its start; ``record`` adds the data and wall time."""

    def __init__(self, seed: int | None, overrides: Sequence[str] | None, **extra: Any) -> None:
        self._started = time.perf_counter()
        self.fixed: dict[str, Any] = {
            **code_version(),
            **command(overrides),
            "versions": versions(),
            "machine": machine(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seed": seed,
            **extra,
        }

    def record(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """The provenance as of now: with the wall time so far and the data's fingerprints."""
        recorded = {**self.fixed, "wall_time_s": round(time.perf_counter() - self._started, 2)}
        recorded["versions"] = {**recorded["versions"], **versions()}  # packages imported since the start
        if data is not None:
            recorded["data"] = data
        return recorded


def code_description(provenance: Mapping[str, Any] | None) -> str:
    """The code a result came from, in a few words, saying so where it had uncommitted changes."""
    if not provenance:
        return "unknown code (no provenance: made before vitlab recorded it)"
    if "git_commit" not in provenance:
        return f"vitlab {provenance.get('package_version', '?')}"
    dirty = " with uncommitted changes" if provenance.get("git_dirty") else ""
    return f"commit {provenance['git_commit'][:10]}{dirty}"


def publishable(record: Mapping[str, Any], roots: Mapping[str, str | Path]) -> dict[str, Any]:
    """``record`` with each machine-specific folder in ``roots`` (e.g. ``{"<runs>": "/scratch/runs"}``)
    written as its placeholder, so that a published record names no one's own paths."""
    text = json.dumps(record)
    for placeholder, folder in sorted(roots.items(), key=lambda item: -len(str(item[1]))):
        text = text.replace(str(Path(folder).resolve()), placeholder)
    return json.loads(text)


def write_record(
    path: Path,
    results: Mapping[str, Any],
    test_predictions: list[dict[str, Any]] | None = None,
    roots: Mapping[str, str | Path] | None = None,
) -> None:
    """Write a run record (``docs/runs/<study>/<name>.json``, read by scripts/results_tables.py):
    ``results`` with its provenance, plus per-image test predictions where there are some, with the
    folders in ``roots`` (default: ``machine_roots``) written as placeholders (``publishable``)."""
    roots = machine_roots() if roots is None else roots
    record = publishable({"results": results, "test_predictions": test_predictions}, roots)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def machine_roots() -> dict[str, Path]:
    """The machine-specific folders any record may name: the checkout that holds this package
    (``vitlab-<command>``, ``python -m`` and the scripts name files in it) and ``$VITLAB_DATA_DIR``."""
    roots = {}
    checkout = Path(__file__).resolve().parents[2]  # src/vitlab/provenance.py in a checkout
    if (checkout / "pyproject.toml").is_file():
        roots["<repo>"] = checkout
    if os.environ.get("VITLAB_DATA_DIR"):
        roots["<data>"] = Path(os.environ["VITLAB_DATA_DIR"])
    return roots


def usual_roots(run_dir: Path, argv: Sequence[str]) -> dict[str, Path]:
    """The folders a record of a run in ``run_dir`` names: the runs folder holding it, the checkout
    whose ``train.py`` ran (else the one holding this package), and ``$VITLAB_DATA_DIR``."""
    roots = {"<runs>": run_dir.resolve().parent, **machine_roots()}
    if argv and Path(argv[0]).name == "train.py":
        roots["<repo>"] = Path(argv[0]).resolve().parent
    return roots
