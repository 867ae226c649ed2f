"""experiment=foodvision_transfer end to end: the weights' preprocessing is resolved, printed, stored
in the checkpoint and reused by eval and predict; the W&B report works; offline runs fail in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from test_cli import wandb_records
from torchvision.transforms import v2

import vitlab.eval
from vitlab.checkpoint import load_classifier, preprocessing_of, stored_preprocessing, trained_preprocessing
from vitlab.data import eval_transform, load_image
from vitlab.data.datamodule import build_datamodule
from vitlab.eval import evaluate
from vitlab.models import create_model
from vitlab.models.preprocessing import Preprocessing
from vitlab.models.weights import to_timm
from vitlab.predict import predict_files
from vitlab.train import train

ROOT = Path(__file__).resolve().parents[1]
AUGREG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "crop_pct": 0.9}


@pytest.fixture
def timm_file(tmp_path: Path) -> Path:
    """A small ViT in timm's key layout with a 10-class head, standing in for the real weights."""
    torch.manual_seed(0)
    path = tmp_path / "vit_tiny_timm.pth"
    torch.save(
        to_timm(create_model("vit_ti16", image_size=32, patch_size=8, num_classes=10).state_dict()), path
    )
    return path


def transfer_overrides(root: Path, weights: Path, *extra: str) -> list[str]:
    return [
        "experiment=foodvision_transfer",
        f"data.root={root}",
        f"model.pretrained_file={weights}",
        "model.image_size=32",
        "model.patch_size=8",
        "data.num_workers=0",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "callbacks.model_summary=null",
        *extra,
    ]


def test_transfer_run_prints_stores_and_reuses_the_weights_preprocessing(
    compose_config, make_image_folder, timm_file, tmp_path, capsys
):
    root = make_image_folder(n_per_class=10, size=48)
    cfg = compose_config(*transfer_overrides(root, timm_file, "logger=[csv,wandb]"), tiny=False)
    results = train(cfg)

    printed = capsys.readouterr().out
    assert "crop_pct: 0.9" in printed and "interpolation: bicubic" in printed
    saved = yaml.safe_load((tmp_path / "run" / "config_resolved.yaml").read_text())["preprocessing"]
    assert saved == {**AUGREG, "resize_size": None}

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = load_classifier(ckpt)
    assert module.hparams["preprocessing"] == {**AUGREG, "resize_size": None}
    assert [n for n, p in module.model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]

    image_file = root / "test" / "pizza" / "0.jpg"
    image = load_image(image_file)
    reference = v2.Compose(  # floor(32 / 0.9) = 35, bicubic, centre crop, [-1, 1]
        [
            v2.Resize(35, v2.InterpolationMode.BICUBIC),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(AUGREG["mean"], AUGREG["std"]),
        ]
    )
    trained = preprocessing_of(module.hparams)
    torch.testing.assert_close(eval_transform(module.image_size, trained)(image), reference(image))
    with torch.no_grad():
        expected = module.eval()(reference(image)[None]).softmax(-1)
    torch.testing.assert_close(predict_files(module, [image_file], trained), expected)

    eval_cfg = compose_config(
        f"ckpt_path={ckpt}", f"data.root={root}", "data.num_workers=0", "logger=csv", config_name="eval"
    )
    metrics = evaluate(eval_cfg)
    assert eval_cfg.preprocessing == module.hparams["preprocessing"]  # what eval prepared images with
    assert metrics["test/acc"] == pytest.approx(
        results["metrics"]["test/acc"]
    )  # same checkpoint, same inputs

    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    logged = {
        item.key or "/".join(item.nested_key)
        for record in wandb_records(run_file)
        if record.HasField("history")
        for item in record.history.item
    }
    assert {"val/predictions/_type", "val/confusion_matrix/_type"} <= logged  # samples with attention


class CaptureModule(L.Callback):
    module: L.LightningModule | None = None
    datamodule: L.LightningDataModule | None = None

    def on_train_end(self, trainer, module):
        self.module, self.datamodule = module, trainer.datamodule


@pytest.mark.slow
def test_preprocessing_options_reach_the_datamodule_the_checkpoint_and_eval_as_one_object(
    compose_config, timm_file, tmp_path, monkeypatch
):
    given = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # a timm file does not say: the user does
    half = ["preprocessing.mean=[0.5,0.5,0.5]", "preprocessing.std=[0.5,0.5,0.5]"]
    capture = CaptureModule()
    train(compose_config(f"model.pretrained={timm_file}", *half, "test=false"), callbacks=[capture])
    assert capture.datamodule.preprocessing == given
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert trained_preprocessing(ckpt) == given
    saved = yaml.safe_load((tmp_path / "run" / "config_resolved.yaml").read_text())["preprocessing"]
    assert saved == stored_preprocessing(given)

    seen: list[Preprocessing] = []

    def recording(data, preprocessing, **options):
        seen.append(preprocessing)
        return build_datamodule(data, preprocessing, **options)

    monkeypatch.setattr(vitlab.eval, "build_datamodule", recording)
    evaluate(compose_config(f"ckpt_path={ckpt}", "logger=csv", config_name="eval"), overrides=[])
    bicubic = compose_config(
        f"ckpt_path={ckpt}", "preprocessing.interpolation=bicubic", "logger=csv", config_name="eval"
    )
    evaluate(bicubic, overrides=[])  # the command line wins over the checkpoint
    assert seen == [given, Preprocessing(given.mean, given.std, "bicubic")]


def test_full_fine_tuning_at_higher_resolution_interpolates_position_embeddings_and_trains_everything(
    compose_config, make_image_folder, timm_file
):
    root = make_image_folder(n_per_class=10, size=48)
    cfg = compose_config(
        *transfer_overrides(root, timm_file, "model.freeze_backbone=false", "model.image_size=48"),
        "logger=csv",
        "trainer.fast_dev_run=1",
        tiny=False,
    )
    assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay, cfg.trainer.gradient_clip_val) == (
        0.9,
        0.0,
        1.0,
    )
    assert cfg.scheduler.decay == "cosine"
    capture = CaptureModule()
    results = train(cfg, callbacks=[capture])
    assert (
        results["global_step"] == 1 and cfg.preprocessing.crop_pct == 0.9
    )  # resize floor(48 / 0.9) = 53, crop 48
    model = capture.module.model
    assert model.position_embedding.shape == (1, 1 + 6 * 6, 192)  # from the checkpoint's 4 x 4 grid
    assert all(p.requires_grad for p in model.parameters())


def run_offline(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "train.py"), "experiment=foodvision_transfer", "logger=csv"]
    command += [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", *overrides]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_without_network_or_local_copies_the_quick_start_fails_in_one_line(
    tmp_path, make_image_folder, monkeypatch
):
    no_data = run_offline(tmp_path, "data.url=http://127.0.0.1:9/pizza_steak_sushi.zip")
    assert no_data.returncode != 0 and "Traceback" not in no_data.stderr
    assert "point data.root" in no_data.stderr.strip().splitlines()[-1]
    root = make_image_folder(n_per_class=2, size=32)
    no_weights = run_offline(tmp_path, f"data.root={root}")
    assert no_weights.returncode != 0 and "Traceback" not in no_weights.stderr
    last = no_weights.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.pretrained=timm:") and "model.pretrained_file=" in last
