"""The README is a test: every command of its "Everyday commands" block runs as typed, shrunk only by
appended overrides (a tiny model, image size and epoch count; fewer trials, jobs, nodes and
devices), exits 0 and writes what it promises. Commands that need what this machine lacks skip and
say why. A new command in the block is covered by the rule for its kind."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import write_image

from vitlab.models.variants import resolve_variant

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


def everyday_commands() -> list[list[str]]:
    """The commands of the README's first ``bash`` block under "## Everyday commands"."""
    section = README.read_text().split("## Everyday commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    return [[os.path.expandvars(arg) for arg in args] for args in lines]  # as the shell would


COMMANDS = everyday_commands()


def patch_sizes(args: list[str]) -> list[int]:
    """The patch sizes a command's models use: ``model.patch_size=``, else each named variant's."""
    for arg in args:
        if arg.startswith("model.patch_size="):
            return [int(p) for p in arg.split("=", 1)[1].split(",")]
    models = [v for arg in args if arg.startswith("model=") for v in arg.split("=", 1)[1].split(",")]
    return [resolve_variant(model)[1] for model in models] or [16]


def images_folder(root: Path, splits=("train", "test"), n: int = 5) -> Path:
    """FoodVision's layout, ``n`` images per class (5: data=imagefolder's 10 % validation holds out
    one of each)."""
    if not root.exists():
        for s, split in enumerate(splits):
            for label, food in enumerate(("pizza", "steak", "sushi")):
                for i in range(n):
                    write_image(root / split / food / f"{i}.jpg", label, 40, 100 * s + 10 * label + i)
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def finetune_weights(workdir) -> Path:
    """A torchvision-format ViT-B/16 of one block (random weights): what the fine-tuning recipe
    downloads, shrunk like the model."""
    path = workdir / "vit_b_16_one_block.pth"
    if not path.exists():
        model = torchvision.models.VisionTransformer(32, 16, 1, 12, 768, 3072)
        torch.save(model.state_dict(), path)
    return path


def shrink(args: list[str], workdir: Path, weights: Path) -> list[str]:
    """The appended overrides that make a command tiny; nothing the command set is removed."""
    extra = []
    sweeps_models = any(a.startswith("experiment=table1_sweep") for a in args)
    if sweeps_models:
        extra.append("model=vit_ti16,vit_b32")  # fewer jobs (as the experiment's own comment shows)
    size = 2 * math.lcm(*patch_sizes(args + extra))
    extra += [f"model.image_size={size}", "model.depth=1", "trainer.max_epochs=1", "logger=csv"]
    if "data=synthetic" in args:
        extra += ["data.train_size=24", "data.val_size=12", "data.test_size=12"]
    else:  # FoodVision (downloaded on first use) or the user's folder: a small local folder instead
        extra.append(f"data.root={images_folder(workdir / 'images')}")
    extra.append("data.batch_size=4")
    if any(a.startswith("hparams_search=") for a in args):
        extra.append("hydra.sweeper.n_trials=2")  # fewer trials
    if any(a.startswith("experiment=foodvision_finetune") for a in args):
        extra.append(f"model.pretrained={weights}")  # a local file in the downloaded weights' format
    if any(a.startswith("trainer.devices=") for a in args) and not torch.cuda.is_available():
        extra.append("trainer.accelerator=cpu")
    return extra


def needs(args: list[str]) -> str | None:
    """Why a command cannot run here, or None."""
    if any(a == "launcher=slurm" for a in args):
        sinfo = shutil.which("sinfo")
        if sinfo is None or subprocess.run([sinfo], capture_output=True).returncode != 0:
            return "needs a SLURM cluster (sinfo finds none)"
    if any(a.startswith("trainer=gpu") for a in args) and not torch.cuda.is_available():
        return "needs a GPU"
    return None


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    program = {"python": [sys.executable], "vitlab-train": [str(BIN / "vitlab-train")]}
    command = program.get(args[0], [str(BIN / args[0])]) + args[1:]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained(workdir, finetune_weights) -> Path:
    """One finished tiny run, for the commands that start from a checkpoint; its last.ckpt."""
    logs = workdir / "trained" / "logs"
    args = ["python", "train.py", "model=vit_ti16"]
    run([*args, *shrink(args, workdir, finetune_weights), f"paths.log_dir={logs}"], cwd=ROOT)
    (last,) = logs.glob("train/runs/*/checkpoints/last.ckpt")
    return last


def outputs(logs: Path, task: str) -> list[Path]:
    return sorted((logs / task).glob("*runs/**/results.json"))


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=[shlex.join(c)[:70] for c in COMMANDS])
def test_readme_command_runs_as_typed(args, workdir, finetune_weights, request, tmp_path):
    reason = needs(args)
    if reason:
        pytest.skip(reason)
    logs = tmp_path / "logs"
    if "--help" in args:
        models = sorted(path.stem for path in (ROOT / "conf" / "model").glob("*.yaml"))
        assert f"model: {', '.join(models)}" in run(args, cwd=ROOT).stdout
        return
    uses_checkpoint = any(a.startswith("ckpt_path=") for a in args)
    resumes = uses_checkpoint and args[0] in ("python", "vitlab-train")
    if resumes:  # first the run to resume (the same command, one epoch), then the command: epoch two
        first = [a for a in args if not a.startswith("ckpt_path=")]
        extra = shrink(first, workdir, finetune_weights)
        run([*first, *extra, f"paths.log_dir={logs}"], cwd=ROOT)
        # Without its results.json the finished one-epoch run is what a stop after epoch one leaves:
        # an interrupted run, which `ckpt_path=last` continues.
        next((logs / "train" / "runs").glob("*/results.json")).unlink()
        args = [*args, *extra, "trainer.max_epochs=2"]
    elif uses_checkpoint:  # eval / predict: the placeholder path becomes a real checkpoint
        last = request.getfixturevalue("trained")
        args = [f"ckpt_path={last}" if a.startswith("ckpt_path=") else a for a in args]
        if args[0] == "vitlab-eval":
            args.append(f"data.root={images_folder(workdir / 'images')}")
        if args[0] == "vitlab-predict":
            images_folder(tmp_path / "more_photos", splits=("x",), n=1)
            write_image(tmp_path / "pizza.jpg", 0, 40, 1)
    else:
        args = [*args, *shrink(args, workdir, finetune_weights)]
    script = [a if a != "train.py" else str(ROOT / "train.py") for a in args]
    result = run([*script, f"paths.log_dir={logs}"], cwd=tmp_path)
    multirun = "-m" in args or any(a.startswith(("hparams_search=", "experiment=table1_sweep")) for a in args)
    if args[0] == "vitlab-predict":
        (run_dir,) = (logs / "predict" / "runs").iterdir()
        assert (run_dir / "predictions.png").is_file()
        assert len((run_dir / "predictions.csv").read_text().splitlines()) == 1 + 1 + 3
    elif args[0] == "vitlab-eval":
        (results,) = outputs(logs, "eval")
        assert sum(map(sum, json.loads(results.read_text())["confusion_matrix"])) == 3 * 5
    elif multirun:
        (sweep,) = (logs / "train" / "multiruns").iterdir()
        jobs = sorted(sweep.glob("*/results.json"))
        assert len(jobs) >= 2
        summary = (sweep / "summary.md").read_text().splitlines()
        assert len(summary) == 2 + len(jobs)
        if any(a.startswith("hparams_search=") for a in args):
            assert (sweep / "optimization_results.yaml").is_file()
    else:
        results = [json.loads(p.read_text()) for p in outputs(logs, "train")]
        assert results and results[-1]["metrics"]
        if resumes:
            assert results[-1]["epochs"] == 2  # resumed after the first epoch, trained the second
    assert "Traceback" not in result.stderr
