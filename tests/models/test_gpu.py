"""GPU checks (skipped without CUDA): bf16 autocast and torch.compile agree with fp32 eager."""

import pytest
import torch

from vitlab.models import create_model
from vitlab.models.preprocessing import FROM_SCRATCH

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


def test_training_speed_times_gpu_batches_with_events_and_logs_a_rate(tmp_path):
    from functools import partial

    import lightning as L

    from vitlab.data import SyntheticDataModule
    from vitlab.training.callbacks import TrainingSpeed
    from vitlab.training.module import ViTClassifier

    data = SyntheticDataModule(
        preprocessing=FROM_SCRATCH,
        num_classes=3,
        image_size=32,
        train_size=64,
        val_size=8,
        test_size=8,
        batch_size=16,
    )
    module = ViTClassifier(
        "vit_ti16",
        3,
        model_options=dict(image_size=32, patch_size=8),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    speed = TrainingSpeed()
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[speed],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    assert len(speed._events) == 4 and speed._images == 64
    assert trainer.callback_metrics["train/images_per_sec"] == pytest.approx(64 / speed._seconds)
