"""Summaries of a sweep: one row per run, written with plots next to each other.

Runs come from a Hydra multirun folder (each job's ``results.json`` and CSV log) or from a W&B
project's group (train.py names the group after the multirun folder). Either way the summary is
``summary.md`` / ``summary.csv``, ``accuracy_vs_params.png``, ``accuracy_vs_gmacs.png``,
``accuracy_vs_<override>.png`` for each number the sweep varies, and ``curves/<job>.png`` per run.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vitlab.models.cost import variant_cost
from vitlab.models.variants import ModelConfig
from vitlab.provenance import code_description
from vitlab.runs import VALIDATION_IS_TEST
from vitlab.tables import write_tables
from vitlab.viz.curves import CURVES, History, plot_loss_curves
from vitlab.viz.sweep_plots import plot_accuracy_vs_cost, plot_accuracy_vs_varied

log = logging.getLogger(__name__)

COLUMNS = [
    "job",
    "model",
    "patch_size",
    "overrides",
    "params",
    "gmacs",
    "validation",
    "best_val_acc",
    "final_val_acc",
    "test_acc",
    "test_acc_ci95_low",
    "test_acc_ci95_high",
    "images_per_sec",
    "wall_time_s",
    "code",
]

# Summary column -> the logged metric it reads (the same names in results.json and W&B summaries).
METRICS = {
    "best_val_acc": "val/acc_best",
    "final_val_acc": "val/acc",
    "test_acc": "test/acc",
    "test_acc_ci95_low": "test/acc_ci95_low",  # the bootstrap interval train and vitlab-eval report
    "test_acc_ci95_high": "test/acc_ci95_high",
    "images_per_sec": "train/images_per_sec",
}


@dataclass
class SweepRun:
    """One run of a sweep: its summary row and its logged history (for curves)."""

    row: dict[str, Any]
    history: History = field(default_factory=list)


def forward_gmacs(model: str, image_size: int, patch_size: int) -> float:
    """Forward GMACs per image of a run's backbone, for runs that did not record their own ``gmacs``.
    The head is left out as the class count is unknown; its D x classes MACs are negligible (0.004 %
    of ViT-B/16 at 224 px with 1000 classes)."""
    return variant_cost(model, image_size=image_size, num_classes=0, patch_size=patch_size)[1] / 1e9


def common_overrides(overrides: Sequence[Sequence[str]]) -> set[str]:
    """The overrides every run of a sweep shares; left out of the table, so that its ``overrides``
    column shows what tells the runs apart. Empty for a single run."""
    return set.intersection(*map(set, overrides)) if len(overrides) > 1 else set()


def _shown(overrides: Sequence[str], hidden: Collection[str]) -> str:
    return " ".join(o for o in overrides if o not in hidden)


def make_row(
    job: str,
    model: Mapping[str, Any],
    overrides: Sequence[str],
    hidden_overrides: Collection[str],
    cost: tuple[int, float],
    metrics: Mapping[str, Any],
    wall_time_s: float | None,
    validation: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """One summary row, whichever store the run comes from: ``model`` holds its name and patch size,
    ``cost`` its (params, GMACs), ``metrics`` its logged metrics by name, ``validation`` where its
    validation images came from. Validation accuracies measured on the test split are left blank:
    ranked as validation, they would choose on the test set."""
    row = {
        "job": job,
        "model": model["name"],
        "patch_size": model["patch_size"],
        "overrides": _shown(overrides, hidden_overrides),
        "params": cost[0],
        "gmacs": cost[1],
        "validation": validation,
        **{column: metrics.get(metric) for column, metric in METRICS.items()},
        "wall_time_s": wall_time_s,
        "code": code,  # provenance.code_description: says so where the code had uncommitted changes
    }
    if validation == VALIDATION_IS_TEST:
        row["best_val_acc"] = row["final_val_acc"] = None
    return row


def job_row(results_file: Path, hidden_overrides: Collection[str] = ()) -> dict[str, Any]:
    """One summary row from a job's results.json."""
    results = json.loads(results_file.read_text())
    try:
        model = {"name": results["model"], "patch_size": results["patch_size"]}
        params = results["params"]
        gmacs = results.get("gmacs") or forward_gmacs(
            model["name"], results["image_size"], model["patch_size"]
        )
        return make_row(
            results_file.parent.name,
            model,
            results.get("overrides", []),
            hidden_overrides,
            (params, gmacs),
            results.get("metrics", {}),
            results.get("wall_time_s"),
            results.get("validation"),
            code_description(results.get("provenance")),
        )
    except KeyError as missing:
        raise ValueError(
            f"{results_file} has no {missing} entry: expected the results.json that vitlab's train.py "
            "writes (model, patch_size, image_size, params, metrics). Re-run that job, or move the folder out."
        ) from None


def read_csv_history(metrics_csv: Path) -> list[dict[str, float]]:
    """Lightning's CSVLogger file as rows of the metrics each logging event wrote."""
    with open(metrics_csv, newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value} for row in csv.DictReader(handle)]


def folder_runs(sweep_dir: Path | str) -> list[SweepRun]:
    """The finished jobs of a Hydra multirun folder, in job order (jobs without results.json failed
    or are still running, and are left out)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"sweep folder {sweep_dir} does not exist: pass a multirun folder such as logs/train/multiruns/<time>."
        )
    files = sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    if not files:
        raise FileNotFoundError(
            f"no <job>/results.json under {sweep_dir}: expected a multirun folder of train.py whose jobs "
            "finished (logs/train/multiruns/<time>)."
        )
    hidden = common_overrides([json.loads(file.read_text()).get("overrides", []) for file in files])
    runs = []
    for file in files:
        metrics_csv = file.parent / "csv" / "metrics.csv"
        runs.append(
            SweepRun(job_row(file, hidden), read_csv_history(metrics_csv) if metrics_csv.is_file() else [])
        )
    return runs


def wandb_runs(project: str, group: str, api: Any = None) -> list[SweepRun]:
    """The runs of a W&B group (``entity/project``; ``group``: the multirun folder's name), oldest
    first. W&B runs do not record their class count, so their ``params`` are the backbone's, without
    the (D + 1) x classes of the head."""
    if api is None:
        import wandb

        api = wandb.Api()
    found = list(api.runs(project, filters={"group": group}, order="+created_at"))
    if not found:
        raise LookupError(
            f"no W&B runs in {project} with group={group!r}: train.py names a sweep's group after its "
            "multirun folder (e.g. 2024-05-01_12-00-00); check the group and the entity/project."
        )
    # train.py names runs "<model> <the job's overrides>".
    hidden = common_overrides([run.name.split()[1:] for run in found])
    return [_wandb_run(run, hidden) for run in found]


def _wandb_run(run: Any, hidden_overrides: Collection[str]) -> SweepRun:
    model = run.config["model"]
    summary = run.summary_metrics
    spec = ModelConfig.from_config(model)
    # num_classes=0: the backbone alone, as the class count is unknown (see wandb_runs).
    params, macs = variant_cost(spec.name, num_classes=0, **spec.options)
    row = make_row(
        run.id,
        {"name": spec.name, "patch_size": spec.patch_size},
        run.name.split()[1:],
        hidden_overrides,
        (params, macs / 1e9),
        summary,
        summary.get("_runtime"),
        code=code_description(run.config.get("provenance")),
    )
    # One request per metric: a request for several keys returns only the rows holding all of them,
    # and train and validation metrics are logged in different rows.
    history = [
        point
        for keys in CURVES.values()
        for key in keys
        for point in run.history(keys=["epoch", key], pandas=False)
    ]
    return SweepRun(row, history)


def write_summary(runs: Sequence[SweepRun], out_dir: Path | str) -> list[Path]:
    """The summary tables, the accuracy-vs-cost plots and each run's curves; returns the files."""
    out_dir = Path(out_dir)
    rows = [run.row for run in runs]
    files = list(write_tables(rows, COLUMNS, out_dir / "summary"))
    files.append(plot_accuracy_vs_cost(rows, "params", out_dir / "accuracy_vs_params.png", "parameters"))
    files.append(
        plot_accuracy_vs_cost(rows, "gmacs", out_dir / "accuracy_vs_gmacs.png", "forward GMACs per image")
    )
    files += plot_accuracy_vs_varied(rows, out_dir)  # e.g. accuracy_vs_optimizer.lr.png
    for run in runs:
        if run.history:
            title = f"{run.row['job']}: {run.row['model']} {run.row['overrides']}"
            files.append(plot_loss_curves(run.history, out_dir / "curves" / f"{run.row['job']}.png", title))
    return files


def summarize_sweep(sweep_dir: Path | str) -> list[dict[str, Any]]:
    """Write the summary of a multirun folder into that folder; returns its rows."""
    runs = folder_runs(sweep_dir)
    write_summary(runs, sweep_dir)
    return [run.row for run in runs]


def summarize_wandb(project: str, group: str, out_dir: Path | str, api: Any = None) -> list[dict[str, Any]]:
    """Write the summary of a W&B group into ``out_dir``; returns its rows."""
    runs = wandb_runs(project, group, api)
    write_summary(runs, out_dir)
    return [run.row for run in runs]


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarise its jobs (failed jobs have no results.json)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize_sweep(sweep_dir)
        log.info("sweep summary of %d job(s): %s", len(rows), sweep_dir / "summary.md")
        print((sweep_dir / "summary.md").read_text())
