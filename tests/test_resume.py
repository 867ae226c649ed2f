"""Runs that can be continued and reused, through the commands users type: Ctrl-C and resume with no
options, eval and predict from a checkpoint alone, compile, and runs that fail before any step."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitlab.eval import main as eval_main
from vitlab.predict import main as predict_main
from vitlab.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CTRL_C = '''
import os
import signal

import lightning as L


class CtrlCAtStep(L.Callback):
    """Presses Ctrl-C (SIGINT to this very process) once training reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            # a shell's background job (cmd &) starts with SIGINT ignored; a terminal's process does not
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)
'''

# Small image-folder runs: 5 train + 1 val images per class (val_fraction 0.1), batch 4: 4 steps a epoch.
TRAIN = [
    "data=imagefolder",
    "data.root=images",
    "data.batch_size=4",
    "data.num_workers=0",
    "model=vit_ti16",
    "model.image_size=32",
    "model.patch_size=8",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "callbacks.model_summary=null",
    "test_ckpt=last",
]


def run(cwd: Path, program: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """``python train.py ...`` (``program="train"``) or an installed ``vitlab-*`` script, in ``cwd``."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "250",
    }
    command = [sys.executable, str(ROOT / "train.py")] if program == "train" else [str(BIN / program)]
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, output[-4000:]
    return result


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def metrics_from_confusion(confusion: list[list[int]]) -> dict[str, float]:
    matrix = torch.tensor(confusion, dtype=torch.float64)
    true_positives = matrix.diag()
    f1 = 2 * true_positives / (matrix.sum(0) + matrix.sum(1))
    return {"acc": float(true_positives.sum() / matrix.sum()), "f1": float(f1.nan_to_num().mean())}


def assert_metrics_match_confusion(metrics: dict[str, float], confusion: list[list[int]]) -> None:
    expected = metrics_from_confusion(confusion)
    assert metrics["test/acc"] == pytest.approx(expected["acc"], abs=1e-6)
    assert metrics["test/f1"] == pytest.approx(expected["f1"], abs=1e-6)
    assert metrics["test/acc_top2"] >= metrics["test/acc"]


@pytest.mark.slow
def test_ctrl_c_then_resume_with_no_options_continues_that_run_and_eval_needs_only_the_checkpoint(
    tmp_path, make_image_folder, run_command, monkeypatch, capsys
):
    make_image_folder(n_per_class={"train": 6, "test": 4}, size=36)  # tmp_path/images
    (tmp_path / "ctrl_c.py").write_text(CTRL_C)
    monkeypatch.syspath_prepend(str(tmp_path))  # the resumed run (in this process) builds its callback

    # 1. Ctrl-C in the first epoch, in a program of its own (a real SIGINT): no test, no
    #    results.json, the checkpoint and resume command printed.
    stopped = run(
        tmp_path,
        "train",
        *TRAIN,
        "logger=[csv,wandb]",
        "+callbacks.ctrl_c._target_=ctrl_c.CtrlCAtStep",
        "+callbacks.ctrl_c.step=2",
        ok=False,
    )
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    output = stopped.stdout + stopped.stderr
    assert f"Checkpoint: {run_dir / 'checkpoints' / 'on_exception.ckpt'}" in output
    assert f"Resume with: python {ROOT / 'train.py'} ckpt_path={run_dir}" in output
    assert not (run_dir / "results.json").exists() and "test/acc" not in output
    assert torch.load(run_dir / "checkpoints" / "on_exception.ckpt", weights_only=True)["global_step"] == 2
    rows_before = metrics_rows(run_dir)
    assert rows_before  # the curves so far

    # The rest as typed, each command's main() in this process.
    # 2. A newer, finished multirun of another image size: ckpt_path=last must not pick it.
    assert run_command(train_main, "-m", *TRAIN, "logger=csv", "model.image_size=16") is None
    (uninterrupted,) = (tmp_path / "logs" / "train" / "multiruns").glob("*/0/results.json")
    uninterrupted = json.loads(uninterrupted.read_text())

    # 3. A resume whose override does not fit the checkpoint: one line naming shapes and option.
    misfit = run_command(train_main, "ckpt_path=last", "model.image_size=16")
    assert isinstance(misfit, str) and misfit.startswith("error: "), misfit  # no traceback
    assert "position_embedding has shape [1, 17, 192] in the checkpoint and [1, 5, 192]" in misfit
    assert "model.image_size" in misfit
    assert "model.image_size=16" not in (run_dir / ".hydra" / "overrides.yaml").read_text()

    # 4. Resume with no option: the same folder, config, W&B run and curves; the same step count.
    capsys.readouterr()
    assert run_command(train_main, "ckpt_path=last") is None
    assert f"continuing the run {run_dir}" in capsys.readouterr().out
    assert list((tmp_path / "logs" / "train" / "runs").iterdir()) == [run_dir]  # no second folder
    results = json.loads((run_dir / "results.json").read_text())
    assert results["image_size"] == 32 and results["tested_checkpoint"] == "last"
    assert results["global_step"] == uninterrupted["global_step"] == 2 * 4
    rows_after = metrics_rows(run_dir)
    for before in rows_before:  # every row from before the crash is still there, as it was
        assert any(all(after.get(k) == v for k, v in before.items() if v) for after in rows_after)
    train_steps = [int(r["step"]) for r in rows_after if r.get("train/loss_step")]
    assert train_steps == sorted(set(train_steps))  # no step logged twice
    assert set(range(2, results["global_step"])) <= set(train_steps)  # every step since the checkpoint
    wandb_ids = {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2 and len(wandb_ids) == 1
    assert_metrics_match_confusion(results["metrics"], results["test_confusion_matrix"])

    # 5. Eval and predict from elsewhere, with nothing but the checkpoint (data root, classes and
    #    preprocessing come from it); eval of last.ckpt reproduces the run's own test of the last state.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert run_command(eval_main, f"ckpt_path={last}", cwd=elsewhere) is None
    (evaluated,) = (elsewhere / "logs" / "eval" / "runs").glob("*/results.json")
    evaluated = json.loads(evaluated.read_text())
    assert evaluated["confusion_matrix"] == results["test_confusion_matrix"]
    assert sum(map(sum, evaluated["confusion_matrix"])) == 3 * 4
    assert_metrics_match_confusion(evaluated["metrics"], evaluated["confusion_matrix"])
    for name in ("test/acc", "test/f1", "test/acc_top2"):
        assert evaluated["metrics"][name] == pytest.approx(results["metrics"][name], abs=1e-6)
    pictures = sorted((tmp_path / "images" / "test" / "sushi").glob("*.jpg"))[:2]
    images = f"images=[{pictures[0]},{pictures[1]}]"
    assert run_command(predict_main, f"ckpt_path={last}", images, cwd=elsewhere) is None
    (table,) = (elsewhere / "logs" / "predict" / "runs").glob("*/predictions.csv")
    assert len(table.read_text().splitlines()) == 1 + 2


def test_a_run_that_fails_before_its_first_step_leaves_no_run_folder(tmp_path, run_command, capsys):
    error = run_command(train_main, "data=imagefolder", f"data.root={tmp_path / 'absent'}")
    assert isinstance(error, str) and error.startswith("error: ") and "data.root" in error, error
    assert "Traceback" not in capsys.readouterr().err
    assert not list((tmp_path / "logs" / "train" / "runs").iterdir())


def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(tmp_path, run_command, capsys):
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    for main in (train_main, eval_main):
        line = run_command(main, f"ckpt_path={bogus}")
        assert isinstance(line, str) and line.startswith("error: "), line  # one line, no traceback
        assert f"ckpt_path={bogus} is not a" in line and "vitlab-train" in line
        said = capsys.readouterr()
        assert "Traceback" not in said.err and "weights_only" not in said.err + line


@pytest.mark.slow
def test_compiled_training_writes_checkpoints_that_eval_and_predict_load(
    tmp_path, make_image_folder, run_command
):
    make_image_folder(n_per_class={"train": 6, "test": 2}, size=36)
    overrides = ["logger=csv", "trainer.max_epochs=1", "model.depth=1", "compile=true"]
    assert run_command(train_main, *TRAIN, *overrides) is None
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]  # compiled in place: the names are the model's
    assert run_command(eval_main, f"ckpt_path={last}") is None
    picture = next((tmp_path / "images" / "test" / "pizza").glob("*.jpg"))
    assert run_command(predict_main, f"ckpt_path={last}", f"images=[{picture}]") is None
    assert list((tmp_path / "logs" / "predict" / "runs").glob("*/predictions.csv"))
