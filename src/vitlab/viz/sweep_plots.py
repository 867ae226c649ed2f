"""Accuracy across a sweep's runs: against model cost (the paper's Figure 5 in small), or against
the number a sweep varies (a learning rate, a drop-path rate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from vitlab.models.variants import resolve_variant

Row = Mapping[str, Any]


def run_label(row: Row) -> str:
    """What tells a run apart: the overrides that vary across the sweep, or else its variant's name
    (with the patch size when the run overrode the variant's own)."""
    if row.get("overrides"):
        return str(row["overrides"])
    model, patch_size = row["model"], row["patch_size"]
    return model if resolve_variant(model)[1] == patch_size else f"{model} P{patch_size}"


def varied_numbers(rows: Sequence[Row]) -> dict[str, list[float]]:
    """The overrides that every run sets to a number, with at least two different values across
    the runs (``optimizer.lr=1e-3`` ...): each run's value, in row order."""
    settings = [
        dict(o.split("=", 1) for o in str(row.get("overrides") or "").split() if "=" in o) for row in rows
    ]
    varied: dict[str, list[float]] = {}
    for key in settings[0] if settings else {}:
        try:
            values = [float(setting[key]) for setting in settings]
        except (KeyError, ValueError):
            continue
        if len(set(values)) > 1:
            varied[key] = values
    return varied


def accuracy_figure(
    rows: Sequence[Row],
    x: str,
    x_label: str | None = None,
    log_x: bool = True,
    accuracies: Sequence[str] = ("best_val_acc", "test_acc"),
) -> Figure:
    """A scatter of each accuracy column against the ``x`` column, each point of the first series
    labelled with ``run_label``. Runs missing a value are left out of that series."""
    figure = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    for accuracy, marker in zip(accuracies, "os^v", strict=False):
        points = [row for row in rows if row.get(x) is not None and row.get(accuracy) is not None]
        axes.scatter(
            [row[x] for row in points], [row[accuracy] for row in points], marker=marker, label=accuracy
        )
        if accuracy == accuracies[0]:
            for row in points:
                axes.annotate(
                    run_label(row),
                    (row[x], row[accuracy]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
    if log_x:
        axes.set_xscale("log")
    axes.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    axes.set(xlabel=x_label or x, ylabel="accuracy", title=f"accuracy vs {x_label or x}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


def save_figure(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_accuracy_vs_cost(
    rows: Sequence[Row], cost: str, path: Path | str, cost_label: str | None = None
) -> Path:
    """Accuracy against a cost column (log scale: costs across variants span orders of magnitude)."""
    return save_figure(accuracy_figure(rows, cost, cost_label), path)


def plot_accuracy_vs_varied(rows: Sequence[Row], out_dir: Path | str) -> list[Path]:
    """One plot per numeric override the sweep varies: ``accuracy_vs_<override>.png``, on a log
    scale when its values span more than a factor of ten."""
    files = []
    for key, values in varied_numbers(rows).items():
        with_value = [{**row, key: value} for row, value in zip(rows, values, strict=True)]
        positive = min(values) > 0
        log_x = positive and max(values) / min(values) > 10
        files.append(
            save_figure(
                accuracy_figure(with_value, key, log_x=log_x), Path(out_dir) / f"accuracy_vs_{key}.png"
            )
        )
    return files
