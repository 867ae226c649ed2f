"""Decoding image files to RGB uint8 tensors, and listing class folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data import UnreadableImageError, load_image
from vitlab.data.folder import list_classes, list_samples
from vitlab.errors import DataError, MissingFileError

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (20, 28, 3), dtype=np.uint8)


def pil_rgb(path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".jpg"),
        ("L", ".jpg"),
        ("CMYK", ".jpg"),
        ("P", ".png"),
        ("RGBA", ".png"),
        ("LA", ".png"),
        ("P", ".gif"),
        ("RGB", ".bmp"),  # not a torchvision format: decoded by PIL
        ("RGB", ".tiff"),
    ],
)
def test_every_colour_mode_becomes_rgb_uint8_like_pil(tmp_path, mode, suffix):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(PIXELS).convert(mode).save(path)
    image = load_image(path)
    assert image.dtype == torch.uint8
    assert image.shape == (3, 20, 28)
    assert torch.equal(image, pil_rgb(path))


@pytest.mark.parametrize("suffix", [".jpg", ".tiff"])  # torchvision's decoder, and the PIL fallback
def test_exif_orientation_is_applied(tmp_path, suffix):
    path = tmp_path / f"phone{suffix}"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(PIXELS).save(path, exif=exif)
    assert load_image(path).shape == (3, 28, 20)


def test_16_bit_png_is_scaled_to_uint8(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257).save(path)
    image = load_image(path)
    assert image.dtype == torch.uint8
    assert torch.equal(image[0], torch.from_numpy(PIXELS[..., 0]))


@pytest.mark.parametrize("content", ["truncated", "text", "empty"])
def test_unreadable_files_raise_an_error_naming_the_file_and_the_fix(tmp_path, content):
    good = tmp_path / "good.jpg"
    Image.fromarray(PIXELS).save(good)
    path = tmp_path / "bad.jpg"
    data = {"truncated": good.read_bytes()[:-200], "text": b"not an image", "empty": b""}[content]
    path.write_bytes(data)
    with pytest.raises(UnreadableImageError, match=r"bad\.jpg.*skip_corrupt=true") as error:
        load_image(path)
    assert isinstance(error.value, DataError)  # a user's to fix: printed without a traceback


def test_hidden_folders_are_not_classes(tmp_path):
    for name in ("sushi", "pizza", ".ipynb_checkpoints", "steak"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("a file beside the classes is not a class")
    assert list_classes(tmp_path) == ["pizza", "steak", "sushi"]


def test_missing_and_empty_splits_are_reported(tmp_path):
    with pytest.raises(MissingFileError, match=r"no folder .*train.*one folder per class"):
        list_classes(tmp_path / "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"train holds no class folders"):
        list_classes(tmp_path / "train")


def test_samples_are_labelled_by_class_order_and_visible_non_images_are_listed(make_image_folder):
    root = make_image_folder(classes=("a", "b"), n_per_class=2, splits=("train",))
    (root / "train" / "b" / "readme.txt").write_text("oops")
    (root / "train" / "b" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "a" / "nested").mkdir()
    Image.fromarray(PIXELS).save(root / "train" / "a" / "nested" / "deep.png")
    samples, not_images = list_samples(root / "train", ["a", "b"])
    assert [(path.relative_to(root / "train").as_posix(), label) for path, label in samples] == [
        ("a/0.jpg", 0),
        ("a/1.jpg", 0),
        ("a/nested/deep.png", 0),
        ("b/0.jpg", 1),
        ("b/1.jpg", 1),
    ]
    assert not_images == [root / "train" / "b" / "readme.txt"]


def test_a_class_folder_without_images_is_an_error(make_image_folder):
    root = make_image_folder(classes=("a", "b"), n_per_class=1, splits=("train",))
    for image in (root / "train" / "b").iterdir():
        image.unlink()
    (root / "train" / "b" / "list.csv").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*train/b holds no images.*add images"):
        list_samples(root / "train", ["a", "b"])


def test_a_missing_class_folder_names_the_classes_every_split_needs(make_image_folder):
    root = make_image_folder(classes=("a", "b"), n_per_class=1, splits=("train",))
    with pytest.raises(MissingFileError, match=r"missing class folder .*train/c: .*\(a, b, c\)"):
        list_samples(root / "train", ["a", "b", "c"])
