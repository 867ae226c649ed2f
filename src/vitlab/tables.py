"""Result rows as tables: markdown for people, CSV for programs (variant profiles, sweep summaries)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


def format_cell(value: Any) -> str:
    """``-`` for a missing value, thousands separators from 10,000 (86,567,656 parameters, but 1024
    dims), four significant digits otherwise (0.8533 accuracy, 17.56 GMACs, 1,234 images/s)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Row], columns: Sequence[str], align: str | None = None) -> str:
    """``align``: one letter per column, ``r`` right-aligns it (numbers), anything else leaves it."""
    rules = ["---:" if a == "r" else "---" for a in (align or "l" * len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "".join(f"{rule}|" for rule in rules)]
    lines += ["| " + " | ".join(format_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[Row], columns: Sequence[str], stem: Path) -> tuple[Path, Path]:
    """``<stem>.csv`` (raw values, empty when missing) and ``<stem>.md`` (formatted)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(markdown_table(rows, columns))
    return csv_path, md_path
