"""Masked patch prediction (ViT paper, appendix B.1.2): the corruption rule, the colour targets, that
it learns, and that its checkpoint fine-tunes through model.pretrained."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from vitlab.cli.validate import validate
from vitlab.errors import ConfigError
from vitlab.training.module import ViTClassifier
from vitlab.training.mpp import MaskedPatchPrediction, colour_classes, corrupt_patches

TINY = dict(image_size=32, patch_size=8, depth=2, dim=64, mlp_dim=128, heads=4)


def test_half_the_patches_are_corrupted_80_10_10_into_mask_random_and_kept():
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(400, 64, 16, generator=generator)  # 25 600 patches
    mask = torch.full((1, 1, 16), 7.0)
    corrupted, chosen = corrupt_patches(patches, mask, generator=generator)
    assert (chosen.sum(dim=1) == 32).all()  # exactly half of every image's 64 patches
    assert torch.equal(corrupted[~chosen], patches[~chosen])  # the others untouched
    changed = corrupted[chosen]  # [12 800, 16]
    masked = (changed == 7.0).all(-1)
    kept = (changed == patches[chosen]).all(-1)
    replaced = ~masked & ~kept
    # Each replacement is some other patch of the batch (random noise never repeats by chance).
    donors = patches.reshape(-1, 16)
    sample = changed[replaced][:50]
    assert all((donors == row).all(-1).any() for row in sample)
    n = chosen.sum().item()
    # Binomial standard errors on 12 800 draws: 0.0035 (80 %) and 0.0027 (10 %); allow 4 of them.
    assert masked.sum().item() / n == pytest.approx(0.8, abs=0.014)
    assert replaced.sum().item() / n == pytest.approx(0.1, abs=0.011)
    assert kept.sum().item() / n == pytest.approx(0.1, abs=0.011)


def test_colour_targets_are_the_3_bit_mean_colours_of_the_patches():
    # A 2 x 2 grid of 4-px patches with known colours; the last one half black, half white.
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[0, :, :4, :4] = torch.tensor([0.0, 0.0, 0.0])[:, None, None]  # black -> (0, 0, 0)
    pixels[0, :, :4, 4:] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # red -> (7, 0, 0)
    pixels[0, :, 4:, :4] = torch.tensor([0.3, 0.6, 0.99])[:, None, None]  # -> (2, 4, 7)
    pixels[0, :, 4:, 4:6] = 1.0  # mean 0.5 in every channel -> (4, 4, 4)
    classes = colour_classes(pixels, patch_size=4, bits=3)
    expected = [0, 7 * 64, 2 * 64 + 4 * 8 + 7, 4 * 64 + 4 * 8 + 4]
    assert classes.tolist() == [expected]
    assert colour_classes(torch.ones(1, 3, 8, 8), 4).max() == 511  # 512 classes: 0..511


def test_targets_undo_the_data_normalisation():
    module = MaskedPatchPrediction("vit_ti16", TINY, preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3})
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.equal(module.targets((pixels - 0.5) / 0.25), colour_classes(pixels, 8))


@pytest.mark.slow
def test_pretraining_lowers_its_own_loss_on_synthetic_images():
    from vitlab.data.synthetic import SyntheticImages

    torch.manual_seed(0)
    images = SyntheticImages(num_classes=3, image_size=32, seed=0)
    batch = torch.stack([images(i) for i in range(8)]).float() / 255  # [8, 3, 32, 32] in [0, 1]
    module = MaskedPatchPrediction("vit_ti16", TINY, preprocessing={"mean": [0.0] * 3, "std": [1.0] * 3})
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        logits, chosen = module(batch)
        loss = F.cross_entropy(logits, module.targets(batch)[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(512.0)).item(), rel=1e-3)  # zero head
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.corrupt_fraction=1.5", "task.corrupt_fraction=1.5"),
        ("task.random_probability=0.3", "task.random_probability=0.3"),
        ("task.colour_bits=0", "task.colour_bits=0"),
    ],
)
def test_bad_mpp_options_are_named_before_training(compose_config, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config("task=mpp", override))


class CaptureModule(L.Callback):
    module: L.LightningModule | None = None

    def on_train_end(self, trainer, module):
        self.module = module


@pytest.mark.slow
def test_an_mpp_checkpoint_fine_tunes_through_model_pretrained(compose_config, tmp_path: Path):
    from vitlab.train import resolve_run_preprocessing, train

    options = ["model.tokenizer=shifted", "model.attention=lsa", "model.position_embedding=sincos2d"]
    capture = CaptureModule()
    # W&B (offline) too: its classification reports must stand aside for this task.
    google = [
        "preprocessing.mean=[0.5,0.5,0.5]",
        "preprocessing.std=[0.5,0.5,0.5]",
    ]  # not the from-scratch default
    cfg = compose_config("task=mpp", *options, *google, "test=false", "logger=[csv,wandb]")
    results = train(cfg, callbacks=[capture])
    assert 0 <= results["metrics"]["val/acc"] <= 1
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["model_name"] == "vit_ti16"
    assert {"mask_embedding", "colour_head.weight"} <= set(saved["state_dict"])
    with pytest.warns(UserWarning, match="zero-initialised 3-class head"):
        classifier = ViTClassifier(
            "vit_ti16",
            num_classes=3,
            model_options=dict(
                image_size=32,
                patch_size=8,
                tokenizer="shifted",
                attention="lsa",
                position_embedding="sincos2d",
            ),
            pretrained=str(checkpoint),
        )
    # As `+ablation=mpp` fine-tunes: the checkpoint alone says how its inputs were normalised.
    finetune = compose_config(*options, f"model.pretrained={checkpoint}")
    assert resolve_run_preprocessing(finetune).mean == (0.5, 0.5, 0.5)
    assert list(finetune.preprocessing.mean) == list(finetune.preprocessing.std) == [0.5, 0.5, 0.5]
    backbone = capture.module.model.state_dict()
    for key, value in classifier.model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, backbone[key]), key
