"""Variant profiles: counted parameters and MACs, measured speed, the Table 1 comparison."""

import runpy
import sys

import pytest
import torch
from torch import nn

from vitlab.models import available_models, create_model
from vitlab.models.profile import PROFILE_COLUMNS, count_macs, profile_variants, variant_cost

SCRIPT = "scripts/profile_variants.py"


def test_vit_b16_at_224_has_torchvisions_published_parameters_and_17_56_gmacs():
    params, macs = variant_cost("vit_b16", image_size=224, num_classes=1000)  # meta device: instant
    assert params == 86_567_656
    assert macs == pytest.approx(17.56e9, rel=0.01)


def test_macs_are_counted_on_cpu_as_on_meta_attention_products_included():
    """The expected count by hand: patch projection, then per block q/k/v, the two attention
    products, the output projection and the MLP, then the head."""
    kwargs = dict(image_size=32, patch_size=8, num_classes=3, depth=2)
    tokens, patches, dim, mlp, layers = 17, 16, 192, 768, 2
    expected = (
        patches * dim * 3 * 8 * 8
        + layers
        * (3 * tokens * dim * dim + 2 * tokens * tokens * dim + tokens * dim * dim + 2 * tokens * dim * mlp)
        + dim * 3
    )
    with torch.device("meta"):
        on_meta = create_model("vit_ti16", **kwargs)
    on_cpu = create_model("vit_ti16", **kwargs).train()
    assert count_macs(on_meta) == count_macs(on_cpu) == expected
    assert on_cpu.training  # counting leaves the mode as it was


def test_counting_a_model_without_image_size_needs_one():
    model = nn.Sequential(nn.Conv2d(3, 4, kernel_size=2, stride=2))
    with pytest.raises(ValueError, match=r"image_size"):
        count_macs(model)
    assert count_macs(model, image_size=8) == 16 * 4 * 3 * 2 * 2


def test_profile_lists_every_registered_variant_beside_table_1_without_timing_by_default():
    rows = profile_variants()
    assert [row["variant"] for row in rows] == available_models()
    assert all(set(row) <= set(PROFILE_COLUMNS) for row in rows)
    b16 = next(row for row in rows if row["variant"] == "vit_b16")
    assert (b16["layers"], b16["D"], b16["MLP"], b16["heads"], b16["patch"]) == (12, 768, 3072, 12, 16)
    assert b16["params"] == 86_567_656
    assert b16["GFLOPs"] == pytest.approx(2 * b16["GMACs"]) == pytest.approx(35.1, rel=0.01)
    assert (b16["paper model"], b16["paper layers/D/MLP/heads"], b16["paper params"]) == (
        "ViT-Base",
        "12/768/3072/12",
        "86M",
    )
    h14 = next(row for row in rows if row["variant"] == "vit_h14")
    assert h14["params"] == pytest.approx(632e6, rel=0.01)
    assert "train img/s" not in h14
    assert "paper model" not in rows[0]  # Ti/16 is DeiT's size, not in Table 1


@pytest.mark.slow
def test_measuring_reports_training_and_inference_speed_and_peak_memory():
    row = profile_variants(
        ["vit_ti8"], image_size=32, num_classes=3, batch_size=2, measure_up_to_gmacs=1.0, min_run_time=0.05
    )[0]
    assert row["train img/s"] > 0
    assert row["train peak MiB"] > row["params"] * 4 / 2**20  # at least the fp32 weights


def test_cli_prints_the_markdown_table(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--variants", "vit_b16", "vit_l32", "--skip-measure"])
    runpy.run_path(SCRIPT, run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "| " + " | ".join(PROFILE_COLUMNS) + " |"
    assert lines[3].startswith("| vit_b16 | 12 | 768 | 3072 | 12 | 16 | 86,567,656 | 17.56 | 35.13 | - |")
    assert lines[4].startswith("| vit_l32 | 24 | 1024 | 4096 | 16 | 32 |")
