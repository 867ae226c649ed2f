"""Result rows as markdown and CSV."""

import csv

from vitlab.tables import format_cell, markdown_table, write_tables


def test_cells_read_naturally():
    assert format_cell(None) == "-"
    assert format_cell(86_567_656) == "86,567,656"
    assert format_cell(1024) == "1024"  # dims read as in the paper
    assert format_cell(17.563828) == "17.56"
    assert format_cell(0.853333) == "0.8533"
    assert format_cell(23_456.7) == "23,457"
    assert format_cell("vit_b16") == "vit_b16"


def test_markdown_has_a_header_a_rule_and_one_line_per_row():
    text = markdown_table([{"a": 1, "b": None}, {"a": 2.5}], ["a", "b"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | - |", "| 2.5 | - |"]


def test_csv_keeps_raw_values_and_only_the_named_columns(tmp_path):
    csv_path, md_path = write_tables(
        [{"a": 0.123456789, "b": None, "extra": 1}], ["a", "b"], tmp_path / "out" / "t"
    )
    with open(csv_path, newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"a": "0.123456789", "b": ""}]
    assert md_path.read_text().startswith("| a | b |")
