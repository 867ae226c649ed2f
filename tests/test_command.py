"""The one command wrapper, as a user meets it: each command owns its run folder, a failure removes
exactly what the command created and ends in one line, a finished run is never clobbered."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import TINY_RUN

from vitlab import runs
from vitlab.errors import ConfigError
from vitlab.eval import main as eval_main
from vitlab.predict import main as predict_main
from vitlab.train import main as train_main


def files_and_times(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _claim(base: str) -> str:
    return str(runs.claim_folder(Path(base)))


def test_commands_claiming_the_same_name_at_once_each_get_a_folder_of_their_own(tmp_path):
    base = tmp_path / "runs" / "2026-12-03_12-00-00"
    with ProcessPoolExecutor(4) as pool:
        claimed = list(pool.map(_claim, [str(base)] * 8))
    assert len(set(claimed)) == 8
    assert sorted(Path(c).name for c in claimed) == [base.name] + [f"{base.name}_{i}" for i in range(1, 8)]


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    return [*TINY_RUN, f"paths.log_dir={tmp_path / 'logs'}"]


@pytest.fixture
def finished_run(run_command, tiny, tmp_path) -> Path:
    assert run_command(train_main, *tiny) is None
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    return run


def test_a_failing_command_removes_only_its_own_folder_and_says_one_line(run_command, tiny, tmp_path):
    other = tmp_path / "logs" / "train" / "runs" / "2000-01-01_00-00-00"
    (other / ".hydra").mkdir(parents=True)
    (other / "train.log").write_text("another run, still writing")
    before = files_and_times(other)
    code = run_command(train_main, *tiny, "model.patch_size=7")
    assert (
        code.startswith("error: model.image_size=32 is not divisible by model.patch_size=7")
        and "\n" not in code
    )
    assert [p.name for p in other.parent.iterdir()] == [other.name]
    assert files_and_times(other) == before


def test_a_named_run_folder_that_holds_another_run_is_refused_before_anything_is_written(
    run_command, tiny, finished_run
):
    before = files_and_times(finished_run)
    code = run_command(train_main, *tiny, f"hydra.run.dir={finished_run}")
    assert code.startswith(f"error: hydra.run.dir={finished_run} already holds another run")
    assert "ckpt_path=" in code
    assert files_and_times(finished_run) == before


def test_a_finished_run_is_left_as_it_is_and_trained_further_only_when_asked(
    run_command, finished_run, capsys
):
    before = files_and_times(finished_run)
    assert run_command(train_main, f"ckpt_path={finished_run}") is None  # exit 0: requeue loops may call it
    assert files_and_times(finished_run) == before
    assert [p.name for p in finished_run.parent.iterdir()] == [finished_run.name]
    said = capsys.readouterr().out
    assert "finished (epoch 1 of 1)" in said and "trainer.max_epochs=2" in said

    earlier = json.loads((finished_run / "results.json").read_text())
    assert run_command(train_main, f"ckpt_path={finished_run}", "trainer.max_epochs=2") is None
    assert "learning-rate schedule is recomputed" in capsys.readouterr().out
    now = json.loads((finished_run / "results.json").read_text())
    kept = json.loads((finished_run / f"results_step{earlier['global_step']}.json").read_text())
    assert kept == earlier and now["epochs"] == 2 and now["global_step"] == 2 * earlier["global_step"]
    assert [p.name for p in finished_run.parent.iterdir()] == [finished_run.name]


def test_tracebacks_on_request_and_bugs_keep_theirs(run_command, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_TRACEBACK", "1")
    with pytest.raises(ConfigError, match=r"model\.patch_size=7"):
        run_command(train_main, *tiny, "model.patch_size=7")
    monkeypatch.delenv("VITLAB_TRACEBACK")

    def bug(*args, **kwargs):
        raise KeyError("a bug, not the user's")

    monkeypatch.setattr("vitlab.train.build_module", bug)
    with pytest.raises(KeyError, match="a bug"):
        run_command(train_main, *tiny)
    runs_dir = tmp_path / "logs" / "train" / "runs"
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_eval_and_predict_failures_leave_no_folder_and_do_not_speak_of_training(
    run_command, tmp_path, finished_run, capsys
):
    capsys.readouterr()
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    code = run_command(eval_main, f"ckpt_path={tmp_path / 'absent.ckpt'}", logs)
    assert code.startswith("error: ckpt_path=") and "no such file" in code
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    checkpoint = finished_run / "checkpoints" / "last.ckpt"
    code = run_command(predict_main, f"ckpt_path={checkpoint}", f"images=[{notes}]", logs)
    assert code.startswith(f"error: images={notes}") and "\n" not in code
    for command in ("eval", "predict"):
        assert not any((tmp_path / "logs" / command / "runs").iterdir())
    said = capsys.readouterr()
    assert "trained" not in said.out + said.err


def test_eval_on_data_with_other_classes_is_one_line(run_command, tmp_path, finished_run, make_image_folder):
    root = make_image_folder(classes=("pizza", "steak", "sushi"), n_per_class=2)
    checkpoint = finished_run / "checkpoints" / "last.ckpt"
    code = run_command(
        eval_main,
        f"ckpt_path={checkpoint}",
        "data=imagefolder",
        f"data.root={root}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert code.startswith("error: the checkpoint's classes") and "differ from the data's" in code
    assert "\n" not in code and not any((tmp_path / "logs" / "eval" / "runs").iterdir())


def test_a_command_run_in_process_stops_logging_into_the_folder_it_removed(run_command, tmp_path):
    logs = tmp_path / "logs"
    code = run_command(train_main, *TINY_RUN, "ckpt_path=last", f"paths.log_dir={logs}")
    assert str(code).startswith("error: ckpt_path=last: no interrupted run")
    assert not list((logs / "train" / "runs").glob("*"))  # its folder went
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    handlers = [
        h for lg in loggers for h in getattr(lg, "handlers", []) if isinstance(h, logging.FileHandler)
    ]
    assert not [h.baseFilename for h in handlers if Path(h.baseFilename).is_relative_to(logs)]
    logging.getLogger("after").warning("a later line logged in this process")  # must not reopen train.log
