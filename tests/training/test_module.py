"""ViTClassifier: loss, metrics, predictions and freezing."""

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from vitlab.data import SyntheticDataModule
from vitlab.models.preprocessing import FROM_SCRATCH
from vitlab.sweep_summary import read_csv_history
from vitlab.training.module import ViTClassifier, classification_metrics

MODEL = dict(model_name="vit_ti16", model_options=dict(image_size=32, patch_size=8, depth=2))


def test_top_k_accuracy_only_where_the_class_count_allows():
    assert set(classification_metrics(2)) == {"acc", "f1"}
    assert set(classification_metrics(3)) == {"acc", "f1", "acc_top2"}
    assert set(classification_metrics(100)) == {"acc", "f1", "acc_top5"}


def test_class_names_must_match_the_class_count():
    with pytest.raises(ValueError, match="2 class_names given for num_classes=3"):
        ViTClassifier(**MODEL, num_classes=3, class_names=["a", "b"])


def test_freeze_backbone_leaves_only_the_head_trainable():
    module = ViTClassifier(**MODEL, num_classes=3, freeze_backbone=True)
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]


def test_soft_targets_and_label_smoothing_give_the_expected_loss():
    module = ViTClassifier(**MODEL, num_classes=3, label_smoothing=0.1)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    hard = module._loss(logits, torch.tensor([0]))
    smoothed_target = torch.tensor([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]])
    expected = -(smoothed_target * logits.log_softmax(-1)).sum()
    torch.testing.assert_close(hard, expected)
    soft = module._loss(logits, torch.tensor([[0.5, 0.5, 0.0]]))
    assert soft > hard


def fit_two_epochs(
    tmp_path: Path, optimizer: partial, train_size: int = 32, **trainer_options: object
) -> tuple[L.Trainer, ViTClassifier, SyntheticDataModule]:
    """Two epochs on 3 classes of synthetic 32 px images (30 validation and 30 test), logged to CSV."""
    data = SyntheticDataModule(
        preprocessing=FROM_SCRATCH,
        num_classes=3,
        image_size=32,
        train_size=train_size,
        val_size=30,
        test_size=30,
        batch_size=16,
        num_workers=0,
    )
    module = ViTClassifier(**MODEL, num_classes=3, class_names=data.class_names, optimizer=optimizer)
    trainer = L.Trainer(
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        **trainer_options,
    )
    trainer.fit(module, data)
    return trainer, module, data


def test_fit_logs_metrics_confusion_matrix_and_the_best_accuracy(tmp_path):
    trainer, module, data = fit_two_epochs(tmp_path, partial(torch.optim.AdamW, lr=1e-3))
    metrics = trainer.callback_metrics
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/acc_top2",
        "val/acc_best",
    } <= set(metrics)
    assert module.confusion["val"].sum() == 30  # each validation image counted once
    logged = [row for row in read_csv_history(next(tmp_path.rglob("metrics.csv"))) if "val/acc" in row]
    assert len(logged) == 2  # one row per validation epoch, the sanity check not counted
    assert logged[-1]["val/acc_best"] == pytest.approx(max(row["val/acc"] for row in logged))
    trainer.test(module, data)
    assert module.confusion["test"].shape == (3, 3) and module.confusion["test"].sum() == 30


def test_train_accuracy_is_the_epochs_accuracy_over_every_training_image(tmp_path):
    # lr=0: the weights never move, so the epoch's accuracy is the model's on the whole train split.
    _, module, data = fit_two_epochs(
        tmp_path, partial(torch.optim.SGD, lr=0.0), train_size=40, limit_val_batches=0
    )
    module.eval()
    with torch.no_grad():
        batches = list(data.train_dataloader())
        correct = sum(int((module(images).argmax(1) == labels).sum()) for images, labels in batches)
    logged = [
        row["train/acc"]
        for row in read_csv_history(next(tmp_path.rglob("metrics.csv")))
        if "train/acc" in row
    ]
    assert len(logged) == 2  # once per epoch, reset in between (else the second would count 80 images)
    assert logged == pytest.approx([correct / 40] * 2)


def test_training_without_an_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="without an optimizer"):
        ViTClassifier(**MODEL, num_classes=3).configure_optimizers()


def metrics_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Per-image accuracy and macro F1, by hand from a confusion matrix (rows true, columns predicted)."""
    confusion = confusion.double()
    true_positives = confusion.diag()
    f1 = 2 * true_positives / (confusion.sum(0) + confusion.sum(1))
    return {"acc": float(true_positives.sum() / confusion.sum()), "f1": float(f1.nan_to_num().mean())}


@pytest.mark.parametrize("seed", range(8))
def test_metrics_agree_with_the_confusion_matrix_when_the_first_batch_holds_one_image(seed):
    # A first update of one image is where torchmetrics' compute groups merged top-2 accuracy and
    # macro F1 into one state: F1 was then computed from the top-2 counts.
    torch.manual_seed(seed)
    metrics = classification_metrics(3)
    batches = [(torch.randn(n, 3), torch.randint(0, 3, (n,))) for n in (1, 16, 7)]
    for logits, labels in batches:
        metrics.update(logits, labels)
    logits, labels = map(torch.cat, zip(*batches, strict=True))
    confusion = torch.zeros(3, 3)
    for label, predicted in zip(labels, logits.argmax(-1), strict=True):
        confusion[label, predicted] += 1
    computed = {name: float(value) for name, value in metrics.compute().items()}
    expected = metrics_from_confusion(confusion)
    assert computed["acc"] == pytest.approx(expected["acc"])
    assert computed["f1"] == pytest.approx(expected["f1"])
    top2 = (logits.topk(2, dim=-1).indices == labels[:, None]).any(-1).float().mean()
    assert computed["acc_top2"] == pytest.approx(float(top2))
