"""Accuracy against model cost across a sweep's runs: the paper's Figure 5 in small."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from vitlab.models.variants import resolve_variant


def run_label(row: Mapping[str, Any]) -> str:
    """The variant's name, with the patch size when a run overrode the variant's own."""
    model, patch_size = row["model"], row["patch_size"]
    return model if resolve_variant(model)[1] == patch_size else f"{model} P{patch_size}"


def plot_accuracy_vs_cost(
    rows: Sequence[Mapping[str, Any]],
    cost: str,
    path: Path | str,
    cost_label: str | None = None,
    accuracies: Sequence[str] = ("best_val_acc", "test_acc"),
) -> Path:
    """A scatter of each accuracy column against the ``cost`` column (log scale, as costs across
    variants span orders of magnitude), each point labelled with its run's variant. Runs missing a
    value are left out of that series."""
    figure = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    for accuracy, marker in zip(accuracies, "os^v", strict=False):
        points = [row for row in rows if row.get(cost) is not None and row.get(accuracy) is not None]
        axes.scatter(
            [row[cost] for row in points], [row[accuracy] for row in points], marker=marker, label=accuracy
        )
        if accuracy == accuracies[0]:
            for row in points:
                axes.annotate(
                    run_label(row),
                    (row[cost], row[accuracy]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
    axes.set_xscale("log")
    axes.set(xlabel=cost_label or cost, ylabel="accuracy", title=f"accuracy vs {cost_label or cost}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
