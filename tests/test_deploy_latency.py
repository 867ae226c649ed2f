"""scripts/deploy_latency.py: size and CPU latency of any training checkpoint."""

from __future__ import annotations

import json
import runpy
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vitlab.training.module import ViTClassifier

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "deploy_latency.py"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    module = ViTClassifier(
        "vit_ti16",
        num_classes=3,
        class_names=["pizza", "steak", "sushi"],
        model_options={"image_size": 32, "patch_size": 8, "depth": 2},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.9},
    )
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False)
    batches = DataLoader(TensorDataset(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])), batch_size=3)
    trainer.fit(module, train_dataloaders=batches)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def run_script(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_reports_the_weights_size_and_forward_and_preprocessing_times(
    checkpoint, make_image_folder, tmp_path, monkeypatch, capsys
):
    image = make_image_folder(n_per_class=1, size=40, splits=("test",)) / "test" / "pizza" / "0.jpg"
    out = tmp_path / "latency.json"
    run_script(
        monkeypatch, "--ckpt", str(checkpoint), "--image", str(image), "--threads", "1", "--min-run-time", "0.05",
        "--json", str(out),
    )  # fmt: skip
    row = json.loads(out.read_text())
    model = ViTClassifier.load_from_checkpoint(checkpoint, weights_only=True).model
    assert row["params"] == sum(p.numel() for p in model.parameters())
    float32_bytes = sum(t.numel() * 4 for t in model.state_dict().values())
    assert float32_bytes <= row["state_dict_bytes"] <= 1.1 * float32_bytes  # the tensors, little else
    assert row["forward_s"] > 0 and row["preprocessing_s"] > 0 and row["threads"] == 1
    table = capsys.readouterr().out
    assert (
        f"| {row['state_dict_bytes'] / 2**20:.1f} | {row['forward_s']:.4f} |" in table and "EffNetB2" in table
    )


def test_a_missing_checkpoint_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"--ckpt .*missing.ckpt: no such file"):
        run_script(monkeypatch, "--ckpt", str(tmp_path / "missing.ckpt"))
