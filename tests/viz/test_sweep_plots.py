"""Accuracy across a sweep's runs: points at their values, labelled by what tells the runs apart."""

import random
import re

import pytest

from vitlab.viz.readable import DECIMAL
from vitlab.viz.sweep_plots import (
    accuracy_figure,
    plot_accuracy_vs_varied,
    run_label,
    varied_figures,
    varied_numbers,
)

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
    assert sorted(labels) == ["vit_b16 P32", "vit_ti16"]


def test_a_learning_rate_sweep_is_labelled_by_its_overrides_and_plotted_against_the_rate(tmp_path):
    assert varied_numbers(LR_SWEEP) == {"optimizer.lr": [1e-3, 1e-4]}  # seed=1 does not vary
    (path,) = plot_accuracy_vs_varied(LR_SWEEP, tmp_path)
    assert path.name == "accuracy_vs_optimizer.lr.png" and path.stat().st_size > 0
    rows = [{**row, "optimizer.lr": lr} for row, lr in zip(LR_SWEEP, [1e-3, 1e-4], strict=True)]
    series, labels = plotted(accuracy_figure(rows, "optimizer.lr"))
    assert series["best_val_acc"] == [pytest.approx((1e-3, 0.5)), pytest.approx((1e-4, 0.4))]
    assert labels == ["seed=1", "seed=1"]  # the rate is the point's place, not its label


def test_overrides_that_are_not_numbers_get_no_plot_of_their_own(tmp_path):
    rows = [
        {**row, "overrides": f"model={name}"}
        for row, name in zip(ROWS, ["vit_ti16", "vit_b16", "r50"], strict=True)
    ]
    assert varied_numbers(rows) == {}
    assert plot_accuracy_vs_varied(rows, tmp_path) == []


def sweep(overrides: list[str]) -> list[dict]:
    """One ViT-Ti/16 run per overrides string, with made-up accuracies (seeded)."""
    accuracy = random.Random(0)
    return [
        {
            "job": str(job),
            "model": "vit_ti16",
            "patch_size": 16,
            "overrides": line,
            "params": 5.7e6,
            "best_val_acc": (best := 0.55 + 0.3 * accuracy.random()),
            "test_acc": best - 0.03 * accuracy.random(),
        }
        for job, line in enumerate(overrides)
    ]


# A grid as Hydra's range() writes it: float steps with 20 digits; whole-number seeds.
LR_SEED_GRID = sweep(
    [
        f"optimizer.lr={lr} seed={seed}"
        for lr in (0.0003000000000000001, 0.0030000000000000005)
        for seed in (1, 2, 3)
    ]
)


def significant_digits(number: str) -> int:
    return len(re.sub(r"[-+.]|e.*", "", number).lstrip("0"))


def test_seeds_are_ticked_as_the_whole_numbers_they_are(shown_ticks, assert_readable):
    figures = varied_figures(LR_SEED_GRID)
    assert set(figures) == {"optimizer.lr", "seed"}
    assert shown_ticks(figures["seed"].axes[0].xaxis) == ["1", "2", "3"]
    for figure in figures.values():
        assert_readable(figure)


def test_point_labels_are_rounded_and_leave_out_the_axis_override(assert_readable):
    for x, figure in (
        *varied_figures(LR_SEED_GRID).items(),
        ("params", accuracy_figure(LR_SEED_GRID, "params")),
    ):
        _, labels = plotted(figure)
        assert labels, f"no label on the accuracy vs {x} plot"
        for label in labels:
            assert f"{x}=" not in label
            assert all(significant_digits(number) <= 3 for number in DECIMAL.findall(label)), label
        assert_readable(figure)


def test_a_whole_number_override_spanning_decades_stays_on_a_linear_whole_number_axis(shown_ticks):
    figure = varied_figures(sweep([f"model.depth={depth}" for depth in (2, 4, 6, 12, 24)]))["model.depth"]
    axes = figure.axes[0]
    assert axes.get_xscale() == "linear"
    ticks = shown_ticks(axes.xaxis)
    assert ticks and all(re.fullmatch(r"-?\d+", tick) for tick in ticks), ticks


def test_an_optuna_study_with_many_long_overrides_keeps_its_words_apart(shown_ticks, assert_readable):
    trial = random.Random(1234)
    study = sweep(
        [
            f"optimizer.lr={10 ** trial.uniform(-4, -2.5)} optimizer.weight_decay={trial.uniform(0, 0.3)} "
            f"model.drop_path={trial.uniform(0, 0.3)} label_smoothing={trial.choice([0.0, 0.1])}"
            for _ in range(20)
        ]
    )
    figures = varied_figures(study)
    assert set(figures) == {"optimizer.lr", "optimizer.weight_decay", "model.drop_path", "label_smoothing"}
    for figure in (*figures.values(), accuracy_figure(study, "params")):
        assert_readable(figure)
        _, labels = plotted(figure)
        assert 0 < len(labels) < len(study)  # some labelled, the rest left out rather than piled up


def test_a_narrow_range_of_rates_is_ticked_without_labels_running_together(assert_readable):
    rates = [0.0003000000000000001, 0.0004, 0.0005000000000000001, 0.0006000000000000001]
    figure = varied_figures(sweep([f"optimizer.lr={lr}" for lr in rates]))["optimizer.lr"]
    assert figure.axes[0].get_xscale() == "linear"
    assert_readable(figure)
