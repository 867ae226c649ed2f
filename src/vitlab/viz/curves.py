"""Loss and accuracy curves of one run, drawn as the course's ``plot_loss_curves`` draws them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from vitlab.viz.readable import integer_ticks, round_numbers

# A run's history: the rows its logger wrote (Lightning's CSV file, or W&B's history), each holding
# only the metrics logged at that moment, plus ``epoch``.
History = Sequence[Mapping[str, float]]

# Panel -> the epoch-level metrics it compares (validation stands where the course has test).
CURVES: dict[str, tuple[str, ...]] = {
    "loss": ("train/loss_epoch", "val/loss"),
    "accuracy": ("train/acc", "val/acc"),
}


def metric_series(history: History, key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    """The ``(x, value)`` pairs of one metric, from the rows that logged it."""
    points = [(row[x], row[key]) for row in history if row.get(key) is not None and row.get(x) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def loss_curves_figure(history: History, title: str | None = None) -> Figure:
    """Two panels, loss and accuracy against epochs, training beside validation."""
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    for axes, (panel, keys) in zip(figure.subplots(1, 2), CURVES.items(), strict=True):
        for key in keys:
            epochs, values = metric_series(history, key)
            if values:
                axes.plot(epochs, values, marker="o", label=key)  # markers: a 1-epoch run is one point
        axes.set(title=panel.capitalize(), xlabel="epoch")
        integer_ticks(axes.xaxis)
        if axes.has_data():
            axes.legend()
    if title:  # a sweep's title holds its overrides: long, with floats as the sweep wrote them
        figure.suptitle(round_numbers(title), wrap=True)
    return figure


def plot_loss_curves(history: History, path: Path | str, title: str | None = None) -> Path:
    """``loss_curves_figure`` saved as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    loss_curves_figure(history, title).savefig(path)
    return path
