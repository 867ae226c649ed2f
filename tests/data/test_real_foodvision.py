"""The real FoodVision Mini images, when a copy sits beside the repository (skipped otherwise)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from vitlab.data import ImageFolderDataModule
from vitlab.data.datamodule import build_datamodule
from vitlab.models.preprocessing import FROM_SCRATCH

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO.parent / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "pizza_steak_sushi").is_dir(), reason=f"no FoodVision Mini copy at {DATA_DIR}"
)


def test_foodvision_mini_config_finds_225_train_75_test_images_and_gives_a_batch():
    overrides = ["+data=foodvision_mini", "+model.image_size=64", f"+paths.data_dir={DATA_DIR}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(overrides=[*overrides, "data.num_workers=0"])
    dm = build_datamodule(cfg.data, FROM_SCRATCH)
    dm.prepare_data()  # a copy is there: nothing is downloaded
    assert dm.class_names == ["pizza", "steak", "sushi"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 225
    assert len(dm.datasets["test"]) == 75
    assert dm.datasets["val"] is dm.datasets["test"]  # the course validates on test
    assert [dm.datasets["train"].labels.count(c) for c in range(3)] == [78, 75, 72]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (32,) and set(labels.tolist()) <= {0, 1, 2}
    assert -3 < images.mean() < 3 and images.std() > 0.5  # normalised photos, not blank tensors


def test_a_notes_file_among_the_real_images_is_skipped_with_one_warning(tmp_path):
    source = DATA_DIR / "pizza_steak_sushi"
    root = shutil.copytree(source, tmp_path / "pizza_steak_sushi")
    (root / "train" / "pizza" / "notes.txt").write_text("which ones have pineapple")
    dm = ImageFolderDataModule(root, preprocessing=FROM_SCRATCH, image_size=32, num_workers=0, val_fraction=0)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    skipped = [str(w.message) for w in record if "(by extension)" in str(w.message)]
    assert skipped == [
        f"skipped 1 file that is not an image (by extension) under {root}, e.g. train/pizza/notes.txt"
    ]
    for split in ("train", "test"):  # every file of the source is an image, and is kept
        assert len(dm.datasets[split]) == sum(path.is_file() for path in (source / split).rglob("*"))
