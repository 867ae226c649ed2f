"""Per-run loss and accuracy curves."""

from matplotlib.image import imread

from vitlab.viz.curves import metric_series, plot_loss_curves

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


def test_curves_are_a_two_panel_png(tmp_path):
    path = plot_loss_curves(HISTORY, tmp_path / "curves" / "0.png", title="job 0")
    assert path == tmp_path / "curves" / "0.png"
    pixels = imread(path)
    assert pixels.shape[:2] == (400, 1000)  # 10 x 4 inches at 100 dpi
    assert pixels.std() > 0


def test_a_run_without_epoch_metrics_still_gets_its_empty_panels(tmp_path):
    path = plot_loss_curves([{"epoch": 0, "train/loss_step": 1.0}], tmp_path / "empty.png")
    assert imread(path).shape[:2] == (400, 1000)
