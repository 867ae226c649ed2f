"""Accuracy across a sweep's runs: points at their values, labelled by what tells the runs apart."""

import pytest

from vitlab.viz.sweep_plots import accuracy_figure, plot_accuracy_vs_varied, run_label, varied_numbers

ROWS = [
    {
        "model": "vit_ti16",
        "patch_size": 16,
        "overrides": "",
        "params": 5.7e6,
        "best_val_acc": 0.6,
        "test_acc": 0.55,
    },
    {
        "model": "vit_b16",
        "patch_size": 32,
        "overrides": "",
        "params": 88e6,
        "best_val_acc": 0.7,
        "test_acc": None,
    },
    {
        "model": "r50_vit_b16",
        "patch_size": 16,
        "overrides": "",
        "params": 95e6,
        "best_val_acc": None,
        "test_acc": None,
    },
]
LR_SWEEP = [  # one model, two learning rates: the same cost, told apart only by the override
    {"model": "vit_ti16", "patch_size": 16, "overrides": "optimizer.lr=0.001 seed=1", "best_val_acc": 0.5},
    {"model": "vit_ti16", "patch_size": 16, "overrides": "optimizer.lr=0.0001 seed=1", "best_val_acc": 0.4},
]


def plotted(figure):
    """Each series' (x, y) points and the labels written beside the points."""
    axes = figure.axes[0]
    series = {c.get_label(): [tuple(p) for p in c.get_offsets().tolist()] for c in axes.collections}
    return series, [text.get_text() for text in axes.texts]


def test_without_varied_overrides_points_are_labelled_by_variant_with_a_changed_patch_size():
    assert [run_label(row) for row in ROWS] == ["vit_ti16", "vit_b16 P32", "r50_vit_b16"]


def test_points_sit_at_their_cost_and_accuracy_and_runs_missing_a_value_are_left_out():
    series, labels = plotted(accuracy_figure(ROWS, "params"))
    assert series == {"best_val_acc": [(5.7e6, 0.6), (88e6, 0.7)], "test_acc": [(5.7e6, 0.55)]}
    assert labels == ["vit_ti16", "vit_b16 P32"]


def test_a_learning_rate_sweep_is_labelled_by_its_overrides_and_plotted_against_the_rate(tmp_path):
    assert varied_numbers(LR_SWEEP) == {"optimizer.lr": [1e-3, 1e-4]}  # seed=1 does not vary
    (path,) = plot_accuracy_vs_varied(LR_SWEEP, tmp_path)
    assert path.name == "accuracy_vs_optimizer.lr.png" and path.stat().st_size > 0
    rows = [{**row, "optimizer.lr": lr} for row, lr in zip(LR_SWEEP, [1e-3, 1e-4], strict=True)]
    series, labels = plotted(accuracy_figure(rows, "optimizer.lr"))
    assert series["best_val_acc"] == [pytest.approx((1e-3, 0.5)), pytest.approx((1e-4, 0.4))]
    assert labels == ["optimizer.lr=0.001 seed=1", "optimizer.lr=0.0001 seed=1"]


def test_overrides_that_are_not_numbers_get_no_plot_of_their_own(tmp_path):
    rows = [
        {**row, "overrides": f"model={name}"}
        for row, name in zip(ROWS, ["vit_ti16", "vit_b16", "r50"], strict=True)
    ]
    assert varied_numbers(rows) == {}
    assert plot_accuracy_vs_varied(rows, tmp_path) == []
