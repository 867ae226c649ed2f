"""The checkpoint format: written with its version, read by one reader, older ones still loaded."""

from __future__ import annotations

import ast
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import trained

from vitlab.checkpoint import (
    FORMAT_KEY,
    FORMAT_VERSION,
    carried_hyperparameters,
    check_fits,
    load_classifier,
    preprocessing_of,
    read_training_checkpoint,
    stored_preprocessing,
    trained_preprocessing,
)
from vitlab.errors import ConfigError, MissingFileError
from vitlab.models import create_model
from vitlab.models.preprocessing import Preprocessing
from vitlab.models.weights import load_pretrained
from vitlab.training.module import ViTClassifier
from vitlab.training.mpp import MaskedPatchPrediction

SRC = Path(__file__).resolve().parents[1] / "src"
OPTIONS = {"image_size": 32, "patch_size": 8, "depth": 1, "dim": 32, "heads": 2, "mlp_dim": 64}
DATA = {"root": "images", "batch_size": 2}
GOOGLE = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def classifier() -> ViTClassifier:
    return ViTClassifier(
        "vit_ti16",
        num_classes=3,
        class_names=["pizza", "steak", "sushi"],
        model_options=OPTIONS,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        **carried_hyperparameters(DATA, GOOGLE),
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(classifier(), tmp_path_factory.mktemp("run") / "last.ckpt")


def rewritten(saved: Path, path: Path, **changes: object) -> Path:
    """A copy of ``saved`` with top-level keys set (None: removed), as another vitlab wrote it."""
    contents = torch.load(saved, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del contents[key]
        else:
            contents[key] = value
    torch.save(contents, path)
    return path


def test_a_trained_checkpoint_carries_the_format_version_and_what_eval_needs(saved: Path):
    stored, raw = read_training_checkpoint(saved), torch.load(saved, weights_only=True)
    assert raw[FORMAT_KEY] == FORMAT_VERSION == stored.format_version == 1
    assert (stored.global_step, stored.epoch, stored.has_optimizer_state) == (1, raw["epoch"], True)
    assert stored.hyper_parameters["class_names"] == ["pizza", "steak", "sushi"]
    assert stored.hyper_parameters["data_config"]["root"] == str(Path("images").resolve())  # absolute
    assert stored.hyper_parameters["preprocessing"] == {
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "interpolation": "bicubic",
        "crop_pct": None,
        "resize_size": None,
    }
    assert trained_preprocessing(saved) == GOOGLE


def test_a_pre_training_checkpoint_carries_the_format_version_too(tmp_path: Path):
    module = MaskedPatchPrediction(
        "vit_ti16",
        model_options=OPTIONS,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        preprocessing=stored_preprocessing(GOOGLE),
    )
    path = trained(module, tmp_path / "mpp.ckpt")
    assert read_training_checkpoint(path).format_version == FORMAT_VERSION


def test_the_loaded_classifier_is_the_trained_one_with_its_preprocessing(saved: Path):
    module = load_classifier(saved)
    stored = read_training_checkpoint(saved)
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, stored.state_dict[name])
    assert module.class_names == ["pizza", "steak", "sushi"]
    assert preprocessing_of(module.hparams) == GOOGLE  # prepared as in training


def test_a_checkpoint_from_before_the_version_existed_reads_as_version_0_and_loads(
    saved: Path, tmp_path: Path
):
    old = rewritten(saved, tmp_path / "old.ckpt", **{FORMAT_KEY: None})
    assert read_training_checkpoint(old).format_version == 0
    torch.testing.assert_close(
        load_classifier(old).model.head.weight, load_classifier(saved).model.head.weight
    )


def test_a_checkpoint_from_a_newer_vitlab_is_refused_in_one_line_everywhere(saved: Path, tmp_path: Path):
    future = rewritten(saved, tmp_path / "future.ckpt", **{FORMAT_KEY: FORMAT_VERSION + 1})
    for read in (
        read_training_checkpoint,
        load_classifier,
        trained_preprocessing,
        partial(load_pretrained, create_model("vit_ti16", num_classes=3, **OPTIONS)),
    ):
        with pytest.raises(
            ConfigError, match=r"future.ckpt was written by a newer vitlab.*upgrade vitlab"
        ) as error:
            read(future)
        assert "\n" not in str(error.value)


def test_a_file_that_is_not_a_checkpoint_is_one_line_and_a_missing_one_is_named(tmp_path: Path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    weights = tmp_path / "weights.pth"
    torch.save(create_model("vit_ti16", **OPTIONS).state_dict(), weights)  # plain weights: no step
    for path in (notes, weights):
        with pytest.raises(
            ConfigError, match=rf"{path.name} is not a Lightning checkpoint.*model.pretrained"
        ) as error:
            read_training_checkpoint(path)
        assert "\n" not in str(error.value)
    with pytest.raises(MissingFileError, match=r"absent.ckpt: no such file.*checkpoints/"):
        load_classifier(tmp_path / "absent.ckpt")
    assert trained_preprocessing(weights) is None  # plain weights do not say how inputs were prepared


def test_a_checkpoint_that_does_not_fit_names_the_weight_and_the_option(saved: Path):
    wider = ViTClassifier("vit_ti16", num_classes=3, model_options={**OPTIONS, "image_size": 48})
    with pytest.raises(ConfigError, match=r"position_embedding has shape .*check model.image_size"):
        check_fits(wider.state_dict(), saved)
    check_fits(classifier().state_dict(), saved)  # the same model fits


def test_torch_load_is_called_in_one_place_of_the_source():
    """Every .pth and .ckpt file is read by checkpoint.load_torch_file: one set of safety options."""
    calls = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]
    assert len(calls) == 1 and calls[0].startswith("vitlab/checkpoint.py:"), calls
