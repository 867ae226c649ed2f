"""Sweep summaries: rows, tables and plots from multirun folders and from W&B (mocked)."""

import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from matplotlib.image import imread

from vitlab.models.cost import variant_cost
from vitlab.provenance import code_description
from vitlab.sweep_summary import COLUMNS, read_csv_history, summarize_sweep, summarize_wandb

REPO = Path(__file__).resolve().parents[1]
COMMON = ["data=synthetic", "trainer.max_epochs=2"]
CSV_HEADER = [
    "epoch",
    "step",
    "train/loss_step",
    "train/loss_epoch",
    "train/acc",
    "val/loss",
    "val/acc",
    "test/acc",
]


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0  # something was drawn


def write_job(sweep: Path, job: str, patch: int, val_best: float, test: float, with_csv: bool = True) -> None:
    folder = sweep / job
    folder.mkdir(parents=True)
    results = {
        "model": "vit_ti16",
        "patch_size": patch,
        "image_size": 32,
        "overrides": [*COMMON, f"model.patch_size={patch}"],
        "params": 5_000_000 + patch,
        "global_step": 4,
        "epochs": 2,
        "wall_time_s": 12.5,
        "metrics": {
            "val/acc_best": val_best,
            "val/acc": val_best - 0.1,
            "test/acc": test,
            "train/images_per_sec": 80.0,
        },
    }
    (folder / "results.json").write_text(json.dumps(results))
    if with_csv:  # sparse rows, as Lightning's CSVLogger writes them
        (folder / "csv").mkdir()
        with open(folder / "csv" / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_HEADER)
            writer.writeheader()
            for epoch in range(2):
                writer.writerow({"epoch": epoch, "step": 2 * epoch + 1, "train/loss_step": 1.1})
                writer.writerow(
                    {
                        "epoch": epoch,
                        "step": 2 * epoch + 1,
                        "val/loss": 1.0 - epoch / 10,
                        "val/acc": 0.4 + epoch / 10,
                    }
                )
                writer.writerow(
                    {
                        "epoch": epoch,
                        "step": 2 * epoch + 1,
                        "train/loss_epoch": 1.1 - epoch / 10,
                        "train/acc": 0.3,
                    }
                )
            writer.writerow({"epoch": 2, "step": 4, "test/acc": test})


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    """Jobs 0, 2 and 10 finished (10 without a CSV log); job 1 failed (no results.json)."""
    sweep = tmp_path / "multiruns" / "2024-05-01_12-00-00"
    write_job(sweep, "0", 8, 0.75, 0.7)
    write_job(sweep, "2", 16, 0.5, 0.45)
    write_job(sweep, "10", 4, 0.875, 0.8125, with_csv=False)
    (sweep / "1").mkdir()
    return sweep


def test_summary_has_a_row_per_finished_job_in_job_order_with_values_from_its_results(fake_sweep):
    rows = summarize_sweep(fake_sweep)
    assert [row["job"] for row in rows] == ["0", "2", "10"]
    assert all(list(row) == COLUMNS for row in rows)
    first = rows[0]
    assert (first["model"], first["patch_size"], first["params"]) == ("vit_ti16", 8, 5_000_008)
    assert (first["best_val_acc"], first["final_val_acc"], first["test_acc"]) == pytest.approx(
        (0.75, 0.65, 0.7)
    )
    assert (first["images_per_sec"], first["wall_time_s"]) == (80.0, 12.5)
    assert first["overrides"] == "model.patch_size=8"  # what all jobs share is left out
    assert first["gmacs"] == pytest.approx(
        variant_cost("vit_ti16", image_size=32, num_classes=0, patch_size=8)[1] / 1e9
    )
    assert rows[1]["gmacs"] < first["gmacs"]  # bigger patches, fewer tokens


def test_summary_writes_tables_and_plots_next_to_the_jobs(fake_sweep):
    summarize_sweep(fake_sweep)
    with open(fake_sweep / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["job"] for row in table] == ["0", "2", "10"]
    assert list(table[0]) == COLUMNS
    assert float(table[2]["test_acc"]) == 0.8125
    markdown = (fake_sweep / "summary.md").read_text().splitlines()
    assert markdown[0] == "| " + " | ".join(COLUMNS) + " |"
    assert len(markdown) == 2 + 3
    assert "| 10 | vit_ti16 | 4 | model.patch_size=4 | 5,000,004 |" in markdown[4]
    for name in ("accuracy_vs_params.png", "accuracy_vs_gmacs.png", "curves/0.png", "curves/2.png"):
        assert_png(fake_sweep / name)
    assert_png(fake_sweep / "accuracy_vs_model.patch_size.png")  # the number the sweep varies
    assert not (fake_sweep / "curves" / "10.png").exists()  # no CSV log, no curves


def test_csv_history_keeps_only_the_metrics_each_row_logged(fake_sweep):
    history = read_csv_history(fake_sweep / "0" / "csv" / "metrics.csv")
    assert len(history) == 7
    assert history[1] == {"epoch": 0.0, "step": 1.0, "val/loss": 1.0, "val/acc": 0.4}


def test_unusable_folders_are_reported_with_what_was_expected(tmp_path, fake_sweep):
    with pytest.raises(FileNotFoundError, match=r"does not exist: pass a multirun folder"):
        summarize_sweep(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no <job>/results.json under"):
        summarize_sweep(fake_sweep / "1")
    (fake_sweep / "3").mkdir()
    (fake_sweep / "3" / "results.json").write_text(json.dumps({"model": "vit_ti16"}))
    with pytest.raises(ValueError, match=r"3/results.json has no 'patch_size' entry"):
        summarize_sweep(fake_sweep)


class FakeRun(SimpleNamespace):
    """The parts of ``wandb.apis.public.Run`` the summary reads."""

    def history(self, keys, pandas):
        assert pandas is False
        self.requested.append(keys)
        return [row for row in self.rows if all(key in row for key in keys)]


def fake_wandb_run(run_id: str, patch: int, test: float) -> FakeRun:
    rows = [
        {"_step": 0, "epoch": 0, "train/loss_epoch": 1.1, "train/acc": 0.3},
        {"_step": 1, "epoch": 0, "val/loss": 1.0, "val/acc": 0.4},
        {"_step": 2, "epoch": 1, "train/loss_epoch": 0.9, "train/acc": 0.5},
        {"_step": 3, "epoch": 1, "val/loss": 0.8, "val/acc": 0.6},
    ]
    return FakeRun(
        id=run_id,
        name=f"vit_ti16 data=synthetic model.image_size=32 model.patch_size={patch}",
        config={"model": {"name": "vit_ti16", "image_size": 32, "patch_size": patch}},
        summary_metrics={"val/acc_best": 0.6, "val/acc": 0.6, "test/acc": test, "_runtime": 30.0},
        rows=rows,
        requested=[],
    )


def test_wandb_group_is_summarised_like_a_folder(tmp_path):
    runs = [fake_wandb_run("abc123", 8, 0.55), fake_wandb_run("def456", 16, 0.5)]
    calls = []

    class FakeApi:
        def runs(self, path, filters, order):
            calls.append((path, filters))
            return runs

    rows = summarize_wandb("team/vitlab", "2024-05-01_12-00-00", tmp_path, api=FakeApi())
    assert calls == [("team/vitlab", {"group": "2024-05-01_12-00-00"})]
    assert [(row["job"], row["patch_size"], row["test_acc"]) for row in rows] == [
        ("abc123", 8, 0.55),
        ("def456", 16, 0.5),
    ]
    assert rows[0]["overrides"] == "model.patch_size=8"
    assert rows[0]["wall_time_s"] == 30.0 and rows[0]["images_per_sec"] is None
    assert (rows[0]["params"], rows[0]["gmacs"] * 1e9) == pytest.approx(
        variant_cost("vit_ti16", image_size=32, num_classes=0, patch_size=8)
    )
    assert ["epoch", "val/acc"] in runs[0].requested  # one request per metric: they sit in different rows
    assert len((tmp_path / "summary.md").read_text().splitlines()) == 4
    for name in ("accuracy_vs_params.png", "accuracy_vs_gmacs.png", "curves/abc123.png", "curves/def456.png"):
        assert_png(tmp_path / name)


def test_an_empty_wandb_group_names_what_to_check(tmp_path):
    api = SimpleNamespace(runs=lambda path, filters, order: [])
    with pytest.raises(LookupError, match=r"no W&B runs in team/vitlab with group='nope'"):
        summarize_wandb("team/vitlab", "nope", tmp_path, api=api)


def test_cli_summarises_a_folder_and_prints_the_table(fake_sweep, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["summarize_sweep.py", str(fake_sweep)])
    runpy.run_path(str(REPO / "scripts" / "summarize_sweep.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.startswith("| job | model |")
    assert (fake_sweep / "summary.csv").is_file()


def test_cli_needs_a_folder_or_a_wandb_group(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["summarize_sweep.py", "--wandb", "team/vitlab"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(REPO / "scripts" / "summarize_sweep.py"), run_name="__main__")
    assert "--wandb needs --group" in capsys.readouterr().err


@pytest.mark.slow
def test_table1_script_trains_the_sweep_and_ends_with_its_summary(tmp_path):
    """One real (tiny) job through scripts/sweep_table1.sh: train.py -m and the Hydra callback."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    tiny = [
        "model=vit_ti16",
        "model.image_size=32",
        "model.patch_size=16",
        "data=synthetic",
        "data.train_size=16",
        "data.val_size=8",
        "data.test_size=8",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "logger=csv",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "sweep_table1.sh"), *tiny],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert str(sweep / "summary.md") in result.stdout + result.stderr
    assert (sweep / "summary.md").read_text() in result.stdout  # printed once the sweep ends
    with open(sweep / "summary.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert (row["model"], row["patch_size"]) == ("vit_ti16", "16")
    assert float(row["test_acc"]) == pytest.approx(results["metrics"]["test/acc"])
    low, high = float(row["test_acc_ci95_low"]), float(row["test_acc_ci95_high"])
    assert low <= float(row["test_acc"]) <= high  # the interval train computed, as results.json holds it
    assert row["code"] == code_description(results["provenance"])  # says so if the code had changes
    for name in ("accuracy_vs_params.png", "accuracy_vs_gmacs.png", "curves/0.png"):
        assert_png(sweep / name)


@pytest.mark.slow
def test_validation_accuracy_measured_on_the_test_split_is_not_shown_as_validation(
    compose_config, make_image_folder, tmp_path
):
    from conftest import TINY_RUN

    from vitlab.train import train

    root = make_image_folder(n_per_class=2, size=32)
    tiny = [o for o in TINY_RUN if not o.startswith("data")]
    sweep = tmp_path / "multiruns" / "now"
    for job, fraction in enumerate((0, 0.5)):
        options = [*tiny, "data=imagefolder", f"data.root={root}", "data.num_workers=0"]
        options += [f"data.val_fraction={fraction}", f"paths.output_dir={sweep / str(job)}"]
        train(compose_config(*options, tiny=False))
    validations = [json.loads((sweep / j / "results.json").read_text())["validation"] for j in "01"]
    assert validations == ["test split", "held out from train (0.5)"]
    on_test, held_out = summarize_sweep(sweep)
    assert on_test["best_val_acc"] is on_test["final_val_acc"] is None and on_test["test_acc"] is not None
    assert held_out["best_val_acc"] is not None and held_out["final_val_acc"] is not None
    markdown = (sweep / "summary.md").read_text().splitlines()
    assert "| test split | - | - |" in markdown[2]
