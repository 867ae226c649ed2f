"""Accuracy across a sweep's runs: against model cost (the paper's Figure 5 in small), or against
the number a sweep varies (a learning rate, a drop-path rate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import Bbox

from vitlab.models.variants import resolve_variant
from vitlab.viz.readable import integer_ticks, round_numbers

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


def point_label(row: Row, x: str) -> str:
    """``run_label``, its overrides at 3 significant digits and one a line (narrow, so that more fit),
    without the ``x`` override: the point's place says it."""
    if not row.get("overrides"):
        return run_label(row)
    shown = [o for o in str(row["overrides"]).split() if not o.startswith(f"{x}=")]
    return round_numbers("\n".join(shown))


def is_inside(box: Bbox, frame: Bbox) -> bool:
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def label_points(axes: Axes, points: Sequence[tuple[float, float, str]]) -> None:
    """Write each ``(x, y, label)`` beside its point, the most accurate first, leaving out a label that
    would cover a point or a label already written, or leave the axes: a pile of labels reads as none,
    and the summary table holds every run. A point in the right half gets its label on its left."""
    figure = axes.get_figure()
    figure.draw_without_rendering()  # lays the axes out; the labels stay out of the layout
    frame = axes.get_window_extent()
    centres = [axes.transData.transform(xy) for series in axes.collections for xy in series.get_offsets()]
    taken = [Bbox.from_bounds(cx - 4, cy - 4, 8, 8) for cx, cy in centres]  # markers: 6 pt, about 8 px
    for x, y, text in sorted(points, key=lambda point: -point[1]):
        if not text:
            continue
        on_left = axes.transData.transform((x, y))[0] > (frame.x0 + frame.x1) / 2
        label = axes.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(-6, 0) if on_left else (6, 0),
            ha="right" if on_left else "left",
            va="center",
            fontsize=8,
            in_layout=False,
        )
        box = label.get_window_extent()
        if is_inside(box, frame) and not any(box.overlaps(other) for other in taken):
            taken.append(box)
        else:
            label.remove()


def accuracy_figure(
    rows: Sequence[Row],
    x: str,
    x_label: str | None = None,
    log_x: bool = True,
    accuracies: Sequence[str] = ("best_val_acc", "test_acc"),
) -> Figure:
    """A scatter of each accuracy column against the ``x`` column, points of the first series labelled
    with ``point_label`` where they fit. Runs missing a value are left out of that series. Whole-number
    ``x`` values (seeds, depths) on a linear axis are ticked at whole numbers."""
    figure = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    labels = []
    for accuracy, marker in zip(accuracies, "os^v", strict=False):
        points = [row for row in rows if row.get(x) is not None and row.get(accuracy) is not None]
        axes.scatter(
            [row[x] for row in points], [row[accuracy] for row in points], marker=marker, label=accuracy
        )
        if accuracy == accuracies[0]:
            labels = [(row[x], row[accuracy], point_label(row, x)) for row in points]
    if log_x:
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # labels between decades run into each other
    elif all(float(row[x]).is_integer() for row in rows if row.get(x) is not None):
        integer_ticks(axes.xaxis)
    else:  # 2.5 3.0 ... x1e-4 rather than 0.00025 0.00030 ...: long labels touch
        axes.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    axes.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    axes.set(xlabel=x_label or x, ylabel="accuracy")
    axes.set_title(f"accuracy vs {x_label or x}", wrap=True)
    axes.grid(True, which="both", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=len(accuracies))  # below: inside, it hides labels
    label_points(axes, labels)
    return figure


def save_figure(figure: Figure, path: Path | str) -> Path:
    """``figure`` as a PNG at ``path``, its folder made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_accuracy_vs_cost(
    rows: Sequence[Row], cost: str, path: Path | str, cost_label: str | None = None
) -> Path:
    """Accuracy against a cost column (log scale: costs across variants span orders of magnitude)."""
    return save_figure(accuracy_figure(rows, cost, cost_label), path)


def varied_figures(rows: Sequence[Row]) -> dict[str, Figure]:
    """One ``accuracy_figure`` per numeric override the sweep varies, by override: on a log scale when
    its values span more than a factor of ten, unless they are whole numbers (seeds, depths), which
    read best as themselves on a linear axis."""
    figures = {}
    for key, values in varied_numbers(rows).items():
        with_value = [{**row, key: value} for row, value in zip(rows, values, strict=True)]
        positive = min(values) > 0
        whole = all(value.is_integer() for value in values)
        log_x = positive and not whole and max(values) / min(values) > 10
        figures[key] = accuracy_figure(with_value, key, log_x=log_x)
    return figures


def plot_accuracy_vs_varied(rows: Sequence[Row], out_dir: Path | str) -> list[Path]:
    """``varied_figures`` saved as ``accuracy_vs_<override>.png``."""
    return [
        save_figure(figure, Path(out_dir) / f"accuracy_vs_{key}.png")
        for key, figure in varied_figures(rows).items()
    ]
