"""scripts/results_tables.py: the published tables and quoted numbers are their records'."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str = "results_tables"):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_published_table_and_quoted_number_matches_its_records(capsys):
    assert load_script().main(["--check"]) == 0, capsys.readouterr().err


@pytest.fixture
def copy_of_the_docs(tmp_path, monkeypatch):
    """The script pointed at a copy of README.md and docs/ (records included), in this repository's
    history, so that a test may change them."""
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    script = load_script()
    monkeypatch.setattr(script, "RUNS", tmp_path / "docs" / "runs")
    monkeypatch.setattr(
        script, "DOCUMENTS", [tmp_path / "README.md", *sorted((tmp_path / "docs").rglob("*.md"))]
    )
    monkeypatch.setattr(script, "REPO", tmp_path)
    return script, tmp_path


def seeds_record(docs: Path) -> Path:
    return sorted((docs / "docs" / "runs" / "seeds").glob("*.json"))[0]


def test_a_changed_cell_is_named_by_its_table_row_and_column(copy_of_the_docs, capsys):
    script, docs = copy_of_the_docs
    page = docs / "docs" / "results" / "seeds.md"
    text = page.read_text()
    start = text.index("<!-- table: seeds-runs -->")
    row = text.index("\n| transfer", start) + 1
    cells = text[row : text.index("\n", row)].split("|")
    cells[3] = " 0.999 (74/75) "  # the test accuracy of the first run
    page.write_text(text[:row] + "|".join(cells) + text[text.index("\n", row) :])
    assert script.main(["--check"]) == 1
    error = capsys.readouterr().err
    assert "table seeds-runs, row 3, column 3: '0.999 (74/75)' should be" in error
    assert script.main([]) == 0 and script.main(["--check"]) == 0  # regenerating puts it back


def test_a_record_without_provenance_or_from_another_history_is_refused(copy_of_the_docs, capsys):
    script, docs = copy_of_the_docs
    record_file = seeds_record(docs)
    record = json.loads(record_file.read_text())
    record["results"]["provenance"]["git_commit"] = "0" * 40
    record_file.write_text(json.dumps(record))
    assert script.main(["--check"]) == 1
    assert f"commit {'0' * 40} is not in this repository's history" in capsys.readouterr().err
    del record["results"]["provenance"]
    record_file.write_text(json.dumps(record))
    assert script.main(["--check"]) == 1
    assert "no provenance" in capsys.readouterr().err


def test_a_record_whose_numbers_disagree_with_each_other_is_refused(copy_of_the_docs, capsys):
    script, docs = copy_of_the_docs
    record_file = seeds_record(docs)
    record = json.loads(record_file.read_text())
    row = next(r for r in record["test_predictions"] if r["true"] == r["predicted"])
    row["predicted"] = next(name for name in ("pizza", "steak", "sushi") if name != row["true"])
    record_file.write_text(json.dumps(record))
    assert script.main(["--check"]) == 1
    error = capsys.readouterr().err
    assert "the confusion matrix has" in error and "is not" in error


def test_a_record_is_made_only_from_a_finished_run_with_provenance(tmp_path, capsys):
    record_run = load_script("record_run")
    run, record = tmp_path / "run", tmp_path / "r.json"
    run.mkdir()
    assert record_run.main([str(run), str(record)]) == 1
    assert "not a finished run" in capsys.readouterr().err
    (run / "results.json").write_text(json.dumps({"metrics": {"test/acc": 1.0}}))
    assert record_run.main([str(run), str(record)]) == 1
    assert "has no provenance" in capsys.readouterr().err and not record.exists()


def test_a_record_publishes_each_named_folder_as_its_placeholder(tmp_path):
    record_run = load_script("record_run")
    run, record, other = tmp_path / "runs" / "run", tmp_path / "r.json", tmp_path / "seeds"
    run.mkdir(parents=True)
    provenance = {"git_commit": "0" * 40, "argv": ["analyze.py", f"ckpt_path={other}/a/last.ckpt"]}
    (run / "results.json").write_text(
        json.dumps({"ckpt_path": f"{other}/a/last.ckpt", "provenance": provenance})
    )
    assert record_run.main([str(run), str(record), "--root", f"<seeds runs>={other}"]) == 0
    results = json.loads(record.read_text())["results"]
    assert results["ckpt_path"] == "<seeds runs>/a/last.ckpt"
    assert results["provenance"]["argv"][1] == "ckpt_path=<seeds runs>/a/last.ckpt"
