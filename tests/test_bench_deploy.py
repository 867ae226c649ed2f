"""scripts/bench_deploy.py: one table of accuracy, size and batch-1 latency per checkpoint and
runtime, beside the course's figures (times are never asserted: only the table's shape)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from conftest import train_food_checkpoint

pytest.importorskip("onnxruntime", reason="the deploy extra is not installed: pip install -e '.[deploy]'")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_deploy.py"
RUNTIMES = ["PyTorch eager fp32", "torch.compile", "ONNX Runtime fp32", "ONNX Runtime int8"]


def table_rows(printed: str) -> list[list[str]]:
    lines = [line for line in printed.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if "---" not in line]


@pytest.mark.slow  # torch.compile of even a one-block model takes a while on two cores
def test_the_table_has_a_row_per_runtime_and_the_courses_rows(tmp_path, monkeypatch, capsys):
    checkpoint = train_food_checkpoint(tmp_path, "trainer.max_epochs=1")
    argv = [str(SCRIPT), "--ckpt", str(checkpoint), "--repeats", "3", "--warmup", "1", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out
    assert "load average before: " in printed and "load average after: " in printed
    header, *rows = table_rows(printed)
    assert header == ["model", "runtime", "test acc", "size (MiB)", "batch 1 (s)", "preprocessing (s)"]
    assert [row[1] for row in rows] == [*RUNTIMES, "PyTorch eager", "PyTorch eager"]
    assert all(row[0].startswith("vit_ti16 32 px") for row in rows[:4])
    for row in rows[:4]:  # every cell measured: accuracy in [0, 1], sizes and times positive
        accuracy, size, latency, preprocessing = map(float, row[2:])
        assert 0 <= accuracy <= 1 and size > 0 and latency > 0 and preprocessing > 0
    assert rows[4][:1] == ["EffNetB2 feature extractor (course)"] and rows[4][3:5] == ["29", "0.027"]
    assert rows[5][3:5] == ["327", "0.064"]
