"""The one Preprocessing: where each source's comes from, and how the user's options go on top."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.data import create_transform
from torchvision.models import ViT_B_16_Weights
from torchvision.transforms import v2

from vitlab.data.transforms import eval_transform, resize_size_for
from vitlab.models import create_model
from vitlab.models.preprocessing import (
    FROM_SCRATCH,
    WEIGHT_PREPROCESSING,
    Preprocessing,
    checkpoint_preprocessing,
    resolve_preprocessing,
    source_preprocessing,
)
from vitlab.models.weights import to_timm, to_torchvision

AUGREG = "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
TINY = {"image_size": 32, "patch_size": 8}


def _save(state_dict: dict, path: Path) -> str:
    torch.save(state_dict, path)
    return str(path)


@pytest.fixture
def tiny_state_dict() -> dict[str, torch.Tensor]:
    return create_model("vit_ti16", num_classes=10, **TINY).state_dict()


@pytest.mark.parametrize("source", [s for s in WEIGHT_PREPROCESSING if s.startswith("timm:")])
def test_the_tables_timm_rows_agree_with_timms_pretrained_cfg(source):
    ours = WEIGHT_PREPROCESSING[source]
    theirs = timm.models.get_pretrained_cfg(source.removeprefix("timm:"))
    assert (ours.mean, ours.std, ours.interpolation, ours.crop_pct) == (
        theirs.mean,
        theirs.std,
        theirs.interpolation,
        theirs.crop_pct,
    )


def test_a_timm_source_outside_the_table_asks_timm():
    name = "vit_tiny_patch16_384.augreg_in21k_ft_in1k"
    theirs = timm.models.get_pretrained_cfg(name)
    assert f"timm:{name}" not in WEIGHT_PREPROCESSING
    ours = source_preprocessing(f"timm:{name}")
    assert (ours.mean, ours.interpolation, ours.crop_pct) == (
        theirs.mean,
        theirs.interpolation,
        theirs.crop_pct,
    )
    with pytest.raises(ValueError, match=r"timm knows no such pretrained model"):
        source_preprocessing("timm:vit_nonexistent_patch16_224.nothing")


def test_the_tables_timm_sources_need_no_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "timm.models", None)
    assert resolve_preprocessing(AUGREG).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"timm, which knows it, is not installed.*preprocessing\.mean"):
        resolve_preprocessing("timm:vit_small_patch16_384.augreg_in21k_ft_in1k")


def test_a_torchvision_source_reads_its_weights_own_transform():
    transform = ViT_B_16_Weights.IMAGENET1K_V1.transforms()
    resolved = resolve_preprocessing("torchvision:ViT_B_16_Weights.IMAGENET1K_V1")
    assert list(resolved.mean) == transform.mean and list(resolved.std) == transform.std
    assert resolved.interpolation == transform.interpolation.value
    assert resize_size_for(224, crop_pct=resolved.crop_pct) == transform.resize_size[0]


def test_files_google_npz_is_half_and_torchvision_is_imagenet(tmp_path, tiny_state_dict):
    npz = tmp_path / "ViT-Ti_16.npz"
    np.savez(npz, **{"embedding/kernel": np.zeros((8, 8, 3, 192), np.float32)})
    torchvision_file = _save(to_torchvision(tiny_state_dict), tmp_path / "tv.pth")
    assert resolve_preprocessing(str(npz)).mean == resolve_preprocessing(str(npz)).std == (0.5,) * 3
    imagenet = resolve_preprocessing(torchvision_file)
    assert (imagenet.mean, imagenet.std) == (FROM_SCRATCH.mean, FROM_SCRATCH.std)


def test_a_bare_timm_file_is_refused_naming_both_fixes(tmp_path, tiny_state_dict):
    path = _save(to_timm(tiny_state_dict), tmp_path / "vit_tiny.pth")
    with pytest.raises(ValueError, match=r"timm-format file does not say") as error:
        resolve_preprocessing(path)
    assert f"model.pretrained_file={path}" in str(error.value) and "preprocessing.mean=" in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    given = resolve_preprocessing(path, options={"mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": None})
    assert given == Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


def test_a_named_source_with_its_file_takes_the_names_preprocessing(tmp_path, tiny_state_dict):
    path = _save(to_timm(tiny_state_dict), tmp_path / "vit_tiny.pth")
    assert resolve_preprocessing(AUGREG, path) == resolve_preprocessing(AUGREG)
    with pytest.raises(ValueError, match=r"model.pretrained_file=.*names none"):
        resolve_preprocessing(None, path)
    with pytest.raises(FileNotFoundError, match=r"model.pretrained_file=.*missing.pth: no such file"):
        resolve_preprocessing(AUGREG, str(tmp_path / "missing.pth"))


def test_what_the_user_sets_wins_over_the_weights():
    weights = WEIGHT_PREPROCESSING[AUGREG]
    resolved = resolve_preprocessing(AUGREG, options={"mean": [0.4] * 3, "interpolation": "bilinear"})
    assert resolved == replace(weights, mean=(0.4, 0.4, 0.4), interpolation="bilinear")


def test_without_weights_the_course_transform_is_kept():
    assert resolve_preprocessing(None) == FROM_SCRATCH
    assert Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", None, None) == FROM_SCRATCH


def test_a_checkpoint_gives_its_own_with_the_options_on_top_and_old_ones_still_read():
    old = {"preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": None, "crop_pct": 0.9}}
    assert checkpoint_preprocessing("old.ckpt", old) == Preprocessing((0.5,) * 3, (0.5,) * 3, "bilinear", 0.9)
    bicubic = checkpoint_preprocessing("old.ckpt", old, {"interpolation": "bicubic", "mean": None})
    assert bicubic == Preprocessing((0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    with pytest.raises(ValueError, match=r"ckpt_path=bare.ckpt does not say.*preprocessing.mean=\[...\]"):
        checkpoint_preprocessing("bare.ckpt", {"preprocessing": None})


def test_a_mean_or_std_must_give_one_value_per_colour_channel():
    with pytest.raises(ValueError, match=r"mean=\[0.5, 0.5\] must hold 3 values"):
        Preprocessing((0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize("size", [224, 384])
def test_resize_follows_the_image_size_as_in_timm(size):
    weights = WEIGHT_PREPROCESSING[AUGREG]
    reference = create_transform(
        input_size=(3, size, size), crop_pct=weights.crop_pct, interpolation=weights.interpolation
    )
    reference_resize = next(t for t in reference.transforms if type(t).__name__ == "Resize")
    assert resize_size_for(size, crop_pct=weights.crop_pct) == reference_resize.size == math.floor(size / 0.9)
    ours = eval_transform(size, weights)
    image = torch.randint(0, 256, (3, 300, 500), dtype=torch.uint8)
    expected = v2.Compose(
        [v2.Resize(reference_resize.size, v2.InterpolationMode.BICUBIC), v2.CenterCrop(size)]
    )
    assert torch.equal(ours.prepare(image), expected(image))


def test_an_explicit_resize_size_wins_over_crop_pct():
    assert resize_size_for(224, resize_size=256, crop_pct=0.9) == 256
    with pytest.raises(ValueError, match=r"crop_pct=1.5 must be in \(0, 1\]"):
        resize_size_for(224, crop_pct=1.5)
