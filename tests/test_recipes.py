"""The paper's recipes (Table 3 pre-training, Table 4 fine-tuning) compose as documented and run small."""

from __future__ import annotations

import pytest

from vitlab.config import ConfigError, validate
from vitlab.train import train

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


def test_paper_pretrain_runs_small_with_accumulated_steps(compose_config):
    cfg = compose_config(*SMALL_PRETRAIN, "model=vit_ti16", "test=false")  # 48 images, batches of 16
    results = train(cfg)
    assert cfg.trainer.accumulate_grad_batches == 2
    assert results["global_step"] == 2  # batches 1+2 accumulate into one step, batch 3 ends the epoch
