"""The README is a test: every command of its "Everyday commands" and "Deploy" blocks runs as typed,
shrunk only by appended overrides (a tiny model, image size and epoch count; fewer trials, jobs, shots, nodes and
devices), exits 0 and writes what it promises. Placeholders (``...``, ``<time>``) become generated
files, and the relative paths a command names (``photos/``, ``weights.pth``) are generated where it
runs; what would be downloaded (datasets, named weights) is a small local stand-in of the same
format. Commands that need what this machine lacks skip and say why. A new command in the block is
covered by the rule for its kind."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
import yaml
from conftest import food101_layout, write_image
from hydra import compose
from slurm_cluster import local_cluster_is_current

from vitlab.cli.command import initialize_configs
from vitlab.cli.validate import validate
from vitlab.data.streaming import read_meta
from vitlab.models import create_model
from vitlab.models.variants import resolve_variant
from vitlab.models.weights import to_timm

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
SECTIONS = ("## Everyday commands", "## Deploy")
PLACEHOLDER = re.compile(r"^(\.\.\.|.*<time>)")  # `data.root=...`, `ckpt_path=.../last.ckpt`


def everyday_commands() -> list[list[str]]:
    """The commands of the README's ``bash`` blocks under "## Everyday commands" and "## Deploy"."""
    text = README.read_text()
    blocks = [re.search(r"```bash\n(.*?)```", text.split(h, 1)[1], re.S).group(1) for h in SECTIONS]
    lines = [shlex.split(line, comments=True) for b in blocks for line in b.splitlines() if line.strip()]
    return [[os.path.expandvars(arg) for arg in args] for args in lines]  # as the shell would


COMMANDS = everyday_commands()


def kind(args: list[str]) -> str:
    """``train`` (train.py, vitlab-train, or a script of train.py runs), ``convert`` (a script with its
    own options), else the entry point's name (``vitlab-eval``, ``vitlab-analyze``, ...)."""
    if args[0] == "vitlab-train" or args[:2] == ["python", "train.py"] or args[0].endswith(".sh"):
        return "train"
    if args[0] == "python" and args[1].startswith("scripts/"):
        return "convert"
    return args[0]


def value(args: list[str], key: str) -> str | None:
    """The last value the command gives ``key`` (``key=value``)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return values[-1] if values else None


def group_config(group: str, args: list[str]) -> dict:
    """The YAML of the config ``group=name`` the command picks (empty when it picks none)."""
    name = value(args, group)
    return yaml.safe_load((ROOT / "conf" / group / f"{name}.yaml").read_text()) if name else {}


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


def food101(workdir: Path) -> Path:
    """A torchvision Food101 root of four classes, 10 train and 5 test images each (a fifth of that
    is FoodVision Big's two and one)."""
    root = workdir / "food101"
    if not root.exists():
        images = images_folder(workdir / "food101_images", splits=("all",), n=15) / "all"
        (images / "ramen").symlink_to(images / "sushi")
        food101_layout(images, root, ["pizza", "ramen", "steak", "sushi"], n_train=10)
    return root


def torchvision_vit(path: Path, depth: int, hidden: int, heads: int) -> Path:
    """A torchvision-format ViT (random weights) at 32 px: what torchvision:<ENUM> downloads, shrunk."""
    if not path.exists():
        model = torchvision.models.VisionTransformer(32, 16, depth, heads, hidden, 4 * hidden)
        torch.save(model.state_dict(), path)
    return path


def timm_vit_ti16(workdir: Path) -> Path:
    """A timm-layout ViT-Ti/16 of one block at 32 px (random weights): what timm:<name> downloads."""
    path = workdir / "vit_ti16_timm_one_block.pth"
    if not path.exists():
        torch.save(
            to_timm(create_model("vit_ti16", image_size=32, depth=1, num_classes=10).state_dict()), path
        )
    return path


def shrink(args: list[str], workdir: Path) -> list[str]:
    """The appended options that make a command tiny; nothing the command set is removed. Not
    ``debug=tiny`` (the tests' tiny run): that picks its own model and data, where these keep the
    command's, and it would replace a ``debug=`` the command picks."""
    if kind(args) == "convert":
        return ["--size", "32", "--num-workers", "1"]
    if kind(args) == "vitlab-analyze":
        return ["model.image_size=32", "model.depth=1", "num_images=4"]
    if kind(args) == "vitlab-fewshot":
        return ["shots=[1,5]", "seeds=2"]  # images_folder has five per class
    if kind(args) in ("vitlab-eval", "vitlab-predict", "vitlab-export", "vitlab-demo"):
        return []  # the checkpoint brings its (tiny) model and its data config
    extra = []
    if value(args, "experiment") == "table1_sweep":
        extra.append("model=vit_ti16,vit_b32")  # fewer jobs (as the experiment's own comment shows)
    size = 2 * math.lcm(*patch_sizes(args + extra))
    extra += [f"model.image_size={size}", "model.depth=1", "trainer.max_epochs=1", "logger=csv"]
    data = value(args, "data")
    if data == "synthetic":
        extra += ["data.train_size=24", "data.val_size=12", "data.test_size=12"]
    elif data == "streaming":
        pass  # the command names the converted folder
    elif "food101" in [data, *group_config("data", args).get("defaults", [])]:  # downloaded on first use
        extra.append(f"data.root={food101(workdir)}")
    else:  # FoodVision (downloaded on first use) or the user's folder: a small local folder instead
        extra.append(f"data.root={images_folder(workdir / 'images')}")
    extra.append("data.batch_size=4")
    if any(a.startswith("hparams_search=") for a in args):
        extra.append("hydra.sweeper.n_trials=2")  # fewer trials
    named = group_config("experiment", args).get("model", {}).get("pretrained") or ""
    if named.startswith("torchvision:ViT_B_16"):  # a local file in the downloaded weights' format
        extra.append(f"model.pretrained={torchvision_vit(workdir / 'vit_b16_one_block.pth', 1, 768, 12)}")
    elif named.startswith("timm:vit_tiny"):  # its local copy, as offline users give it
        extra.append(f"model.pretrained_file={timm_vit_ti16(workdir)}")
    if any(a.startswith("trainer.devices=") for a in args) and not torch.cuda.is_available():
        extra.append("trainer.accelerator=cpu")
    return extra


# README lines that another test already runs end to end (through the same config and command, shrunk):
# here they are composed and validated, not run a second time. The key: what the line contains.
RUN_ELSEWHERE = {
    "model=vit_b16 trainer.devices=2": "tests/test_cli.py::test_two_cpu_processes_train_with_ddp_and_count_each_test_image_once",
    "-m model=vit_b16,vit_b32 optimizer.lr=1e-3,3e-4": "tests/test_cli.py::test_multirun_sweep_writes_a_summary_and_groups_its_wandb_runs",
    "hparams_search=optuna": "tests/test_cli.py::test_optuna_search_runs_two_trials",
    "ckpt_path=last": "tests/test_resume.py::test_ctrl_c_then_resume_with_no_options_continues_that_run_and_eval_needs_only_the_checkpoint",
    "vitlab-eval ckpt_path=": "tests/test_resume.py::test_ctrl_c_then_resume_with_no_options_continues_that_run_and_eval_needs_only_the_checkpoint",
    "experiment=foodvision_scratch": "tests/test_train.py::test_foodvision_scratch_experiment_runs_on_an_image_folder",
    "experiment=foodvision_finetune": "tests/test_train.py::test_foodvision_finetune_experiment_loads_local_torchvision_weights",
    "experiment=paper_pretrain": "tests/test_recipes.py::test_paper_pretrain_runs_small_with_accumulated_steps",
    "experiment=paper_finetune": "tests/test_recipes.py::test_paper_finetune_replaces_the_head_by_a_zero_initialised_one",
    "experiment=table1_sweep": "tests/test_sweep.py::test_table1_script_trains_the_sweep_and_ends_with_its_summary",
    "out=model.onnx": "tests/test_export.py::test_onnx_file_alone_holds_classes_and_preprocessing_and_matches_pytorch",
    "format=pt2": "tests/test_export.py::test_pt2_program_loads_without_vitlab_and_carries_its_metadata",
    "quantize=dynamic": "tests/test_export.py::test_dynamic_quantization_writes_int8_with_metadata_and_reports_both_accuracies",
    "ckpt_path=model.onnx": "tests/test_export.py::test_predict_from_the_onnx_file_writes_the_checkpoints_predictions",
    "vitlab-demo": "tests/test_demo.py::test_a_browser_uploads_a_photo_and_reads_the_predicted_class",
    "format=space": "tests/test_demo.py::test_the_space_folder_predicts_like_the_checkpoint_without_torch_or_vitlab",
    "scripts/bench_deploy.py": "tests/test_bench_deploy.py::test_the_table_has_a_row_per_runtime_and_the_courses_rows",
}


def run_elsewhere(args: list[str]) -> str | None:
    line = " ".join(args)
    return next((test for key, test in RUN_ELSEWHERE.items() if key in line), None)


def test_every_line_run_elsewhere_names_a_test_that_exists_and_a_line_of_the_readme():
    lines = [" ".join(args) for args in COMMANDS]
    for key, test in RUN_ELSEWHERE.items():
        assert any(key in line for line in lines), f"no README line contains {key!r} any more"
        path, name = test.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), test


def composable(args: list[str]) -> tuple[str, list[str]] | None:
    """``(config name, its options)`` of a Hydra command line, or None for scripts and converters,
    which take options of their own."""
    if args[0].endswith(".sh") or kind(args) == "convert" or "--help" in args:
        return None
    config = "train" if kind(args) == "train" else kind(args).removeprefix("vitlab-")
    return config, [a for a in args[1:] if "=" in a and not a.endswith(".py")]


def one_job(options: list[str]) -> list[str]:
    """What one job of a command line composes: a sweep's first value of each swept option, and a
    placeholder path (``.../last.ckpt``) as a plain one."""
    composed = []
    for option in options:
        key, _, given = option.partition("=")
        if key.startswith("hydra."):
            continue
        if PLACEHOLDER.match(given):
            given = "/placeholder"
        elif "," in given and not given.startswith("["):
            given = given.split(",")[0]
        composed.append(f"{key}={given}")
    return composed


@pytest.mark.parametrize("args", COMMANDS, ids=[shlex.join(c)[:70] for c in COMMANDS])
def test_readme_command_composes_and_validates(args, workdir, monkeypatch):
    """Every line composes over the real conf/ and (training) passes the checks run before any data."""
    found = composable(args)
    if found is None:
        pytest.skip("a script: run by test_readme_command_runs_as_typed")
    config, options = found
    monkeypatch.setenv("VITLAB_MPP_CKPT", "/the/script/gives/it.ckpt")
    with initialize_configs():
        cfg = compose(config, overrides=one_job([*options, *shrink(args, workdir)]))
    if config == "train":
        validate(cfg)


def needs(args: list[str]) -> str | None:
    """Why a command cannot run here, or None."""
    if any(a == "launcher=slurm" for a in args):
        if local_cluster_is_current():  # one node: the line as typed asks for two
            return "tests/test_slurm.py runs the README's SLURM line for CPU nodes on the suite's one-node cluster"
        sinfo = shutil.which("sinfo")
        if sinfo is None or subprocess.run([sinfo], capture_output=True).returncode != 0:
            return "needs a SLURM cluster (sinfo finds none)"
    if any(a.startswith("trainer=gpu") for a in args) and not torch.cuda.is_available():
        return "needs a GPU"
    return None


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``args`` as the shell runs them from the repository root, run in ``cwd``."""
    local = [str(ROOT / a) if a.endswith((".py", ".sh")) and (ROOT / a).is_file() else a for a in args]
    program = {"python": [sys.executable]}.get(
        local[0], [local[0] if "/" in local[0] else str(BIN / local[0])]
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("MASTER_PORT", None)  # as from a fresh shell, not one an in-process Lightning run set
    result = subprocess.run(
        program + local[1:], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


COMMAND_MODULES = {
    "train": "vitlab.train",
    "vitlab-eval": "vitlab.eval",
    "vitlab-predict": "vitlab.predict",
    "vitlab-analyze": "vitlab.analyze",
    "vitlab-fewshot": "vitlab.fewshot",
}


def run_here(args: list[str], cwd: Path, monkeypatch, capsys) -> SimpleNamespace:
    """A command line as ``run`` runs it, but in this process (a command's ``main()`` with its argv):
    the same wrapper and exit, without a Python start per line. Scripts still run as programs."""
    if args[0].endswith(".sh") or kind(args) not in COMMAND_MODULES:
        return run(args, cwd)
    main = importlib.import_module(COMMAND_MODULES[kind(args)]).main
    program, options = (args[1], args[2:]) if args[0] == "python" else (args[0], args[1:])
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [program, *options])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    capsys.readouterr()
    try:
        main()
    except SystemExit as exit:
        assert exit.code in (None, 0), f"{shlex.join(args)}: {exit.code}"
    printed = capsys.readouterr()
    return SimpleNamespace(stdout=printed.out, stderr=printed.err)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def trained(workdir) -> Path:
    """One finished tiny run, for the commands that start from a checkpoint; its last.ckpt."""
    logs = workdir / "trained" / "logs"
    args = ["python", "train.py", "model=vit_ti16"]
    run([*args, *shrink(args, workdir), f"paths.log_dir={logs}"], cwd=ROOT)
    (last,) = logs.glob("train/runs/*/checkpoints/last.ckpt")
    return last


@pytest.fixture(scope="module")
def converted(workdir) -> Path:
    """The folder where the README's converter command ran (as typed, on a generated
    ``data/pizza_steak_sushi``), for the command that streams what it wrote."""
    (args,) = [c for c in COMMANDS if kind(c) == "convert" and "scripts/convert_streaming.py" in c]
    cwd = workdir / "streaming"
    images_folder(cwd / args[args.index("--images") + 1])
    run([*args, *shrink(args, workdir)], cwd=cwd)
    return cwd


def outputs(logs: Path, task: str) -> list[Path]:
    return sorted((logs / task).glob("*runs/**/results.json"))


def own_options(args: list[str]) -> list[str]:
    """The ``key=value`` options a train command gives (what its results.json lists)."""
    return [a for a in args if "=" in a and not a.startswith("-")]


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=[shlex.join(c)[:70] for c in COMMANDS])
def test_readme_command_runs_as_typed(args, workdir, request, tmp_path, monkeypatch, capsys):
    reason = needs(args)
    if reason:
        pytest.skip(reason)
    elsewhere = run_elsewhere(args)
    if elsewhere:
        pytest.skip(f"{elsewhere} runs this line (composed and validated here)")
    logs = tmp_path / "logs"
    if "--help" in args:
        models = sorted(path.stem for path in (ROOT / "conf" / "model").glob("*.yaml"))
        assert f"model: {', '.join(models)}" in run(args, cwd=ROOT).stdout
        return
    if kind(args) == "convert":
        out = request.getfixturevalue("converted") / args[args.index("--out") + 1]
        assert read_meta(str(out)) == (["pizza", "steak", "sushi"], ["train", "test"])
        assert all(any((out / split).glob("chunk-*.bin")) for split in ("train", "test"))
        return
    cwd = request.getfixturevalue("converted") if value(args, "data") == "streaming" else tmp_path
    uses_checkpoint = any(a.startswith("ckpt_path=") for a in args)
    resumes = uses_checkpoint and kind(args) == "train"
    if resumes:  # first the run to resume (the same command, one epoch), then the command: epoch two
        first = [a for a in args if not a.startswith("ckpt_path=")]
        extra = shrink(first, workdir)
        run([*first, *extra, f"paths.log_dir={logs}"], cwd=ROOT)
        # Without its results.json the finished one-epoch run is what a stop after epoch one leaves:
        # an interrupted run, which `ckpt_path=last` continues.
        next((logs / "train" / "runs").glob("*/results.json")).unlink()
        args = [*args, *extra, "trainer.max_epochs=2"]
    else:
        if uses_checkpoint:  # eval, predict, fewshot: the placeholder path becomes a real checkpoint
            last = request.getfixturevalue("trained")
            args = [f"ckpt_path={last}" if a.startswith("ckpt_path=") else a for a in args]
        if value(args, "data.root") and PLACEHOLDER.match(value(args, "data.root")):
            args = [
                f"data.root={images_folder(workdir / 'images')}" if a.startswith("data.root=") else a
                for a in args
            ]
        args = [*args, *shrink(args, workdir)]
    program = kind(args)
    if program == "vitlab-eval":
        args.append(f"data.root={images_folder(workdir / 'images')}")
    if program == "vitlab-predict":
        images_folder(tmp_path / "more_photos", splits=("x",), n=1)
        write_image(tmp_path / "pizza.jpg", 0, 40, 1)
    if program == "vitlab-analyze":
        images_folder(tmp_path / value(args, "images"), splits=("x",), n=2)
        shutil.copy(timm_vit_ti16(workdir), tmp_path / value(args, "model.pretrained_file"))
    if program == "vitlab-fewshot":
        images_folder(tmp_path / value(args, "root"))
    result = run_here([*args, f"paths.log_dir={logs}"], cwd, monkeypatch, capsys)
    experiment = group_config("experiment", args)
    multirun = (
        "-m" in args
        or args[0].endswith("ablate_small_data.sh")  # its sweep over the variants
        or any(a.startswith("hparams_search=") for a in args)
        or experiment.get("hydra", {}).get("mode") == "MULTIRUN"
    )
    if program == "vitlab-predict":
        (run_dir,) = (logs / "predict" / "runs").iterdir()
        assert (run_dir / "predictions.png").is_file()
        assert len((run_dir / "predictions.csv").read_text().splitlines()) == 1 + 1 + 3
    elif program == "vitlab-eval":
        (results,) = outputs(logs, "eval")
        assert sum(map(sum, json.loads(results.read_text())["confusion_matrix"])) == 3 * 5
    elif program == "vitlab-analyze":
        (results,) = [json.loads(p.read_text()) for p in outputs(logs, "analyze")]
        assert sorted(results["pictures"]) == [
            "attention_distance",
            "embedding_filters",
            "position_similarity",
        ]
        assert all(Path(path).stat().st_size > 1000 for path in results["pictures"].values())
        assert results["num_images"] == int(value(args, "num_images"))
        weights = torch.load(tmp_path / value(args, "model.pretrained_file"))
        layers = {key.split(".")[1] for key in weights if key.startswith("blocks.")}
        assert len(results["mean_attention_distance"]) == len(layers)  # one row per block of the file
    elif program == "vitlab-fewshot":
        (results,) = [json.loads(p.read_text()) for p in outputs(logs, "fewshot")]
        shots = value(args, "shots").strip("[]").split(",")
        assert sorted(results["summary"], key=int) == shots
        for n in shots:
            assert len(results["per_seed"][n]) == int(value(args, "seeds"))
            row = next(line for line in result.stdout.splitlines() if line.strip("│ ").startswith(f"{n} "))
            assert f"{results['summary'][n]['mean']:.3f}" in row  # the printed table
    elif value(args, "debug"):  # in logs/debug/, and nothing there passes for a result
        assert outputs(logs, "debug") == [] and not (logs / "train").exists()
        (folder,) = (logs / "debug" / "runs").iterdir()
        assert json.loads((folder / "debug_results.json").read_text())["debug"] is True
    elif multirun:
        (sweep,) = (logs / "train" / "multiruns").iterdir()
        jobs = sorted(sweep.glob("*/results.json"))
        assert len(jobs) >= 2
        summary = (sweep / "summary.md").read_text().splitlines()
        assert len(summary) == 2 + len(jobs)
        if any(a.startswith("hparams_search=") for a in args):
            assert (sweep / "optimization_results.yaml").is_file()
        ran = [json.loads(job.read_text())["overrides"] for job in jobs]
        for key, values in experiment.get("hydra", {}).get("sweeper", {}).get("params", {}).items():
            if value(args, key) is None:  # the experiment's own sweep, not replaced by the command
                swept = sorted(value(overrides, key) for overrides in ran)
                assert swept == sorted(str(values).split(",")), key
    else:
        results = [json.loads(p.read_text()) for p in outputs(logs, "train")]
        assert results and results[-1]["metrics"]
        if resumes:
            assert results[-1]["epochs"] == 2  # resumed after the first epoch, trained the second
        else:
            assert set(own_options(args[1:])) <= set(results[-1]["overrides"])  # as typed, then shrunk
        if args[0].endswith("train_small_data_v3.sh"):  # pre-training, then fine-tuning from its last.ckpt
            pretrain, _finetune = outputs(logs, "train")  # the pre-training's folder is the older
            assert (
                value(json.loads(pretrain.read_text())["overrides"], "experiment")
                == "foodvision_mpp_pretrain"
            )
            assert value(results[-1]["overrides"], "experiment") == "foodvision_small_data_v3"
            used = Path(value(results[-1]["overrides"], "model.pretrained"))
            assert used == pretrain.parent / "checkpoints" / "last.ckpt" and used.is_file()
        if value(args, "data") == "foodvision_big":
            classes = (food101(workdir) / "food-101" / "meta" / "classes.txt").read_text().split()
            assert results[-1]["num_classes"] == len(classes)  # every class, not FoodVision Mini's three
    assert "Traceback" not in result.stderr
