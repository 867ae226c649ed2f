"""The paper's recipes (Table 3 pre-training, Table 4 fine-tuning) compose as documented and run small."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch

from vitlab.cli.validate import validate
from vitlab.errors import ConfigError
from vitlab.models import create_model
from vitlab.models.weights import to_timm
from vitlab.train import train

ROOT = Path(__file__).resolve().parents[1]
SMALL_PRETRAIN = ("experiment=paper_pretrain", "global_batch_size=32", "scheduler.warmup_steps=1")


def test_paper_pretrain_is_table_3(compose_config):
    cfg = compose_config("experiment=paper_pretrain", tiny=False)
    assert cfg.optimizer._target_ == "torch.optim.AdamW"  # decoupled weight decay
    assert (list(cfg.optimizer.betas), cfg.optimizer.weight_decay) == ([0.9, 0.999], 0.1)
    assert (cfg.scheduler.decay, cfg.scheduler.warmup_steps) == ("linear", 10_000)
    assert cfg.model.dropout == 0.1
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (1.0, "norm")
    batch = cfg.data.batch_size * cfg.trainer.accumulate_grad_batches
    assert batch == cfg.global_batch_size == 4096


def test_the_accumulation_follows_the_per_step_batch(compose_config):
    cfg = compose_config("experiment=paper_pretrain", "data.batch_size=32", "trainer.devices=2", tiny=False)
    assert cfg.trainer.accumulate_grad_batches == 4096 // (32 * 2)


def test_a_batch_that_cannot_reach_the_global_batch_is_named(compose_config):
    cfg = compose_config(*SMALL_PRETRAIN, "data.batch_size=12")
    with pytest.raises(ConfigError, match=r"global_batch_size=32 is not data.batch_size=12"):
        validate(cfg)


@pytest.mark.slow
def test_paper_pretrain_runs_small_with_accumulated_steps(compose_config):
    cfg = compose_config(*SMALL_PRETRAIN, "model=vit_ti16", "test=false")  # 48 images, batches of 16
    results = train(cfg)
    assert cfg.trainer.accumulate_grad_batches == 2
    assert results["global_step"] == 2  # batches 1+2 accumulate into one step, batch 3 ends the epoch


@pytest.fixture
def timm_weights(tmp_path: Path) -> Path:
    """A small ViT in timm's layout with a 10-class head, standing in for ViT-Ti/16 AugReg."""
    path = tmp_path / "vit_tiny_timm.pth"
    torch.save(
        to_timm(create_model("vit_ti16", image_size=32, patch_size=8, num_classes=10).state_dict()), path
    )
    return path


def small_finetune(root: Path, weights: Path) -> list[str]:
    return [
        "experiment=paper_finetune",
        f"data.root={root}",
        f"model.pretrained_file={weights}",
        "model.image_size=32",  # the recipe's 384 px, shrunk; the 32-px weights need no resizing
        "model.patch_size=8",
        "data.num_workers=0",
        "data.batch_size=4",
        "global_batch_size=8",
        "trainer.max_steps=2",
        "logger=csv",
        "callbacks.model_summary=null",
    ]


def test_paper_finetune_is_table_4_on_the_transfer_base(compose_config):
    cfg = compose_config("experiment=paper_finetune", tiny=False)
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.9, 0.0)
    assert cfg.scheduler.decay == "cosine" and cfg.trainer.gradient_clip_val == 1.0
    assert (cfg.model.image_size, cfg.model.freeze_backbone) == (384, False)
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == cfg.global_batch_size == 512
    assert "_transfer_base" in (ROOT / "conf/experiment/paper_finetune.yaml").read_text()


@pytest.mark.slow
def test_paper_finetune_replaces_the_head_by_a_zero_initialised_one(
    compose_config, make_image_folder, timm_weights
):
    cfg = compose_config(
        *small_finetune(make_image_folder(n_per_class=10), timm_weights), "optimizer.lr=0.01", tiny=False
    )
    captured = []

    class Capture(lightning.Callback):
        def on_train_start(self, trainer, module):
            captured.append(
                (module.model.head.weight.detach().clone(), module.model.head.bias.detach().clone())
            )

    results = train(cfg, callbacks=[Capture()])
    ((weight, bias),) = captured
    assert weight.shape == (3, 192) and not weight.any() and not bias.any()
    assert results["global_step"] == 2
