"""Counted cost: parameters and forward MACs, on the meta device as on a real one."""

import pytest
import torch
from torch import nn

from vitlab.models import create_model
from vitlab.models.cost import count_macs, count_parameters, variant_cost


def test_vit_b16_at_224_has_torchvisions_published_parameters_and_17_56_gmacs():
    params, macs = variant_cost("vit_b16", image_size=224, num_classes=1000)  # meta device: instant
    assert params == 86_567_656
    assert macs == pytest.approx(17.56e9, rel=0.01)


def test_parameters_of_a_linear_layer_are_its_weights_and_biases():
    assert count_parameters(nn.Linear(10, 5)) == 10 * 5 + 5


def test_a_variant_costs_the_same_built_on_meta_as_on_cpu():
    kwargs = dict(image_size=32, patch_size=8, num_classes=3, depth=2)
    on_cpu = create_model("vit_ti16", **kwargs)
    assert variant_cost("vit_ti16", **kwargs) == (count_parameters(on_cpu), count_macs(on_cpu))


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
    assert count_macs(model, image_size=8) == 16 * 4 * 3 * 2 * 2  # 4x4 outputs x 4 filters x 3x2x2
