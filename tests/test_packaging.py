"""The built wheel works outside the checkout: it carries every module and config, and its
vitlab-train, vitlab-eval and vitlab-predict run from another folder, reading the configs it ships."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import write_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("src", "conf"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        *isolation,
        "-q",
        "-w",
        str(work),
        str(source),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    (built,) = work.glob("vitlab-*.whl")
    return built


def test_the_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        f"vitlab/{p.relative_to(ROOT / 'src' / 'vitlab').as_posix()}" for p in (ROOT / "src").rglob("*.py")
    }
    configs = {
        f"vitlab/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert modules - names == set()
    assert configs - names == set()


@pytest.mark.slow
def test_train_eval_and_predict_run_from_the_installed_wheel_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}  # not the checkout's src/
    logs = tmp_path / "logs"
    tiny = [
        "model=vit_ti16",
        "model.image_size=32",
        "model.patch_size=16",
        "model.depth=1",
        "trainer.max_epochs=1",
    ]
    data = [
        "data=synthetic",
        "data.train_size=12",
        "data.val_size=6",
        "data.test_size=6",
        "data.batch_size=6",
    ]

    def run(script: str, *args: str) -> None:
        command = [sys.executable, str(site / "bin" / script), *args, f"paths.log_dir={logs}"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    run("vitlab-train", *tiny, *data, "logger=csv")
    (run_dir,) = (logs / "train" / "runs").iterdir()
    sources = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"][
        "config_sources"
    ]
    main = next(source for source in sources if source["provider"] == "main")
    assert (main["schema"], main["path"]) == ("pkg", "vitlab.conf")  # the configs the wheel ships
    assert (run_dir / "results.json").is_file()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    run("vitlab-eval", f"ckpt_path={checkpoint}", *data)
    assert list((logs / "eval" / "runs").glob("*/results.json"))
    write_image(tmp_path / "photo.jpg", 0, 40, 0)
    run("vitlab-predict", f"ckpt_path={checkpoint}", "images=[photo.jpg]")
    assert list((logs / "predict" / "runs").glob("*/predictions.csv"))
