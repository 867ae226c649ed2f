"""Accuracy against parameters and GMACs across runs."""

from matplotlib.image import imread

from vitlab.viz.sweep_plots import plot_accuracy_vs_cost, run_label

ROWS = [
    {
        "model": "vit_ti16",
        "patch_size": 16,
        "params": 5.7e6,
        "gmacs": 1.25,
        "best_val_acc": 0.6,
        "test_acc": 0.55,
    },
    {
        "model": "vit_b16",
        "patch_size": 32,
        "params": 88e6,
        "gmacs": 4.4,
        "best_val_acc": 0.7,
        "test_acc": None,
    },
    {
        "model": "r50_vit_b16",
        "patch_size": 16,
        "params": 95e6,
        "gmacs": 20.9,
        "best_val_acc": None,
        "test_acc": None,
    },
]


def test_labels_show_the_patch_size_only_where_a_run_changed_it():
    assert [run_label(row) for row in ROWS] == ["vit_ti16", "vit_b16 P32", "r50_vit_b16"]


def test_accuracy_against_cost_is_a_png_even_with_missing_values(tmp_path):
    path = plot_accuracy_vs_cost(ROWS, "gmacs", tmp_path / "plots" / "accuracy_vs_gmacs.png", "GMACs")
    pixels = imread(path)
    assert pixels.shape[:2] == (450, 600)
    assert pixels.std() > 0
