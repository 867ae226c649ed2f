"""scripts/make_foodvision.py and scripts/bench_data.py, run in-process on tiny inputs."""

from __future__ import annotations

import hashlib
import json
import math
import re
import runpy
from pathlib import Path

import pytest

from vitlab.data import ImageFolderDataModule
from vitlab.models.preprocessing import FROM_SCRATCH

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def script_main(name: str):
    return runpy.run_path(str(SCRIPTS / name), run_name="script_under_test")["main"]


@pytest.fixture
def food101(make_food101) -> Path:
    """torchvision's Food101 layout with 4 classes: 10 train and 4 test images each."""
    return make_food101()


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def test_make_foodvision_samples_a_seeded_fraction_of_the_chosen_classes(food101, tmp_path, capsys):
    make = script_main("make_foodvision.py")
    out = tmp_path / "subset"
    make(["--food101", str(food101), "--fraction", "0.5", "--seed", "1", "--out", str(out), "--zip"])
    files = listing(out)
    assert sum(f.startswith("train/") for f in files) == 15  # round(0.5 * 30)
    assert sum(f.startswith("test/") for f in files) == 6  # round(0.5 * 12)
    assert {f.split("/")[1] for f in files} == {"pizza", "steak", "sushi"}
    assert all(int(Path(f).stem) < 10 for f in files if f.startswith("train/"))  # Food-101's own split
    printed = capsys.readouterr().out
    sha = re.search(r"data.sha256=([0-9a-f]{64})", printed)[1]
    assert sha == hashlib.sha256((tmp_path / "subset.zip").read_bytes()).hexdigest()

    make(
        [
            "--food101",
            str(food101 / "food-101"),
            "--fraction",
            "0.5",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "again"),
        ]
    )
    assert listing(tmp_path / "again") == files
    make(["--food101", str(food101), "--fraction", "0.5", "--seed", "2", "--out", str(tmp_path / "other")])
    assert listing(tmp_path / "other") != files

    dm = ImageFolderDataModule(out, preprocessing=FROM_SCRATCH, image_size=16, num_workers=0, val_fraction=0)
    dm.setup("fit")  # the subset is a valid image folder
    assert dm.class_names == ["pizza", "steak", "sushi"]


def test_make_foodvision_rejects_unknown_classes_and_existing_output(food101, tmp_path, capsys):
    make = script_main("make_foodvision.py")
    with pytest.raises(SystemExit):
        make(["--food101", str(food101), "--classes", "pizza", "tacos", "--out", str(tmp_path / "x")])
    assert "unknown Food-101 classes ['tacos']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make(["--food101", str(food101), "--out", str(tmp_path)])
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make(["--food101", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")])
    assert re.search(r"no Food-101 at .*train.json, test.json in .*food-101/meta", capsys.readouterr().err)


def test_bench_data_prints_loader_and_model_rates(tmp_path, capsys, monkeypatch):
    bench = script_main("bench_data.py")
    args = [
        "--data-root",
        str(tmp_path / "none"),
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--num-workers",
        "0",
    ]
    bench([*args, "--epochs", "1", "--steps", "1"])
    printed = capsys.readouterr().out
    assert "synthetic images" in printed
    rates = re.findall(r"^\| (.+?) \| ([\d,.]+) \|", printed, flags=re.MULTILINE)
    assert [label.split(" (")[0] for label, _ in rates] == ["loader, synthetic", "vit_ti16 training step"]
    assert all(float(rate.replace(",", "")) > 0 for _, rate in rates)

    record = tmp_path / "runs" / "bench.json"
    monkeypatch.setenv("VITLAB_DATA_DIR", str(tmp_path))  # a published record names no machine's folders
    bench([*args, "--per-worker", "3000", "--record", str(record)])
    results = json.loads(record.read_text())["results"]
    assert results["setting"].startswith("data: synthetic images (no image folder at <data>/none)")
    assert results["columns"] == ["what", "images per CPU-s", "workers"]
    (row,) = results["rows"]
    assert row["what"].startswith("loader, synthetic") and row["workers"] == math.ceil(
        3000 / row["images per CPU-s"]
    )
    assert (
        len(results["provenance"]["git_commit"]) == 40
        and "--per-worker" in results["provenance"]["overrides"]
    )
