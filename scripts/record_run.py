"""Copy a finished run's record into the repository: its results.json (provenance included, no
weights) and its per-image test predictions, as one JSON file that scripts/results_tables.py reads.

    python scripts/record_run.py <run folder> docs/runs/<study>/<name>.json

Records are made only by this script, never typed: a run without provenance (made before it was
recorded) is refused, and one whose code had uncommitted changes is recorded with a warning, as the
tables made from it will say. Machine-specific folders become placeholders (``<runs>``, ``<repo>``,
``<data>``: ``provenance.usual_roots``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitlab.per_image import TEST_PREDICTIONS, read_predictions
from vitlab.provenance import usual_roots, write_record
from vitlab.runs import RESULTS


def read_run(run_dir: Path) -> tuple[dict, list[dict] | None]:
    """The results (with provenance) and per-image test predictions of the run in ``run_dir``;
    ValueError naming what is missing."""
    results_file = run_dir / RESULTS
    if not results_file.is_file():
        raise ValueError(f"{run_dir} holds no {RESULTS}: not a finished run (or a debug run).")
    results = json.loads(results_file.read_text())
    if not results.get("provenance", {}).get("git_commit") and "package_version" not in results.get(
        "provenance", {}
    ):
        raise ValueError(f"{results_file} has no provenance: re-run it with this version of vitlab.")
    predictions = run_dir / TEST_PREDICTIONS
    return results, read_predictions(predictions) if predictions.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("record", type=Path, help="where the record goes: docs/runs/<study>/<name>.json")
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="<NAME>=FOLDER",
        help="one more folder to publish as a placeholder, e.g. '<seeds runs>=logs/studies/seeds'",
    )
    args = parser.parse_args(argv)
    try:
        results, predictions = read_run(args.run_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if results["provenance"].get("git_dirty"):
        print(f"warning: {args.run_dir} ran with uncommitted changes; its record says so", file=sys.stderr)
    roots = usual_roots(args.run_dir, results["provenance"].get("argv", []))
    roots |= dict(root.split("=", 1) for root in args.root)
    write_record(args.record, results, predictions, roots)
    print(f"recorded {args.run_dir} -> {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
