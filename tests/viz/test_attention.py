"""Attention rollout, its overlays, and the attention-maps script on a real checkpoint."""

import runpy
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from matplotlib.image import imread
from torch.utils.data import DataLoader, TensorDataset

from vitlab.checkpoint import stored_preprocessing
from vitlab.models import create_model
from vitlab.models.preprocessing import FROM_SCRATCH
from vitlab.training.module import ViTClassifier
from vitlab.viz.attention import (
    attention_overlays,
    attention_rollout,
    overlay_figure,
    save_attention_overlays,
    upsample_to_image,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "attention_maps.py"
TINY = dict(image_size=32, patch_size=8, num_classes=3, depth=2)


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = create_model("vit_ti16", **TINY).eval()
    with torch.no_grad():  # a trained-looking, non-uniform attention: the init's is nearly flat
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    return model


def test_rollout_is_a_map_per_image_that_sums_to_one_over_patches(model):
    maps = attention_rollout(model, torch.randn(5, 3, 32, 32))
    assert maps.shape == (5, 4, 4)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(5))
    assert maps.flatten(1).std(dim=1).min() > 0  # not uniform: it depends on the image


def test_upsampling_fills_square_or_rectangular_images_in_0_1():
    maps = torch.rand(2, 4, 4)
    assert upsample_to_image(maps, 32).shape == (2, 32, 32)
    pixels = upsample_to_image(maps, (20, 48))
    assert pixels.shape == (2, 20, 48)
    assert pixels.amin(dim=(1, 2)).tolist() == [0.0, 0.0] and pixels.amax(dim=(1, 2)).tolist() == [1.0, 1.0]


def test_overlays_are_one_png_per_image_and_leave_the_model_mode_alone(model, tmp_path):
    raw = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), torch.rand(3, 40, 56)]
    paths = [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    model.train()
    written = save_attention_overlays(model, torch.randn(2, 3, 32, 32), raw, paths, titles=["one", "two"])
    assert written == paths
    assert model.training
    for path in paths:
        pixels = imread(path)
        assert pixels.shape[:2] == (340, 640) and pixels.std() > 0
    with pytest.raises(ValueError, match=r"2 images, 1 raw images and 2 paths"):
        save_attention_overlays(model, torch.randn(2, 3, 32, 32), raw[:1], paths)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint as train.py writes it, after one training step of a tiny model."""
    module = ViTClassifier(
        "vit_ti16",
        num_classes=3,
        class_names=["pizza", "steak", "sushi"],
        model_options={"image_size": 32, "patch_size": 8, "depth": 2},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        preprocessing=stored_preprocessing(FROM_SCRATCH),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    batches = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), batch_size=4)
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=batches)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_script_writes_a_png_per_image_and_logs_them_to_offline_wandb(
    checkpoint, make_image_folder, tmp_path, monkeypatch, capsys
):
    images = make_image_folder("photos", n_per_class=1, size=40, splits=("test",))
    out = tmp_path / "attention"
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = [
        str(SCRIPT),
        "--ckpt",
        str(checkpoint),
        "--images",
        str(images / "test" / "pizza" / "0.jpg"),
        str(images / "test"),
        "--out",
        str(out),
        "--wandb",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "4 attention maps" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["000_0.png", "001_0.png", "002_0.png", "003_0.png"]
    for png in pngs:
        assert imread(png).std() > 0
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("*.wandb"))


def test_an_overlay_is_the_picture_blended_with_the_rollouts_colours(model):
    """The one drawing of an overlay (PNGs and W&B reports): at the most attended pixel the colour
    map's top colour, at the least its bottom one, each mixed with the picture at alpha."""
    from matplotlib import colormaps

    picture = torch.rand(3, 32, 32)
    images = torch.randn(1, 3, 32, 32)
    (overlay,) = attention_overlays(model, images, [picture], alpha=0.3)
    heat = upsample_to_image(attention_rollout(model, images), 32)[0]
    jet = colormaps["jet"]
    for pixel, value in ((heat.argmax(), 1.0), (heat.argmin(), 0.0)):
        y, x = divmod(int(pixel), 32)
        expected = 0.7 * picture[:, y, x] + 0.3 * torch.tensor(jet(value)[:3], dtype=torch.float32)
        torch.testing.assert_close(overlay[:, y, x], expected)


@pytest.mark.parametrize("size", [(384, 512), (512, 341)])
def test_a_long_title_stays_inside_the_picture(size, assert_readable):
    picture = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    figure = overlay_figure(picture, torch.rand(3, *size), "rollout | pred: strawberry_shortcake (0.93)")
    assert_readable(figure)
