"""Few-shot linear evaluation (paper section 4.1): ``vitlab-fewshot root=images/ model.pretrained=...``.

"Few-shot accuracies are obtained by solving a regularized least-squares regression problem that
maps the (frozen) representation of a subset of training images to {-1, 1}^K target vectors." The
solution is closed-form, so a whole table (N images per class, several draws of the shots) takes
seconds once the features are extracted. As in the authors' big_vision ``fewshot_lsr``, features
are standardised on the shots and a constant feature of 100 stands in for an almost unpenalised
bias. The penalty is chosen per draw by leave-one-out cross-validation on the shots alone (the
closed-form ridge LOO residuals), never on the test images.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch import Tensor

from vitlab.cli.command import command
from vitlab.cli.inspected_model import load_inspected_model, resolve_device
from vitlab.data import load_image
from vitlab.data.folder import list_classes, list_samples
from vitlab.data.transforms import Pipeline
from vitlab.errors import ConfigError
from vitlab.loggers import build_loggers
from vitlab.models import VisionTransformer
from vitlab.provenance import Provenance, files_fingerprint, hydra_overrides

log = logging.getLogger(__name__)

PENALTIES = tuple(2.0**k for k in range(-10, 20))  # big_vision's grid of L2 penalties
BIAS_FEATURE = 100.0  # a large constant feature: its weight, the bias, is barely penalised


@dataclass(frozen=True)
class LinearProbe:
    """Standardise, append the bias feature, multiply: the scores of each class."""

    mean: Tensor
    std: Tensor
    weights: Tensor  # [D + 1, K]
    penalty: float

    def predict(self, features: Tensor) -> Tensor:
        return (_design(features.double(), self.mean, self.std) @ self.weights).argmax(dim=1)


def _design(features: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    x = (features - mean) / std
    return torch.cat([x, torch.full_like(x[:, :1], BIAS_FEATURE)], dim=1)


def leave_one_out_errors(x: Tensor, y: Tensor, penalties: Sequence[float]) -> list[float]:
    """Mean squared leave-one-out residual of ridge regression ``x`` -> ``y`` for each penalty, in
    closed form: residual_i / (1 - H_ii) with the hat matrix H = X X^T (X X^T + penalty I)^-1."""
    eigenvalues, q = torch.linalg.eigh(x @ x.T)
    eigenvalues = eigenvalues.clamp_min(0.0)
    qty = q.T @ y
    errors = []
    for penalty in penalties:
        shrink = eigenvalues / (eigenvalues + penalty)  # H = Q diag(shrink) Q^T
        fitted = q @ (shrink[:, None] * qty)
        leverage = (q**2 * shrink).sum(dim=1)
        residuals = (y - fitted) / (1.0 - leverage).clamp_min(1e-12)[:, None]
        errors.append(residuals.pow(2).mean().item())
    return errors


def fit_least_squares(
    features: Tensor, labels: Tensor, num_classes: int, penalties: Sequence[float] = PENALTIES
) -> LinearProbe:
    """Ridge regression of ``features`` ``[n, D]`` onto {-1, 1}^K targets, the penalty chosen by
    leave-one-out squared error. Solved in the n x n kernel form (few shots, many features)."""
    features = features.double()
    mean = features.mean(dim=0, keepdim=True)
    std = features.std(dim=0, unbiased=False, keepdim=True) + 1e-5
    x = _design(features, mean, std)  # [n, D+1]
    y = 2.0 * torch.nn.functional.one_hot(labels, num_classes).double() - 1.0  # [n, K]
    errors = leave_one_out_errors(x, y, penalties)
    penalty = penalties[errors.index(min(errors))]
    gram = x @ x.T + penalty * torch.eye(len(x), dtype=x.dtype)
    weights = x.T @ torch.linalg.solve(gram, y)  # X^T (X X^T + penalty I)^-1 Y
    return LinearProbe(mean, std, weights, penalty)


def sample_shots(labels: Tensor, shots: int, seed: int, class_names: Sequence[str]) -> Tensor:
    """Indices of ``shots`` images per class, drawn with ``seed``; refuses a class with fewer."""
    check_shots(labels, [shots], class_names)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for index in range(len(class_names)):
        members = (labels == index).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(chosen)


def check_shots(labels: Tensor, shots: Sequence[int], class_names: Sequence[str]) -> None:
    counts = torch.bincount(labels, minlength=len(class_names))
    smallest = int(counts.argmin())
    if max(shots) > counts[smallest] or min(shots) < 1:
        raise ValueError(
            f"shots={list(shots)}: class {class_names[smallest]!r} has only {int(counts[smallest])} training "
            f"images; use 1 to {int(counts[smallest])} images per class."
        )


def few_shot_accuracy(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    class_names: Sequence[str],
    shots: Sequence[int],
    seeds: int,
) -> dict[int, list[tuple[float, float]]]:
    """``{N: [(test accuracy, chosen penalty) per seed]}`` for N training images per class."""
    (train_features, train_labels), (test_features, test_labels) = train, test
    check_shots(train_labels, shots, class_names)
    table = {}
    for n in shots:
        rows = []
        for seed in range(seeds):
            chosen = sample_shots(train_labels, n, seed, class_names)
            probe = fit_least_squares(train_features[chosen], train_labels[chosen], len(class_names))
            accuracy = (probe.predict(test_features) == test_labels).double().mean().item()
            rows.append((accuracy, probe.penalty))
        table[n] = rows
    return table


@torch.inference_mode()
def extract_features(
    model: VisionTransformer,
    transform: Pipeline,
    files: Sequence[Path],
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """The frozen representation y (eq. 4) of every file, ``[len(files), D]``."""
    features = []
    for start in range(0, len(files), batch_size):
        batch = torch.stack([transform(load_image(f)) for f in files[start : start + batch_size]])
        features.append(model.forward_features(batch.to(device)).float().cpu())
    return torch.cat(features)


def _split(root: Path, split: str, class_names: Sequence[str]) -> tuple[list[Path], Tensor]:
    samples, _ = list_samples(root / split, class_names)
    return [path for path, _ in samples], torch.tensor([label for _, label in samples])


def fewshot(cfg: DictConfig) -> dict[int, list[tuple[float, float]]]:
    """The table for the configured backbone on ``root``'s train (shots) and test splits."""
    provenance = Provenance(cfg.get("seed"), hydra_overrides())
    root = Path(cfg.root)
    class_names = list_classes(root / "train")
    if list_classes(root / "test") != class_names:
        raise ConfigError(
            f"root={root}: test/ has classes {list_classes(root / 'test')}, train/ has {class_names}: "
            "give both splits the same class folders."
        )
    train_files, train_labels = _split(root, "train", class_names)
    try:
        check_shots(train_labels, list(cfg.shots), class_names)
    except ValueError as error:
        raise ConfigError(f"{error} (in {root / 'train'})") from None
    test_files, test_labels = _split(root, "test", class_names)
    model, transform = load_inspected_model(cfg)
    device = resolve_device(cfg.device)
    model.to(device)
    started = time.perf_counter()
    features = {
        split: extract_features(model, transform, files, cfg.batch_size, device)
        for split, files in (("train", train_files), ("test", test_files))
    }
    extracted = time.perf_counter()
    table = few_shot_accuracy(
        (features["train"], train_labels), (features["test"], test_labels), class_names, cfg.shots, cfg.seeds
    )
    log.info(
        "features of %d images: %.1f s; %d regressions: %.2f s",
        len(train_files) + len(test_files),
        extracted - started,
        len(cfg.shots) * cfg.seeds,
        time.perf_counter() - extracted,
    )
    summary = report(table, title=f"few-shot linear accuracy on {len(test_files)} test images ({root.name})")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {"root": str(root), "classes": class_names, "model": cfg.model.name, "ckpt_path": cfg.ckpt_path}
    results |= {"pretrained": cfg.model.pretrained, "per_seed": table, "summary": summary}
    results["provenance"] = provenance.record(
        {
            "train": {"images": len(train_files), "fingerprint": files_fingerprint(train_files, root)},
            "test": {"images": len(test_files), "fingerprint": files_fingerprint(test_files, root)},
        }
    )
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    log_table(cfg, summary)
    return table


def report(table: dict[int, list[tuple[float, float]]], title: str) -> dict[int, dict[str, float]]:
    """Print mean and spread over the seeds per N; return them."""
    summary = {}
    printed = Table(title=title)
    for column in ("images per class", "accuracy (mean)", "min", "max", "seeds", "penalty (median)"):
        printed.add_column(column, justify="right")
    for n, rows in table.items():
        accuracies = torch.tensor([accuracy for accuracy, _ in rows])
        penalty = torch.tensor([penalty for _, penalty in rows]).median().item()
        summary[n] = {"mean": accuracies.mean().item(), "min": accuracies.min().item()}
        summary[n] |= {"max": accuracies.max().item(), "penalty": penalty}
        printed.add_row(
            str(n), *(f"{summary[n][k]:.3f}" for k in ("mean", "min", "max")), str(len(rows)), f"{penalty:g}"
        )
    Console().print(printed)
    return summary


def log_table(cfg: DictConfig, summary: dict[int, dict[str, float]]) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(
        cfg.get("logger"), run_name=f"fewshot {cfg.model.name}", group=None, config=config
    )
    for logger in loggers:
        logger.log_metrics({f"fewshot/{n}shot_acc": row["mean"] for n, row in summary.items()})
        if isinstance(logger, WandbLogger):
            columns = ["images per class", "accuracy", "min", "max", "penalty"]
            data = [[n, row["mean"], row["min"], row["max"], row["penalty"]] for n, row in summary.items()]
            logger.log_table(key="fewshot/table", columns=columns, data=data)
        logger.save()


main = command("fewshot", fewshot)


if __name__ == "__main__":
    main()
