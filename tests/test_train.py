"""Training end to end through the real config tree: every model and experiment, learning,
resuming after a crash, NaN handling, and evaluating and predicting from the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from conftest import TINY_RUN

from vitlab.data.transforms import resize_size_for
from vitlab.eval import evaluate
from vitlab.models.variants import resolve_variant
from vitlab.models.weights import to_torchvision
from vitlab.predict import predict
from vitlab.train import continue_run, train

CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_CONFIGS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.name.startswith("_"))
LARGE_MODELS = {"vit_l16", "vit_l32", "vit_h14", "r50_vit_b16", "r50_vit_l32"}  # seconds a step: slow tier


@pytest.mark.parametrize(
    "model", [pytest.param(m, marks=pytest.mark.slow) if m in LARGE_MODELS else m for m in MODEL_CONFIGS]
)
def test_every_model_config_trains_for_one_step(compose_config, model):
    patch = resolve_variant(model)[1]  # the registry's, in pixels (a hybrid's: its ResNet stride)
    cfg = compose_config(
        f"model={model}",
        f"model.patch_size={patch}",
        f"model.image_size={2 * patch}",
        "model.depth=1",
        "trainer.fast_dev_run=1",
        "test=false",
    )
    results = train(cfg)
    assert results["model"] == model
    assert results["global_step"] == 1
    assert results["params"] > 0


@pytest.mark.slow
def test_foodvision_scratch_experiment_runs_on_an_image_folder(compose_config, make_image_folder):
    root = make_image_folder(n_per_class=2, size=40)
    cfg = compose_config(
        "experiment=foodvision_scratch",
        f"data.root={root}",
        "data.num_workers=0",
        "data.batch_size=2",
        "model.image_size=32",
        "trainer.fast_dev_run=1",
        tiny=False,
    )
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.model.name) == (3e-3, 0.3, "vit_b16")
    results = train(cfg)
    assert results["global_step"] == 1


class CaptureModule(L.Callback):
    """Keeps the trained LightningModule for inspection after ``train`` returns."""

    module: L.LightningModule | None = None

    def on_train_end(self, trainer, module):
        self.module = module


@pytest.mark.slow
def test_foodvision_finetune_experiment_loads_local_torchvision_weights(
    compose_config, make_image_folder, tmp_path
):
    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16()
    weights = tmp_path / "vit_b_16.pth"
    torch.save(reference.state_dict(), weights)
    root = make_image_folder(n_per_class=2, size=40)
    cfg = compose_config(
        "experiment=foodvision_finetune",
        f"data.root={root}",
        "data.num_workers=0",
        "data.batch_size=2",
        f"model.pretrained_file={weights}",
        "trainer.fast_dev_run=1",
        "logger=csv",
        tiny=False,
    )
    assert (cfg.model.image_size, cfg.model.freeze_backbone) == (224, True)
    capture = CaptureModule()
    results = train(cfg, callbacks=[capture])
    assert results["global_step"] == 1
    inputs = cfg.preprocessing  # what ran, as the saved config shows it
    resize = resize_size_for(cfg.model.image_size, inputs.resize_size, inputs.crop_pct)
    assert (resize, inputs.interpolation) == (256, "bilinear")  # the weights' own transform
    model = capture.module.model
    assert torch.equal(model.position_embedding.cpu(), reference.encoder.pos_embedding)
    assert model.head.out_features == 3
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


@pytest.mark.slow
def test_frozen_backbone_keeps_pretrained_weights_and_trains_the_head(compose_config, tmp_path):
    from vitlab.models import create_model

    source = create_model("vit_ti16", image_size=32, patch_size=8, num_classes=10)
    torch.nn.init.normal_(source.position_embedding)
    torch.save(to_torchvision(source.state_dict()), tmp_path / "tv.pth")
    capture = CaptureModule()
    cfg = compose_config(
        f"model.pretrained={tmp_path / 'tv.pth'}", "model.freeze_backbone=true", "test=false"
    )
    train(cfg, callbacks=[capture])
    model = capture.module.model
    assert torch.equal(model.position_embedding, source.position_embedding)
    assert model.head.out_features == 3 and model.head.weight.abs().sum() > 0


@pytest.mark.slow
def test_vit_ti16_learns_synthetic_classes_to_90_percent(compose_config):
    cfg = compose_config(
        "data.train_size=240", "data.val_size=60", "optimizer=adamw", "trainer.max_epochs=3", "test=false"
    )
    results = train(cfg)
    assert results["metrics"]["val/acc_best"] >= 0.9


class CrashMidEpoch(L.Callback):
    """Stands in for a killed process: raises in the middle of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise SystemExit("simulated kill")


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_step_count(compose_config, tmp_path):
    uninterrupted = train(compose_config("trainer.max_epochs=3", "test=false"))
    runs = tmp_path / "logs" / "train" / "runs"
    with pytest.raises(SystemExit):
        train(
            compose_config("trainer.max_epochs=3", "test=false", f"paths.output_dir={runs / 'crashed'}"),
            callbacks=[CrashMidEpoch(epoch=1)],
        )
    checkpoints = runs / "crashed" / "checkpoints"
    assert torch.load(checkpoints / "on_exception.ckpt", weights_only=True)["global_step"] == 3 + 2
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not (runs / "crashed" / "results.json").exists()  # not tested as if it had finished
    cfg, _ = continue_run(
        compose_config(
            "trainer.max_epochs=3", "test=false", f"paths.output_dir={runs / 'resumed'}", "ckpt_path=last"
        )
    )
    assert Path(cfg.ckpt_path) == checkpoints / "on_exception.ckpt"  # the highest step, of any kind
    resumed = train(cfg)
    assert resumed["global_step"] == uninterrupted["global_step"] == 3 * 3
    assert resumed["epochs"] == uninterrupted["epochs"] == 3


class LastCheckpointSteps(L.Callback):
    """The global step that last.ckpt holds at the end of every epoch (after the checkpoint callbacks)."""

    def __init__(self, checkpoints: Path) -> None:
        self.checkpoints = checkpoints
        self.steps: list[int | None] = []

    def on_train_epoch_start(self, trainer, module):  # after the previous epoch's saves
        self._note()

    def on_train_end(self, trainer, module):
        self._note()

    def _note(self) -> None:
        last = self.checkpoints / "last.ckpt"
        step = torch.load(last, weights_only=True)["global_step"] if last.exists() else None
        self.steps.append(step)


class StopAfterEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "stop_after", "expected"),
    [
        # 3 steps an epoch. The first epoch's state, then (an hour not passed) only the final one's.
        (
            ["callbacks.last_checkpoint.min_interval_s=3600", "trainer.max_epochs=4"],
            None,
            [None, 3, 3, 3, 12],
        ),
        (["callbacks.last_checkpoint.min_interval_s=0", "trainer.max_epochs=4"], None, [None, 3, 6, 9, 12]),
        (
            ["callbacks.last_checkpoint.min_interval_s=3600", "trainer.max_epochs=4"],
            1,
            [None, 3, 6],
        ),  # early stop
        (
            ["callbacks.last_checkpoint.min_interval_s=3600", "trainer.max_epochs=4", "+trainer.max_steps=7"],
            None,
            [None, 3, 3, 7],
        ),
    ],
)
def test_last_checkpoint_is_written_first_at_most_once_an_interval_and_at_the_final_epoch(
    compose_config, tmp_path, options, stop_after, expected
):
    steps = LastCheckpointSteps(tmp_path / "run" / "checkpoints")
    callbacks = [steps] if stop_after is None else [steps, StopAfterEpoch(stop_after)]
    results = train(compose_config(*options, "test=false"), callbacks=callbacks)
    assert steps.steps == expected
    assert results["global_step"] == expected[-1]


class Snapshots(L.Callback):
    """The module's weights after every optimizer step, by global step."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.states[trainer.global_step] = {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("task", ["classify", pytest.param("mpp", marks=pytest.mark.slow)])
def test_a_nan_loss_stops_the_run_and_the_exception_checkpoint_holds_the_last_finite_state(
    compose_config, tmp_path, task
):
    class PoisonWeights(L.Callback):  # the loss of step 4 (epoch 1, second batch) is NaN
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 4:
                head = module.model.head if task == "classify" else module.colour_head
                with torch.no_grad():
                    head.weight.fill_(float("nan"))

    snapshots = Snapshots()
    cfg = compose_config(f"task={task}", "trainer.max_epochs=3", "trainer.log_every_n_steps=2", "test=false")
    with pytest.raises(FloatingPointError, match=r"between steps 4 and 6 \(epoch 1\).*Lower optimizer.lr"):
        train(cfg, callbacks=[PoisonWeights(), snapshots])
    assert any(not torch.isfinite(v).all() for v in snapshots.states[5].values())  # NaN went unseen a while
    saved = torch.load(tmp_path / "run" / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["state_dict"].keys() == snapshots.states[4].keys()
    for name, value in saved["state_dict"].items():  # the state of step 4, the last checked finite one
        torch.testing.assert_close(value, snapshots.states[4][name], rtol=0, atol=0)
    for state in saved["optimizer_states"][0]["state"].values():
        assert all(torch.isfinite(v).all() for v in state.values())
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and "optimizer_states" in last


class PlateauedValidation(L.Callback):
    """Validation accuracy that never improves on epoch 0's, as the checkpoint callbacks see it."""

    def on_validation_end(self, trainer, module):
        trainer.callback_metrics["val/acc"] = torch.tensor(0.5)


@pytest.mark.slow
def test_last_checkpoint_is_the_final_epoch_after_validation_stops_improving(compose_config, tmp_path):
    results = train(
        compose_config("trainer.max_epochs=3", "test_ckpt=best"), callbacks=[PlateauedValidation()]
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, results["global_step"]) == (2, 3 * 3)
    assert "optimizer_states" in last  # the full state, to resume from
    best = torch.load(checkpoints / "epoch_000.ckpt", weights_only=True)
    assert "optimizer_states" not in best and best["global_step"] == 3  # weights only
    assert results["tested_checkpoint"] == "best"  # synthetic data has its own validation split


def test_best_is_not_chosen_on_the_test_split(compose_config, make_image_folder, caplog):
    root = make_image_folder(n_per_class=2, size=32)
    cfg = compose_config(
        *TINY_RUN,
        "data=imagefolder",
        f"data.root={root}",
        "data.val_fraction=0",
        "data.num_workers=0",
        tiny=False,
    )
    assert cfg.test_ckpt == "best"  # the default
    results = train(cfg)
    assert results["tested_checkpoint"] == "last"
    assert "testing the last checkpoint instead" in caplog.text


def test_eval_and_predict_use_the_trained_checkpoint(compose_config, tmp_path, make_image_folder):
    train(compose_config("trainer.max_epochs=1"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    eval_cfg = compose_config(
        f"ckpt_path={checkpoint}",
        "data=synthetic",
        "data.test_size=17",
        "data.num_workers=0",
        "logger=none",
        f"paths.output_dir={tmp_path / 'eval'}",
        config_name="eval",
    )
    metrics = evaluate(eval_cfg, overrides=["data=synthetic", "data.test_size=17"])
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    confusion = torch.tensor(saved["confusion_matrix"])
    assert confusion.sum() == 17  # every test image counted once
    assert metrics["test/acc"] == pytest.approx(confusion.trace().item() / 17)  # the same counts

    folder = make_image_folder(name="photos", classes=("disc_0", "square_1"), n_per_class=2, splits=("test",))
    predict_cfg = compose_config(
        f"ckpt_path={checkpoint}",
        f"images=[{folder / 'test' / 'disc_0' / '0.jpg'},{folder / 'test'}]",
        f"paths.output_dir={tmp_path / 'predict'}",
        config_name="predict",
    )
    probabilities = predict(predict_cfg)
    assert probabilities.shape == (5, 3)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(5))
    rows = (tmp_path / "predict" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("image,predicted,probability") and len(rows) == 6
    assert (tmp_path / "predict" / "predictions.png").stat().st_size > 0


def test_eval_of_a_missing_checkpoint_says_where_checkpoints_are(compose_config, tmp_path):
    cfg = compose_config(f"ckpt_path={tmp_path / 'nope.ckpt'}", "data=synthetic", config_name="eval")
    with pytest.raises(FileNotFoundError, match=r"nope.ckpt: no such file.*checkpoints"):
        evaluate(cfg)


@pytest.fixture
def search_trial(tmp_path):
    """``search_trial(*overrides)``: the config a job of ``python train.py <overrides>`` gets, with
    Hydra's own config set as in that job."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", [f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield make
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize(
    ("overrides", "val_fraction"),
    [
        (["hparams_search=optuna"], 0.2),  # FoodVision Mini validates on test/ by default
        (["hparams_search=optuna", "experiment=foodvision_small_data"], 0.2),  # so do the recipes
        (["hparams_search=optuna", "data.val_fraction=0"], 0),  # the user's choice
        (["hparams_search=optuna", "data.val_fraction=0.1"], 0.1),
        (["hparams_search=optuna", "data=imagefolder", "data.root=x"], 0.1),  # its own default
        (["hydra.mode=MULTIRUN"], 0),  # a grid (the basic sweeper) ranks nothing
    ],
)
def test_a_search_never_ranks_its_trials_on_the_test_split(search_trial, caplog, overrides, val_fraction):
    from vitlab.train import hold_out_for_search

    caplog.set_level("INFO", "vitlab.train")
    cfg = search_trial(*overrides)
    hold_out_for_search(cfg)
    assert cfg.data.val_fraction == val_fraction
    assert caplog.text.count("validating on data.val_fraction=0.2 of train/") == (val_fraction == 0.2)


def test_a_search_over_generated_images_keeps_their_own_validation_split(search_trial):
    from vitlab.train import hold_out_for_search

    cfg = search_trial("hparams_search=optuna", *TINY_RUN)
    hold_out_for_search(cfg)
    assert "val_fraction" not in cfg.data
