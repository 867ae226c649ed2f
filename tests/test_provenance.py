"""Provenance: every result says which code, command, packages, machine and data made it."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import vitlab.provenance as provenance
from vitlab.checkpoint import load_torch_file
from vitlab.eval import main as eval_main
from vitlab.predict import main as predict_main
from vitlab.stats import bootstrap_interval
from vitlab.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def test_the_code_version_is_this_checkouts_commit_and_whether_it_has_changes():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an installed wheel): the package version is recorded instead")
    version = provenance.code_version()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert version["git_commit"] == head.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", version["git_commit"])
    status = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)docs",
        ],
        capture_output=True,
        text=True,
    )
    assert version["git_dirty"] is bool(status.stdout.strip())


def test_a_changed_record_or_doc_is_not_a_code_change_but_a_changed_source_file_is(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "src" / "vitlab").mkdir(parents=True)
    (tmp_path / "docs" / "runs").mkdir(parents=True)
    (tmp_path / "src" / "vitlab" / "train.py").write_text("x = 1\n")
    (tmp_path / "docs" / "runs" / "a.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", (tmp_path / "src" / "vitlab").resolve())
    (tmp_path / "docs" / "runs" / "a.json").write_text('{"rewritten": true}\n')
    assert provenance.code_version()["git_dirty"] is False
    (tmp_path / "src" / "vitlab" / "train.py").write_text("x = 2\n")
    assert provenance.code_version()["git_dirty"] is True


def test_outside_a_checkout_the_package_version_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path / "site-packages" / "vitlab")
    version = provenance.code_version()
    assert "git_commit" not in version and version["package_version"]


def test_code_from_uncommitted_changes_says_so_where_its_numbers_are_shown():
    commit = "a" * 40
    assert provenance.code_description({"git_commit": commit, "git_dirty": False}) == "commit aaaaaaaaaa"
    assert "uncommitted changes" in provenance.code_description({"git_commit": commit, "git_dirty": True})
    assert provenance.code_description({"package_version": "0.1.0"}) == "vitlab 0.1.0"
    assert "no provenance" in provenance.code_description(None)


def test_a_splits_fingerprint_follows_its_files_names_and_sizes_not_where_they_are(
    tmp_path, make_image_folder
):
    root = make_image_folder("a")
    files = sorted((root / "test").rglob("*.jpg"))
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    same = provenance.files_fingerprint(sorted((moved / "test").rglob("*.jpg")), moved)
    assert provenance.files_fingerprint(files, root) == same
    (moved / "test" / "pizza" / "0.jpg").write_bytes(b"\xff" * 10)
    assert provenance.files_fingerprint(sorted((moved / "test").rglob("*.jpg")), moved) != same


def test_train_eval_and_predict_record_their_provenance_and_per_image_predictions(
    run_command, make_image_folder, tmp_path
):
    data = make_image_folder("food", n_per_class={"train": 6, "test": 4})
    logs = tmp_path / "logs"
    argv = [
        "debug=tiny",
        "data=imagefolder",
        f"data.root={data}",
        "data.val_fraction=0",
        f"paths.log_dir={logs}",
        "seed=3",
    ]
    assert run_command(train_main, *argv) is None
    (run,) = (logs / "train" / "runs").iterdir()
    results = json.loads((run / "results.json").read_text())
    recorded = results["provenance"]
    assert recorded["seed"] == 3 and recorded["argv"][1:] == argv
    assert "data.root=" + str(data) in recorded["overrides"] and recorded["command"].endswith("seed=3")
    assert recorded["versions"]["torch"] == torch.__version__ and "lightning" in recorded["versions"]
    assert (
        recorded["machine"]["cpu_cores"] >= 1
        and recorded["machine"]["gpu_count"] == torch.cuda.device_count()
    )
    assert recorded["wall_time_s"] == results["wall_time_s"] > 0
    splits = recorded["data"]["splits"]
    assert splits["train"]["images"] == 18 and splits["test"]["images"] == 12
    assert splits["test"]["fingerprint"] == provenance.files_fingerprint(
        sorted((data / "test").rglob("*.jpg")), data
    )
    assert splits["val"] == {"same_as": "test"}

    checkpoint = load_torch_file(run / "checkpoints" / "last.ckpt")
    in_checkpoint = checkpoint["provenance"]
    code = ("git_commit", "git_dirty") if "git_commit" in recorded else ("package_version",)
    same = ("command", "seed", "data", "started_at", *code)
    assert {k: in_checkpoint[k] for k in same} == {k: recorded[k] for k in same}

    # per-image test predictions: one row per test image, counting what the confusion matrix counts
    with open(run / "test_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["image"].split("/")[0] for r in rows} == {"test"}
    right = sum(r["true"] == r["predicted"] for r in rows)
    confusion = torch.tensor(results["test_confusion_matrix"])
    assert right == confusion.trace().item()
    metrics = results["metrics"]
    assert metrics["test/acc"] == pytest.approx(right / 12)
    low, high = metrics["test/acc_ci95_low"], metrics["test/acc_ci95_high"]
    assert (low, high) == bootstrap_interval([r["true"] == r["predicted"] for r in rows])
    assert low <= metrics["test/acc"] <= high

    # eval: its own provenance, the checkpoint's, and the same interval from the same predictions
    assert (
        run_command(
            eval_main,
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "logger=none",
            f"paths.log_dir={logs}",
        )
        is None
    )
    (eval_run,) = (logs / "eval" / "runs").iterdir()
    evaluated = json.loads((eval_run / "results.json").read_text())
    assert evaluated["checkpoint"]["provenance"] == in_checkpoint
    assert evaluated["provenance"]["command"] != recorded["command"]
    assert evaluated["provenance"]["data"]["splits"]["test"] == splits["test"]
    assert (evaluated["metrics"]["test/acc_ci95_low"], evaluated["metrics"]["test/acc_ci95_high"]) == (
        low,
        high,
    )
    assert (eval_run / "test_predictions.csv").read_text() == (run / "test_predictions.csv").read_text()

    # predict: its provenance, the checkpoint's, and the images it read
    images = data / "test" / "sushi"
    assert (
        run_command(
            predict_main,
            f"ckpt_path={run}/checkpoints/last.ckpt",
            f"images={images}",
            "grid=false",
            f"paths.log_dir={logs}",
        )
        is None
    )
    (predict_run,) = (logs / "predict" / "runs").iterdir()
    predicted = json.loads((predict_run / "results.json").read_text())
    assert predicted["checkpoint"]["provenance"] == in_checkpoint and predicted["images"] == 4
    assert predicted["provenance"]["data"]["images"]["fingerprint"] == provenance.files_fingerprint(
        sorted(images.iterdir())
    )


def test_a_published_record_names_placeholders_not_this_machines_folders(tmp_path):
    runs, repo = tmp_path / "runs", tmp_path / "checkout"
    argv = [
        str(repo / "train.py"),
        f"hydra.run.dir={runs / 'a'}",
        f"model.pretrained_file={tmp_path / 'w.pth'}",
    ]
    roots = provenance.usual_roots(runs / "a", argv)
    record = provenance.publishable({"argv": argv, "n": 3}, roots)
    assert record == {
        "argv": ["<repo>/train.py", "hydra.run.dir=<runs>/a", f"model.pretrained_file={tmp_path}/w.pth"],
        "n": 3,
    }


def test_a_record_of_a_vitlab_command_names_the_checkout_that_holds_the_package_as_repo(tmp_path):
    checkout = Path(provenance.__file__).resolve().parents[2]
    argv = [str(checkout / "src" / "vitlab" / "analyze.py"), f"hydra.run.dir={tmp_path / 'runs' / 'a'}"]
    record = provenance.publishable({"argv": argv}, provenance.usual_roots(tmp_path / "runs" / "a", argv))
    assert record == {"argv": ["<repo>/src/vitlab/analyze.py", "hydra.run.dir=<runs>/a"]}
