"""GPU checks (skipped without CUDA): bf16 autocast and torch.compile agree with fp32 eager."""

import pytest
import torch

from vitlab.models import create_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def gpu_model():
    torch.manual_seed(0)
    model = create_model("vit_s16", num_classes=10, image_size=64).cuda().eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    return model


def test_bf16_autocast_logits_agree_with_fp32():
    model = gpu_model()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x).float()
    assert (low - reference).abs().max() <= 0.05 * max(1.0, reference.abs().max().item())
    assert (low.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.75


def test_compiled_model_matches_eager():
    model = gpu_model()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), atol=1e-3, rtol=1e-3)
