"""The real ViT-Ti/16 AugReg weights, when a copy sits beside the repository (skipped otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from vitlab.data import eval_transform, load_image
from vitlab.models import create_model
from vitlab.models.preprocessing import resolve_preprocessing

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
WEIGHTS = DATA_DIR / "weights" / "vit_tiny_patch16_224.pth"
SOURCE = "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
IMAGENET_PIZZA = 963

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"no pretrained weights at {WEIGHTS}")


def test_vitlab_vit_ti16_gives_timms_logits_from_the_file():
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    reference.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    ours = create_model("vit_ti16", pretrained=str(WEIGHTS))
    reference.eval(), ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-4 * expected.abs().max().item())


@pytest.mark.skipif(not (DATA_DIR / "pizza_steak_sushi").is_dir(), reason="no FoodVision Mini copy")
def test_with_the_weights_preprocessing_imagenet_calls_most_test_pizzas_pizza():
    preprocessing = resolve_preprocessing(SOURCE, str(WEIGHTS))
    transform = eval_transform(224, preprocessing)
    model = create_model("vit_ti16", pretrained=str(WEIGHTS)).eval()
    pizzas = sorted((DATA_DIR / "pizza_steak_sushi" / "test" / "pizza").glob("*.jpg"))
    assert len(pizzas) == 25
    with torch.no_grad():
        top1 = model(torch.stack([transform(load_image(p)) for p in pizzas])).argmax(-1)
    assert (top1 == IMAGENET_PIZZA).sum() >= 20
