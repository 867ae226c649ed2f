"""vitlab-fewshot: closed-form least squares on the shots, the penalty from leave-one-out, N checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitlab.errors import ConfigError
from vitlab.fewshot import few_shot_accuracy, fewshot, fit_least_squares, leave_one_out_errors

CLASSES = ("a", "b", "c", "d")


def planted(per_class: int, seed: int, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose class is a linear function of them: class means far apart, little noise."""
    means = torch.randn(len(CLASSES), dim, generator=torch.Generator().manual_seed(0)) * 3
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    return means[labels] + 0.1 * torch.randn(len(labels), dim, generator=generator), labels


def test_a_planted_linear_signal_is_read_perfectly_at_every_shot_count():
    table = few_shot_accuracy(
        planted(30, seed=1), planted(20, seed=2), CLASSES, shots=[1, 5, 10, 25], seeds=3
    )
    assert sorted(table) == [1, 5, 10, 25]
    assert all(accuracy == 1.0 for rows in table.values() for accuracy, _ in rows)


def test_leave_one_out_errors_equal_refitting_without_each_shot():
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(9, 20, generator=generator).double(), torch.randn(9, 3, generator=generator).double()
    for penalty, error in zip((0.1, 10.0), leave_one_out_errors(x, y, (0.1, 10.0)), strict=True):
        residuals = []
        for i in range(len(x)):
            keep = torch.arange(len(x)) != i
            xs, ys = x[keep], y[keep]
            weights = xs.T @ torch.linalg.solve(xs @ xs.T + penalty * torch.eye(len(xs), dtype=x.dtype), ys)
            residuals.append(y[i] - x[i] @ weights)
        assert error == pytest.approx(torch.stack(residuals).pow(2).mean().item(), rel=1e-8)


def test_the_penalty_is_the_one_with_the_least_leave_one_out_error():
    features, labels = planted(5, seed=4)
    penalties = (1e-3, 1.0, 1e3, 1e6)
    probe = fit_least_squares(features, labels, len(CLASSES), penalties)
    x = torch.cat([(features.double() - probe.mean) / probe.std, torch.full((len(labels), 1), 100.0)], 1)
    y = 2.0 * torch.nn.functional.one_hot(labels).double() - 1.0
    errors = leave_one_out_errors(x.double(), y, penalties)
    assert probe.penalty == penalties[errors.index(min(errors))]


def test_more_shots_than_a_class_has_are_refused_naming_the_class():
    features, labels = planted(30, seed=1)
    labels[labels == 1] = 0
    labels[:3] = 1  # class "b" keeps 3 images
    with pytest.raises(ValueError, match=r"shots=\[1, 5\]: class 'b' has only 3 training images; use 1 to 3"):
        few_shot_accuracy((features, labels), planted(2, seed=2), CLASSES, shots=[1, 5], seeds=1)


def test_entry_point_refuses_too_many_shots_before_extracting_features(compose_config, make_image_folder):
    root = make_image_folder(n_per_class={"train": 2, "test": 1})
    cfg = compose_config(f"root={root}", "shots=[1,5]", "model=vit_ti16", config_name="fewshot")
    with pytest.raises(ConfigError, match=r"shots=\[1, 5\]: class 'pizza' has only 2 training images"):
        fewshot(cfg)


def test_entry_point_writes_the_table_of_a_random_backbone(compose_config, make_image_folder, capsys):
    root = make_image_folder(n_per_class={"train": 6, "test": 3})
    cfg = compose_config(
        f"root={root}",
        "shots=[1,5]",
        "seeds=2",
        "model=vit_ti16",
        "model.image_size=32",
        "model.patch_size=8",
        config_name="fewshot",
    )
    table = fewshot(cfg)
    printed = capsys.readouterr().out
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert sorted(results["summary"]) == ["1", "5"] and len(results["per_seed"]["5"]) == 2
    assert results["provenance"]["data"]["test"]["images"] > 0 and "command" in results["provenance"]
    for n, rows in table.items():
        mean = sum(accuracy for accuracy, _ in rows) / len(rows)
        assert results["summary"][str(n)]["mean"] == pytest.approx(mean)
        row = next(line for line in printed.splitlines() if line.strip("│ ").startswith(f"{n} "))
        assert f"{mean:.3f}" in row
