"""vitlab-analyze: Figure 7 for a checkpoint, pretrained weights or a random model, from the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch
from torchvision.transforms import v2

from vitlab.analyze import analyze
from vitlab.cli.inspected_model import load_inspected_model
from vitlab.errors import ConfigError
from vitlab.models import create_model
from vitlab.models.weights import to_timm
from vitlab.training.module import ViTClassifier

TINY_MODEL = ("model=vit_ti16", "model.image_size=32", "model.patch_size=8")
OPTIONS = {"image_size": 32, "patch_size": 8, "depth": 2}


def test_pretrained_weights_give_all_three_pictures(compose_config, make_image_folder, tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save(create_model("vit_ti16", image_size=32, patch_size=8).state_dict(), weights)
    images = make_image_folder(n_per_class=2)
    cfg = compose_config(
        *TINY_MODEL,
        f"model.pretrained={weights}",
        "preprocessing.mean=[0.5,0.5,0.5]",
        "preprocessing.std=[0.5,0.5,0.5]",
        f"images={images}",
        "num_images=4",
        config_name="analyze",
    )
    results = analyze(cfg)
    assert sorted(results["pictures"]) == ["attention_distance", "embedding_filters", "position_similarity"]
    assert all(Path(path).stat().st_size > 1000 for path in results["pictures"].values())
    assert results["num_images"] == 4
    distances = torch.tensor(results["mean_attention_distance"])
    assert distances.shape == (12, 3)  # ViT-Ti's layers x heads
    assert json.loads((Path(cfg.paths.output_dir) / "results.json").read_text()) == results
    assert results["provenance"]["versions"]["torch"] == torch.__version__  # where the figures came from


def test_a_training_checkpoint_brings_its_model(compose_config, make_image_folder, tmp_path):
    module = ViTClassifier(
        "vit_ti16", num_classes=3, model_options={**OPTIONS, "depth": 3}
    )  # no preprocessing
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "global_step": 10,  # as every training checkpoint has
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")
    images = f"images={make_image_folder(n_per_class=1)}"
    untold = compose_config(f"ckpt_path={tmp_path / 'last.ckpt'}", images, config_name="analyze")
    with pytest.raises(ConfigError, match=r"does not say how its inputs.*preprocessing.mean=\[...\]"):
        analyze(untold)
    half = ["preprocessing.mean=[0.5,0.5,0.5]", "preprocessing.std=[0.5,0.5,0.5]"]
    cfg = compose_config(f"ckpt_path={tmp_path / 'last.ckpt'}", images, *half, config_name="analyze")
    assert cfg.model.name != "vit_ti16"  # the config's default model is another one
    results = analyze(cfg)
    assert cfg.preprocessing.mean == [0.5, 0.5, 0.5] and cfg.preprocessing.interpolation == "bilinear"
    assert torch.tensor(results["mean_attention_distance"]).shape == (3, 3)
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert (saved["model"], saved["pretrained"]) == ("vit_ti16", None)  # the checkpoint's, not the default


def test_hybrid_filters_are_refused_naming_the_option(compose_config):
    cfg = compose_config(
        "model=r50_vit_b16", "model.image_size=32", "figures=[filters]", config_name="analyze"
    )
    with pytest.raises(ConfigError, match=r"figures contains filters, but a hybrid's .* figures=\[position"):
        analyze(cfg)


def test_command_line_refuses_a_missing_image_folder_in_one_line(tmp_path):
    command = [sys.executable, "-m", "vitlab.analyze", *TINY_MODEL, f"paths.log_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "error: images=null" in result.stderr and "Traceback" not in result.stderr


def test_named_weights_bring_their_preprocessing_and_a_bare_file_must_say_it(compose_config, tmp_path):
    weights = tmp_path / "vit_tiny_timm.pth"
    torch.save(to_timm(create_model("vit_ti16", image_size=32, patch_size=8).state_dict()), weights)
    named = compose_config(
        *TINY_MODEL,
        "model.pretrained=timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        f"model.pretrained_file={weights}",
        config_name="analyze",
    )
    _, transform = load_inspected_model(named)
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    reference = v2.Compose(  # AugReg: bicubic to floor(32 / 0.9) = 35, centre crop, [-1, 1]
        [
            v2.Resize(35, v2.InterpolationMode.BICUBIC),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    torch.testing.assert_close(transform(image), reference(image))
    bare = compose_config(*TINY_MODEL, f"model.pretrained={weights}", config_name="analyze")
    with pytest.raises(ConfigError, match="does not say how its inputs were normalised"):
        load_inspected_model(bare)
