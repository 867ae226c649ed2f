"""The eval command: ``vitlab-eval ckpt_path=.../last.ckpt [data=...] [data.x=...] [preprocessing.x=...]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict

from vitlab.checkpoint import checkpoint_provenance, data_config_of, load_classifier
from vitlab.cli.command import command
from vitlab.cli.preprocessing import command_preprocessing
from vitlab.data.datamodule import build_datamodule
from vitlab.errors import DataError
from vitlab.loggers import build_loggers
from vitlab.models.preprocessing import checkpoint_preprocessing
from vitlab.per_image import TEST_PREDICTIONS, write_test_predictions
from vitlab.provenance import Provenance, code_description, hydra_overrides
from vitlab.stats import accuracy_interval_metrics
from vitlab.training.module import ViTClassifier
from vitlab.training.trainer import build_trainer

log = logging.getLogger(__name__)


def data_config(cfg: DictConfig, module: ViTClassifier, overrides: list[Override]) -> DictConfig:
    """The data to test on: the training run's data config stored in the checkpoint (root, classes),
    unless the command picks a ``data=`` config; ``data.*`` options given on the command line win
    either way. Checkpoints without a stored data config use the composed one."""
    stored = data_config_of(module.hparams)
    if stored is None or any(o.key_or_group == "data" for o in overrides):
        with open_dict(cfg):  # in place of ${model.image_size}: eval has no model config
            cfg.data.image_size = module.image_size
        data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    else:
        data = OmegaConf.create(stored)
    for override in overrides:  # what the command says explicitly wins
        if override.key_or_group.startswith("data."):
            OmegaConf.update(data, override.key_or_group[5:], OmegaConf.select(cfg, override.key_or_group))
    return data


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, float]:
    """Test a checkpoint on the test split of its training data (or of ``data=``); prints and logs
    the metrics. ``overrides`` (default: Hydra's command line) decide what replaces the stored data."""
    if overrides is None:
        overrides = hydra_overrides()
    provenance = Provenance(cfg.get("seed"), overrides)
    module = load_classifier(cfg.ckpt_path)
    data = data_config(cfg, module, OverridesParser.create().parse_overrides(overrides))
    with open_dict(cfg):
        cfg.data = data  # what the logged config shows: the data tested on
    preprocessing = command_preprocessing(
        cfg,
        lambda options: checkpoint_preprocessing(cfg.ckpt_path, module.hparams, options),
        module.image_size,
        f"ckpt_path={cfg.ckpt_path}",
    )
    datamodule = build_datamodule(data, preprocessing)
    datamodule.prepare_data()
    if list(datamodule.class_names) != list(module.class_names):
        raise DataError(
            f"the checkpoint's classes {module.class_names} differ from the data's {datamodule.class_names} "
            f"(data.root={data.get('root')}): evaluate on data with the classes the model was trained on."
        )
    loggers = build_loggers(
        cfg.get("logger"),
        run_name=f"eval {Path(cfg.ckpt_path).name}",
        group=None,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    trainer: L.Trainer = build_trainer(cfg.trainer, logger=loggers or False)
    trained_by = checkpoint_provenance(cfg.ckpt_path)
    log.info("testing %s, trained by %s", cfg.ckpt_path, code_description(trained_by))
    (metrics,) = trainer.test(module, datamodule=datamodule)
    confusion = module.confusion["test"]
    log.info(
        "confusion matrix (rows: true, columns: predicted; %s):\n%s", ", ".join(module.class_names), confusion
    )
    probabilities, labels = module.test_predictions
    metrics.update(accuracy_interval_metrics(probabilities.argmax(1) == labels))
    log.info(
        "test/acc %.3f, 95%% bootstrap interval %.3f-%.3f (%d images resampled)",
        metrics["test/acc"],
        metrics["test/acc_ci95_low"],
        metrics["test/acc_ci95_high"],
        len(labels),
    )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.world_size == 1:
        write_test_predictions(output_dir / TEST_PREDICTIONS, module, datamodule)
    results = {
        "checkpoint": {"path": str(cfg.ckpt_path), "provenance": trained_by},
        "class_names": list(module.class_names),
        "metrics": metrics,
        "confusion_matrix": confusion.tolist(),
        "provenance": provenance.record(datamodule.provenance()),
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    return metrics


main = command("eval", evaluate)


if __name__ == "__main__":
    main()
