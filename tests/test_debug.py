"""The debug group (conf/debug/), as lightning-hydra-template's: each config runs on the tiny run's
data and model (``debug=[tiny,<name>]``), lands under logs/debug/runs/, and writes
debug_results.json, never a results.json that would pass for a result or a run to continue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitlab import runs
from vitlab.train import main


def debug_results(run: Path) -> dict:
    assert not (run / runs.RESULTS).exists()
    results = json.loads((run / runs.DEBUG_RESULTS).read_text())
    assert results["debug"] is True and "tested_checkpoint" not in results
    return results


@pytest.mark.parametrize(
    ("debug", "steps"),
    [  # 3 tiny batches per epoch; limit's 3 epochs and overfit's 2 (of 20), with anomaly detection on
        ("fdr", 1),
        pytest.param("limit", 3 * 3, marks=pytest.mark.slow),
        pytest.param("overfit", 2 * 3, marks=pytest.mark.slow),
        ("profiler", 3),
    ],
)
def test_each_debug_config_runs_into_logs_debug_and_writes_no_result(run_command, tmp_path, debug, steps):
    logs = tmp_path / "logs"
    shorter = ["trainer.max_epochs=2"] if debug == "overfit" else []
    # anomaly detection (debug=default's) multiplies a step's time and is not what is checked here
    quick = ["trainer.detect_anomaly=false", *shorter]
    assert run_command(main, f"debug=[tiny,{debug}]", f"paths.log_dir={logs}", *quick) is None
    assert not (logs / "train").exists()
    (run,) = (logs / "debug" / "runs").iterdir()
    results = debug_results(run)
    assert results["global_step"] == steps and "test/acc" in results["metrics"]
    assert runs.interrupted_runs(logs / "debug" / "runs") == []  # finished, though it has checkpoints
    if debug == "fdr":
        assert not (run / "checkpoints").exists()
    if debug == "profiler":
        assert "Action" in (run / "fit-profiler.txt").read_text()  # the SimpleProfiler's table
        assert (run / "test-profiler.txt").is_file()


def test_a_fast_dev_run_is_not_a_result_nor_a_run_to_continue(run_command, tmp_path, capsys):
    logs = tmp_path / "logs"
    assert run_command(main, "debug=tiny", "trainer.fast_dev_run=true", f"paths.log_dir={logs}") is None
    (run,) = (logs / "train" / "runs").iterdir()
    assert debug_results(run)["global_step"] == 1
    printed = capsys.readouterr()
    assert "a debug run (trainer.fast_dev_run=True): not a result" in printed.out + printed.err
    code = run_command(main, "debug=tiny", "ckpt_path=last", f"paths.log_dir={logs}")
    assert str(code).startswith("error: ckpt_path=last: no interrupted run under")
