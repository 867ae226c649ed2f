"""Summaries of a Hydra multirun: one row per job, written at the sweep root."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = [
    "job",
    "model",
    "patch_size",
    "overrides",
    "params",
    "best_val_acc",
    "final_val_acc",
    "test_acc",
    "images_per_sec",
    "wall_time_s",
]


def job_row(results_file: Path) -> dict[str, Any]:
    """One summary row from a job's results.json."""
    results = json.loads(results_file.read_text())
    metrics = results.get("metrics", {})
    return {
        "job": results_file.parent.name,
        "model": results["model"],
        "patch_size": results["patch_size"],
        "overrides": " ".join(results.get("overrides", [])),
        "params": results["params"],
        "best_val_acc": metrics.get("val/acc_best"),
        "final_val_acc": metrics.get("val/acc"),
        "test_acc": metrics.get("test/acc"),
        "images_per_sec": metrics.get("train/images_per_sec"),
        "wall_time_s": results.get("wall_time_s"),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summarize_sweep(sweep_dir: Path | str) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` at ``sweep_dir`` from each job's results.json."""
    sweep_dir = Path(sweep_dir)
    files = sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    rows = [job_row(f) for f in files]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarise its jobs (failed jobs have no results.json)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize_sweep(sweep_dir)
        log.info("sweep summary of %d job(s): %s", len(rows), sweep_dir / "summary.md")
        print((sweep_dir / "summary.md").read_text())
