"""callbacks=ema: the exponential moving average of the weights is what is saved and tested."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from vitlab.train import train


class RecordWeights(L.Callback):
    """The raw weights after every optimizer step, and the weights the test ran with."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.tested: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    def on_test_start(self, trainer, module):
        self.tested = {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_ema_weights_are_what_the_checkpoint_holds_and_the_test_uses(compose_config, tmp_path):
    record = RecordWeights()
    cfg = compose_config(
        "callbacks=ema", "callbacks.ema.decay=0.5", "test_ckpt=last", "callbacks.model_summary=null"
    )
    train(cfg, callbacks=[record])
    assert len(record.steps) == 3  # 48 images, batches of 16, one epoch
    # torch's EMA: the first update copies the weights, each later one moves halfway (decay 0.5).
    expected = dict(record.steps[0])
    for step in record.steps[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * v if v.is_floating_point() else v for k, v in step.items()}
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    weight = "model.blocks.0.attention.qkv.weight"
    assert torch.allclose(checkpoint["state_dict"][weight], expected[weight], atol=1e-6)
    assert torch.equal(checkpoint["current_model_state"][weight], record.steps[-1][weight])
    assert not torch.allclose(checkpoint["state_dict"][weight], record.steps[-1][weight])
    assert torch.equal(record.tested[weight], checkpoint["state_dict"][weight])
    # The best checkpoint holds the average too (weights-only checkpoints would hold the raw weights).
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    assert torch.allclose(
        torch.load(best, weights_only=True)["state_dict"][weight], expected[weight], atol=1e-6
    )
