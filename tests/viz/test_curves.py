"""Per-run loss and accuracy curves."""

import pytest

from vitlab.viz.curves import CURVES, loss_curves_figure, metric_series, plot_loss_curves

HISTORY = [
    {"epoch": 0, "step": 0, "train/loss_step": 1.2},
    {"epoch": 0, "step": 1, "val/loss": 1.0, "val/acc": 0.4},
    {"epoch": 0, "step": 1, "train/loss_epoch": 1.1, "train/acc": 0.3},
    {"epoch": 1, "step": 3, "val/loss": 0.8, "val/acc": None},  # W&B rows may carry empty values
    {"epoch": 1, "step": 3, "train/loss_epoch": 0.9, "train/acc": 0.5},
]


def test_a_series_takes_the_rows_that_logged_the_metric():
    assert metric_series(HISTORY, "val/loss") == ([0, 1], [1.0, 0.8])
    assert metric_series(HISTORY, "val/acc") == ([0], [0.4])
    assert metric_series(HISTORY, "train/loss_epoch", x="step") == ([1, 3], [1.1, 0.9])
    assert metric_series(HISTORY, "test/acc") == ([], [])


def drawn(figure) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Each panel's curves: label -> (epochs, values) as drawn."""
    return {
        axes.get_title(): {
            line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.lines
        }
        for axes in figure.axes
    }


def test_each_panel_draws_the_logged_values_training_beside_validation(tmp_path):
    curves = drawn(loss_curves_figure(HISTORY, title="job 0"))
    assert set(curves) == {"Loss", "Accuracy"}
    for panel, keys in (("Loss", CURVES["loss"]), ("Accuracy", CURVES["accuracy"])):
        assert curves[panel] == {
            key: metric_series(HISTORY, key) for key in keys if metric_series(HISTORY, key)[1]
        }
    path = plot_loss_curves(HISTORY, tmp_path / "curves" / "0.png", title="job 0")
    assert path == tmp_path / "curves" / "0.png" and path.stat().st_size > 0


def test_a_run_without_epoch_metrics_still_gets_its_empty_panels(tmp_path):
    history = [{"epoch": 0, "train/loss_step": 1.0}]
    assert drawn(loss_curves_figure(history)) == {"Loss": {}, "Accuracy": {}}
    assert plot_loss_curves(history, tmp_path / "empty.png").is_file()


def epochs(count: int) -> list[dict[str, float]]:
    """A run's epoch-level rows, as Lightning's CSV logger writes them."""
    return [
        {"epoch": epoch, "val/loss": 1.0 - 0.1 * epoch, "val/acc": 0.4 + 0.1 * epoch}
        | {"train/loss_epoch": 1.1 - 0.1 * epoch, "train/acc": 0.3 + 0.1 * epoch}
        for epoch in range(count)
    ]


@pytest.mark.parametrize("count", [1, 3])
def test_epochs_are_ticked_at_whole_numbers_even_for_one_epoch(count, shown_ticks, assert_readable):
    figure = loss_curves_figure(epochs(count), title="0: vit_ti16")
    for axes in figure.axes:
        assert shown_ticks(axes.xaxis) == [str(epoch) for epoch in range(count)]
    assert_readable(figure)


def test_a_sweeps_long_title_is_rounded_and_kept_inside_the_picture(assert_readable):
    overrides = " ".join(
        f"{key}=0.{'1234567890' * 2}" for key in ("optimizer.lr", "optimizer.weight_decay", "model.drop_path")
    )
    figure = loss_curves_figure(epochs(1), title=f"12: vit_ti16 {overrides} label_smoothing=0.1 seed=3")
    (title,) = figure.texts
    assert title.get_text().split() == [
        "12:",
        "vit_ti16",
        "optimizer.lr=0.123",
        "optimizer.weight_decay=0.123",
        "model.drop_path=0.123",
        "label_smoothing=0.1",
        "seed=3",
    ]
    assert_readable(figure)
