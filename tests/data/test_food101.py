"""data=food101 / foodvision_big: torchvision's Food-101 layout, course-style subsets, its download."""

from __future__ import annotations

import hashlib
import runpy
import tarfile
from pathlib import Path

import pytest
from torchvision.datasets import Food101

from vitlab.data import Food101DataModule
from vitlab.errors import ConfigError, DataError, MissingFileError, NetworkError
from vitlab.models.preprocessing import FROM_SCRATCH

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def files_of(dm: Food101DataModule, split: str) -> list[str]:
    """``<class>/<id>`` of a split's images, checked against their labels."""
    dataset = dm.datasets[split]
    entries = []
    for path, label in zip(dataset.load.paths, dataset.labels, strict=True):
        assert path.parent.name == dm.class_names[label]
        entries.append(f"{path.parent.name}/{path.stem}")
    return sorted(entries)


def test_all_classes_and_images_by_default_with_torchvision_labels(make_food101):
    root = make_food101()
    dm = Food101DataModule(root, preprocessing=FROM_SCRATCH, image_size=16, num_workers=0)
    dm.setup("fit")
    reference = Food101(root, split="train")  # torchvision reading the same layout
    assert dm.class_names == reference.classes == ["pizza", "ramen", "steak", "sushi"]
    assert len(dm.datasets["train"]) == len(reference) == 4 * 10
    assert len(dm.datasets["test"]) == 4 * 4
    assert dm.datasets["val"] is dm.datasets["test"]  # val_fraction=0: the course's choice
    image, label = dm.datasets["train"][0]
    assert image.shape == (3, 16, 16) and label == 0


def test_a_class_subset_keeps_a_seeded_fraction_of_each_split(make_food101):
    root = make_food101()

    def subset(seed: int) -> Food101DataModule:
        dm = Food101DataModule(
            root / "food-101",
            preprocessing=FROM_SCRATCH,
            classes=["sushi", "pizza", "steak"],
            fraction=0.5,
            seed=seed,
            num_workers=0,
        )
        dm.setup("fit")
        return dm

    dm = subset(seed=1)
    assert dm.class_names == ["pizza", "steak", "sushi"]  # sorted, as FoodVision Mini's folders
    train_files, test_files = files_of(dm, "train"), files_of(dm, "test")
    assert (len(train_files), len(test_files)) == (15, 6)  # round(0.5 * 30), round(0.5 * 12)
    assert all(int(f.split("/")[1]) < 10 for f in train_files)  # Food-101's own split is kept
    assert all(int(f.split("/")[1]) >= 10 for f in test_files)
    assert files_of(subset(seed=1), "train") == train_files
    assert files_of(subset(seed=2), "train") != train_files


def test_the_datamodule_and_make_foodvision_draw_the_same_subset(make_food101, tmp_path):
    root = make_food101()
    make = runpy.run_path(str(SCRIPTS / "make_foodvision.py"), run_name="script_under_test")["main"]
    out = tmp_path / "subset"
    make(["--food101", str(root), "--fraction", "0.3", "--seed", "7", "--out", str(out)])
    dm = Food101DataModule(
        root,
        preprocessing=FROM_SCRATCH,
        classes=["pizza", "steak", "sushi"],
        fraction=0.3,
        seed=7,
        num_workers=0,
    )
    dm.setup("fit")
    for split in ("train", "test"):
        written = sorted(
            p.relative_to(out / split).with_suffix("").as_posix() for p in out.glob(f"{split}/*/*")
        )
        assert files_of(dm, split) == written


def test_foodvision_big_is_all_classes_with_a_fifth_of_the_images(compose_config):
    # tests/test_readme.py trains `python train.py data=foodvision_big` on a generated Food-101.
    cfg = compose_config("data=foodvision_big", tiny=False)
    assert (cfg.data.fraction, cfg.data.classes, cfg.data.download) == (0.2, None, True)
    assert cfg.data._target_ == "vitlab.data.Food101DataModule"


def test_bad_options_are_reported_with_the_fix(make_food101, tmp_path):
    root = make_food101()
    with pytest.raises(ConfigError, match=r"unknown Food-101 classes \['tacos'\]; choose from pizza, ramen"):
        Food101DataModule(root, preprocessing=FROM_SCRATCH, classes=["pizza", "tacos"]).class_names  # noqa: B018
    with pytest.raises(ValueError, match=r"fraction=0: must be in \(0, 1\]"):
        Food101DataModule(root, preprocessing=FROM_SCRATCH, fraction=0)
    with pytest.raises(ValueError, match=r"remove data.url"):
        Food101DataModule(root, preprocessing=FROM_SCRATCH, url="https://example.com/food.zip")
    with pytest.raises(ConfigError, match=r"data.fraction=0.01 keeps no train image"):
        Food101DataModule(
            root, preprocessing=FROM_SCRATCH, classes=["pizza", "sushi"], fraction=0.01, num_workers=0
        ).setup("fit")
    missing = Food101DataModule(tmp_path / "nowhere", preprocessing=FROM_SCRATCH, download=False)
    with pytest.raises(MissingFileError, match=r"no Food-101 at .*nowhere.*data.download=true"):
        missing.prepare_data()


def test_a_food101_folder_without_its_class_list_is_reported_as_missing_files(make_food101):
    root = make_food101()
    (root / "food-101" / "meta" / "classes.txt").unlink()
    with pytest.raises(MissingFileError, match=r"classes.txt, train.json, test.json in .*food-101/meta"):
        Food101DataModule(root, preprocessing=FROM_SCRATCH).prepare_data()


@pytest.fixture
def served_food101(make_food101, served, monkeypatch) -> Path:
    """A Food-101 tarball on 127.0.0.1 in place of torchvision's URL (with its MD5 pinned)."""
    www, url = served
    archive = www / "food-101.tar.gz"
    with tarfile.open(archive, "w:gz", dereference=True) as tar:  # images/ is a symbolic link
        tar.add(make_food101() / "food-101", arcname="food-101")
    monkeypatch.setattr(Food101, "_URL", f"{url}/food-101.tar.gz")
    monkeypatch.setattr(Food101, "_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive


def test_prepare_data_downloads_with_torchvision_once_and_checks_the_md5(
    served_food101, tmp_path, monkeypatch
):
    root = tmp_path / "data"
    dm = Food101DataModule(root, preprocessing=FROM_SCRATCH, download=True, num_workers=0, image_size=16)
    dm.prepare_data()
    assert sorted(p.name for p in root.iterdir()) == ["food-101"]  # no archive or partial folder left
    assert dm.class_names == ["pizza", "ramen", "steak", "sushi"]
    served_food101.unlink()  # a second prepare_data must not need the server
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 40

    monkeypatch.setattr(Food101, "_MD5", "0" * 32)
    served_food101.write_bytes(b"not the archive")
    other = tmp_path / "other"
    with pytest.raises(
        DataError, match=r"no Food-101 at .*other \(data.root\) and the download of http://127.*Try again"
    ):
        Food101DataModule(other, preprocessing=FROM_SCRATCH, download=True).prepare_data()
    assert list(other.iterdir()) == []  # nothing that a later run could take for a dataset


def test_a_failed_food101_download_is_a_network_error_with_the_offline_way(served, tmp_path, monkeypatch):
    _, url = served
    monkeypatch.setattr(Food101, "_URL", f"{url}/food-101.tar.gz")  # not on the server: 404
    root = tmp_path / "data"
    with pytest.raises(
        NetworkError, match=rf"downloading {url}/food-101.tar.gz failed: HTTP Error 404.*Without network"
    ):
        Food101DataModule(root, preprocessing=FROM_SCRATCH, download=True).prepare_data()
    assert list(root.iterdir()) == []
