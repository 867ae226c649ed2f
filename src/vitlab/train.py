"""The train command: ``python train.py model=vit_b16 trainer.devices=2`` (``vitlab-train``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vitlab import runs
from vitlab.checkpoint import carried_hyperparameters, check_fits, checkpoint_step, read_training_checkpoint
from vitlab.cli.command import command
from vitlab.cli.output import print_tree
from vitlab.cli.preprocessing import command_preprocessing
from vitlab.cli.validate import validate
from vitlab.data.datamodule import build_datamodule, usable_cpus
from vitlab.errors import ConfigError
from vitlab.loggers import build_loggers, finish_wandb, record_in_wandb
from vitlab.models.cost import variant_cost
from vitlab.models.preprocessing import Preprocessing, resolve_preprocessing
from vitlab.models.variants import ModelConfig
from vitlab.per_image import TEST_PREDICTIONS, write_test_predictions
from vitlab.provenance import Provenance, code_description, hydra_overrides
from vitlab.slurm import fresh_main_port_after_requeue, requeued_run
from vitlab.stats import accuracy_interval_metrics
from vitlab.training.callbacks import ProvenanceInCheckpoints
from vitlab.training.module import ViTClassifier
from vitlab.training.mpp import MaskedPatchPrediction
from vitlab.training.trainer import build_trainer

log = logging.getLogger(__name__)


def _sweep_group() -> str | None:
    """All jobs of one multirun share a W&B group: the sweep folder's name."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def parallel_jobs() -> int:
    """How many jobs of this multirun run at once on this machine: joblib's ``n_jobs``, else 1."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    launcher = HydraConfig.get().launcher
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return 1
    n_jobs = launcher.get("n_jobs") or 1
    return os.cpu_count() or 1 if n_jobs < 0 else n_jobs


def share_cpus(data_cfg: DictConfig) -> dict[str, Any]:
    """Give this job its share of the CPUs when jobs run in parallel (torch threads and, unless set,
    loader workers); returns the data options to apply."""
    jobs = parallel_jobs()
    if jobs == 1:
        return {}
    share = max(1, usable_cpus() // jobs)
    torch.set_num_threads(share)
    log.info("%d jobs in parallel: %d CPU(s) each for torch threads and loader workers", jobs, share)
    return {"num_workers": share} if data_cfg.get("num_workers") is None else {}


SEARCH_VAL_FRACTION = 0.2


def ranking_search() -> bool:
    """Whether this job is a trial of a search that picks the best trial by ``optimized_metric``
    (Optuna's sweeper, any sweeper but Hydra's basic one, which only runs the grid it is given)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return not str(HydraConfig.get().sweeper.get("_target_", "")).endswith("BasicSweeper")


def hold_out_for_search(cfg: DictConfig) -> None:
    """A search ranks its trials on validation; with ``data.val_fraction=0`` (the course's default)
    that is the test split, so a search holds out part of train instead, unless the user set it."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in hydra_overrides()}
    if not ranking_search() or cfg.data.get("val_fraction") != 0 or "data.val_fraction" in given:
        return
    cfg.data.val_fraction = SEARCH_VAL_FRACTION
    log.info(
        "the search ranks trials on validation, which data.val_fraction=0 makes the test split: "
        "validating on data.val_fraction=%s of train/ instead (give data.val_fraction to choose)",
        SEARCH_VAL_FRACTION,
    )


def validation_source(datamodule: L.LightningDataModule) -> str | None:
    """Where validation images came from, for results.json: a sweep summary must not show accuracy
    on the test split as validation accuracy. None before the datasets are set up."""
    datasets = getattr(datamodule, "datasets", {})
    if datasets.get("val") is None:
        return None
    if datasets["val"] is datasets.get("test"):
        return runs.VALIDATION_IS_TEST
    root, fraction = getattr(datamodule, "root", None), getattr(datamodule, "val_fraction", 0)
    if fraction and root is not None and not (Path(root) / "val").is_dir():
        return f"held out from train ({fraction})"
    return "val split"  # a val/ folder, or generated images of its own


def _tested_checkpoint(
    trainer: L.Trainer, datamodule: L.LightningDataModule, which: str
) -> tuple[str, str | None]:
    """``(which, path)``: the best checkpoint's path, or None for the final weights in memory (what
    last.ckpt holds). ``best`` becomes ``last`` when validation is the test split: choosing the
    checkpoint there would choose it on the test set."""
    if which == "best" and validation_source(datamodule) == runs.VALIDATION_IS_TEST:
        log.warning(
            "test_ckpt=best would choose the checkpoint on the test split (validation is test/ when "
            "data.val_fraction=0): testing the last checkpoint instead. Set data.val_fraction=0.1 to "
            "choose the best on held-out training images."
        )
        which = "last"
    if which == "last":
        return which, None
    best = next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor and c.best_model_path),
        None,
    )
    if best is None:
        log.warning("test_ckpt=best: no best checkpoint was saved; testing the final weights instead.")
        return "last", None
    return which, best.best_model_path


def debug_run(cfg: DictConfig) -> str | None:
    """Why this run is a debug run (``trainer.fast_dev_run``, or a ``debug=`` config: task_name
    debug), else None: its metrics come from a few batches and it may have no checkpoint, so it
    writes ``debug_results.json`` rather than a results.json that would pass for a result."""
    if cfg.trainer.get("fast_dev_run"):
        return f"trainer.fast_dev_run={cfg.trainer.fast_dev_run}"
    return "task_name=debug" if cfg.task_name == "debug" else None


def resolve_run_preprocessing(cfg: DictConfig) -> Preprocessing:
    """The run's one ``Preprocessing``: the weights' (``model.pretrained``; none: the course's) with
    the user's ``preprocessing.*`` on top; the datamodule and the checkpoint get it."""
    pretrained = cfg.model.get("pretrained")
    return command_preprocessing(
        cfg,
        lambda options: resolve_preprocessing(pretrained, cfg.model.get("pretrained_file"), options),
        cfg.model.image_size,
        pretrained or "no pretrained weights",
    )


def build_module(
    cfg: DictConfig, num_classes: int, class_names: list[str], preprocessing: Preprocessing
) -> L.LightningModule:
    """The LightningModule of ``cfg.task``: classification (default) or masked patch prediction."""
    model = ModelConfig.from_config(cfg.model)
    carried = carried_hyperparameters(OmegaConf.to_container(cfg.data, resolve=True), preprocessing)
    shared = dict(
        model_name=model.name,
        model_options=model.options,
        pretrained=model.weights,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        preprocessing=carried["preprocessing"],
    )
    task = cfg.get("task") or {"name": "classify"}
    if task["name"] == "mpp":
        options = {key: value for key, value in task.items() if key != "name"}
        module: L.LightningModule = MaskedPatchPrediction(**shared, **options)
    else:
        module = ViTClassifier(
            **shared,
            num_classes=num_classes,
            class_names=class_names,
            freeze_backbone=model.freeze_backbone,
            label_smoothing=cfg.label_smoothing,
            data_config=carried["data_config"],
        )
    # one image: the model summary counts its FLOPs (Lightning's default shows 0)
    size = cfg.model.image_size
    module.example_input_array = torch.zeros(1, 3, size, size)
    return module


def _continue_wandb_run(cfg: DictConfig, output_dir: Path) -> None:
    """A run continued in its own folder logs into its own W&B run."""
    run_id = runs.wandb_run_id(output_dir)
    wandb = (cfg.get("logger") or {}).get("wandb")
    if run_id and wandb is not None:
        with open_dict(cfg):
            wandb.id, wandb.resume = run_id, "allow"


def _after_failure(error: BaseException, trainer: L.Trainer | None, output_dir: Path) -> None:
    """A run that wrote a checkpoint keeps its folder and says how to continue; one that did not
    leaves nothing behind (the command wrapper removes the folder it created)."""
    checkpoint = runs.newest_checkpoint(output_dir) if trainer is not None else None
    if checkpoint is None:
        if isinstance(error, Exception) and not isinstance(error, ConfigError):
            log.info("nothing was trained")
        return
    runs.keep(output_dir)
    if rank_zero_only.rank != 0:
        return
    interrupted = isinstance(error, KeyboardInterrupt | SystemExit)  # Lightning exits on Ctrl-C
    log.error(
        "training stopped (%s) at epoch %d, step %d. Checkpoint: %s\nResume with: %s",
        "interrupted" if interrupted else f"{type(error).__name__}: {error}",
        trainer.current_epoch,
        trainer.global_step,
        checkpoint,
        runs.resume_command(output_dir),
    )


def train(
    cfg: DictConfig, callbacks: list[Callback] | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Fit (and test) a model as configured; returns the run's results, also saved as results.json
    (a debug run's as debug_results.json: ``debug_run``).

    With ``ckpt_path`` (a checkpoint file: ``continue_run`` turns ``last`` or a folder into one)
    training continues from it, in ``paths.output_dir``. A run stopped by Ctrl-C or a crash is not
    tested and writes no results.json: its folder stays an interrupted run, for ``ckpt_path=last``.
    """
    output_dir = Path(cfg.paths.output_dir)
    trainer: L.Trainer | None = None
    debug = debug_run(cfg)
    try:
        validate(cfg)
        hold_out_for_search(cfg)
        preprocessing = resolve_run_preprocessing(cfg)
        ckpt_path = cfg.get("ckpt_path")
        resolved_config = output_dir / "config_resolved.yaml"
        print_tree(cfg, save_to=None if ckpt_path else resolved_config)
        L.seed_everything(cfg.seed, workers=True)
        overrides = hydra_overrides() if overrides is None else overrides
        provenance = Provenance(cfg.seed, overrides, **_continued_from(ckpt_path))

        datamodule = build_datamodule(cfg.data, preprocessing, **share_cpus(cfg.data))
        datamodule.prepare_data()  # downloads if needed; class names come from the data, never typed twice
        module = build_module(cfg, datamodule.num_classes, datamodule.class_names, preprocessing)
        if ckpt_path:
            check_fits(module.state_dict(), Path(ckpt_path))
            if overrides is not None and (output_dir / runs.HYDRA_OVERRIDES).is_file():
                runs.save_overrides(output_dir, overrides)  # a second resume keeps this one's overrides
            resolved_config.parent.mkdir(parents=True, exist_ok=True)  # a .ckpt resumed into a new folder
            OmegaConf.save(cfg, resolved_config, resolve=True)  # only now: the checkpoint fits
            _continue_wandb_run(cfg, output_dir)
            header, rows = runs.earlier_metrics(output_dir, checkpoint_step(Path(ckpt_path)))
        if cfg.get("compile"):
            module.model.compile()  # in place: the weights keep their names in checkpoints

        run_name = " ".join([cfg.model.name, *[o for o in overrides if not o.startswith("model=")]])
        config = {**OmegaConf.to_container(cfg, resolve=True), "provenance": provenance.fixed}
        loggers = build_loggers(cfg.get("logger"), run_name=run_name, group=_sweep_group(), config=config)
        if ckpt_path:
            runs.keep_earlier_metrics(loggers, header, rows)
        all_callbacks = [
            instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
        ]
        all_callbacks.append(ProvenanceInCheckpoints(provenance))
        trainer = build_trainer(
            cfg.trainer, callbacks=all_callbacks + list(callbacks or []), logger=loggers or False
        )
        tested = None
        if cfg.get("train", True):
            if ckpt_path:
                runs.set_aside_results(output_dir)  # a finished run trained further: its new result
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            if trainer.interrupted:  # should fit ever return after a Ctrl-C: never test as if finished
                raise KeyboardInterrupt("training was interrupted")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True):
            tested, tested_path = (
                (None, None) if debug else _tested_checkpoint(trainer, datamodule, cfg.test_ckpt)
            )
            trainer.test(module, datamodule=datamodule, ckpt_path=tested_path, weights_only=True)
            metrics.update(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            )
        results = _results(cfg, trainer, module, datamodule, metrics, overrides, tested, debug)
        results["provenance"] = provenance.record(datamodule.provenance())
        results["wall_time_s"] = results["provenance"]["wall_time_s"]
        record_in_wandb(loggers, results)
    except BaseException as error:
        _after_failure(error, trainer, output_dir)
        raise
    finally:
        finish_wandb()  # train() is also called as a function (benchmarks): it ends the run it opened
    if trainer.is_global_zero:
        if "test/acc" in metrics and trainer.world_size == 1:
            write_test_predictions(output_dir / TEST_PREDICTIONS, module, datamodule)
        name = runs.DEBUG_RESULTS if debug else runs.RESULTS
        (output_dir / name).write_text(json.dumps(results, indent=2))
        if results["provenance"].get("git_dirty"):
            log.warning(
                "this run's code had uncommitted changes (%s): its results say so; commit before you measure",
                code_description(results["provenance"]),
            )
        if debug:
            log.info("a debug run (%s): not a result, so its metrics went to %s", debug, output_dir / name)
    return results


def _continued_from(ckpt_path: str | None) -> dict[str, Any]:
    """For a continued run's provenance: the checkpoint it continued from and that one's provenance."""
    if not ckpt_path:
        return {}
    stored = read_training_checkpoint(Path(ckpt_path)).provenance
    return {"continued_from": {"checkpoint": str(ckpt_path), "provenance": stored}}


def _results(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    metrics: dict[str, float],
    overrides: list[str],
    tested: str | None,
    debug: str | None,
) -> dict[str, Any]:
    """What results.json holds, less the provenance: the model, its cost, the run's length and metrics
    (with the test accuracy's bootstrap interval), and which checkpoint was tested."""
    confusion = getattr(module, "confusion", {})  # classification only
    model = ModelConfig.from_config(cfg.model)
    params, macs = variant_cost(model.name, num_classes=datamodule.num_classes, **model.options)
    predictions = getattr(module, "test_predictions", None)
    if predictions is not None and "test/acc" in metrics:
        probabilities, labels = predictions
        metrics.update(accuracy_interval_metrics(probabilities.argmax(1) == labels))
    results = {
        "model": model.name,
        "patch_size": model.patch_size,
        "image_size": cfg.model.image_size,
        "num_classes": datamodule.num_classes,
        "class_names": list(datamodule.class_names),
        "overrides": overrides,
        "params": params,
        "gmacs": macs / 1e9,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": None,  # the provenance's
        "tested_checkpoint": tested,  # last (the final weights) or best (by validation accuracy)
        "validation": validation_source(datamodule),  # test split, held out from train (0.2), val split
        "metrics": metrics,
        "test_confusion_matrix": confusion["test"].tolist() if "test" in confusion else None,
    }
    if debug:  # the final weights were tested, if any: no checkpoint was chosen
        del results["tested_checkpoint"]
        results["debug"] = True
    return results


def _merge_overrides(earlier: list[str], given: list[str]) -> list[str]:
    """The run's overrides with this command's on top: one per key, the later winning."""
    merged: dict[tuple[str, str | None], str] = {}
    for override in OverridesParser.create().parse_overrides([*earlier, *given]):
        if not override.key_or_group.startswith("hydra.") and override.key_or_group != "ckpt_path":
            merged[(override.key_or_group, override.package)] = override.input_line
    return list(merged.values())


def _log_into(run_dir: Path) -> None:
    """Make the continued run's folder this job's output folder: its log file continues there, DDP
    ranks started later write there, and the empty folder Hydra made for this command goes."""
    hydra = HydraConfig.get()
    fresh = Path(hydra.runtime.output_dir).resolve()
    if fresh == run_dir:
        return
    with read_write(hydra.runtime):
        hydra.runtime.output_dir = str(run_dir)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == fresh:
            handler.close()
            handler.baseFilename, handler.mode = str(run_dir / Path(handler.baseFilename).name), "a"
    runs.remove_created(only=fresh)


def continue_run(cfg: DictConfig) -> tuple[DictConfig, list[str] | None] | None:
    """``(config, overrides)`` that continue the run ``ckpt_path`` names (``last``: the newest
    interrupted run; a run folder; or a .ckpt file) from its checkpoint with the highest step; None
    when it names a finished run and the command asks for no more epochs than it ran (a no-op).

    The run's own config is restored from its ``.hydra/overrides.yaml``, with this command's
    overrides on top (``train`` saves them back once the checkpoint fits), and it goes on in its own
    folder. A .ckpt outside a run folder continues with this command's config in a new folder.
    """
    runs_dir = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    checkpoint, run_dir = runs.resolve_resume(str(cfg.ckpt_path), runs_dir)
    step = checkpoint_step(checkpoint)
    if run_dir is None or not HydraConfig.initialized():
        log.info("continuing from %s (step %d) with this command's config", checkpoint, step)
        with open_dict(cfg):
            cfg.ckpt_path = str(checkpoint)
        return cfg, None
    earlier = list(OmegaConf.load(run_dir / runs.HYDRA_OVERRIDES))
    given = [o for o in hydra_overrides() if o.split("=", 1)[0] != "ckpt_path"]
    overrides = _merge_overrides(earlier, given)
    restored = compose(
        config_name=HydraConfig.get().job.config_name,
        overrides=[*overrides, f"paths.output_dir={run_dir}", f"ckpt_path={checkpoint}"],
    )
    validate(restored)
    earlier_results = runs.finished_results(run_dir)
    if earlier_results is not None:
        finished = int(earlier_results["epochs"])
        if restored.trainer.max_epochs in (None, -1) or restored.trainer.max_epochs <= finished:
            log.info(
                "the run %s finished (epoch %d of %d); its results are in %s. To train it further: "
                "%s trainer.max_epochs=%d",
                run_dir,
                finished,
                finished,
                run_dir / runs.RESULTS,
                runs.resume_command(run_dir),
                2 * finished,
            )
            return None
        log.info(
            "training the finished run %s further, from epoch %d to %d: the learning-rate schedule is "
            "recomputed for the new length; its results so far stay beside the new ones as %s",
            run_dir,
            finished,
            restored.trainer.max_epochs,
            runs.set_aside_name(earlier_results),
        )
    _log_into(run_dir)
    log.info(
        "continuing the run %s from %s (step %d); its overrides: %s; this command's on top: %s",
        run_dir,
        checkpoint.name,
        step,
        " ".join(earlier) or "none",
        " ".join(given) or "none",
    )
    return restored, overrides


def run(cfg: DictConfig) -> float | None:
    """Train as configured (or continue a run: ``ckpt_path``); returns ``optimized_metric`` for a
    hyper-parameter search."""
    overrides = None
    if not cfg.get("ckpt_path") and requeued_run(Path(cfg.paths.output_dir)):
        with open_dict(cfg):  # a requeued SLURM job continues its run, from its folder
            cfg.ckpt_path = str(cfg.paths.output_dir)
        fresh_main_port_after_requeue()
    if cfg.get("ckpt_path"):
        continued = continue_run(cfg)
        if continued is None:  # a finished run: nothing to do, and nothing of this command is kept
            runs.remove_created(only=Path(HydraConfig.get().runtime.output_dir))
            return None
        cfg, overrides = continued
    results = train(cfg, overrides=overrides)
    metric = cfg.get("optimized_metric")  # what an Optuna sweep maximises
    return results["metrics"].get(metric) if metric else None


main = command("train", run)


if __name__ == "__main__":
    main()
