"""What does Lightning cost per epoch? Times a training epoch of ``train.py <overrides>`` (by default
``experiment=foodvision_small_data``) with the CSV logger, and with CSV + W&B offline, against a bare
PyTorch loop over the same datamodule, model, optimizer and schedule, precision and gradient clipping.

Every run trains from scratch for ``trainer.max_epochs`` epochs (default 2), its first epoch an
untimed warm-up; runs are interleaved and the median epoch reported (``vitlab.bench``). Prints a
markdown table with the overhead over the bare loop: per repeat, the run's median epoch over the bare
loop's in the same repeat; the median of those and their range, which shows the machine's noise:

    python scripts/bench_framework.py data.root=../shared/data/pizza_steak_sushi
    python scripts/bench_framework.py --repeats 5 trainer.max_epochs=3 data.root=...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from vitlab.bench import BARE, LOGGER_RUNS, Timing, framework_epochs, paired_ratios
from vitlab.config import user_errors_as_messages
from vitlab.tables import markdown_table

DEFAULT_OVERRIDES = ["experiment=foodvision_small_data", "trainer.max_epochs=2"]
COLUMNS = ["run", "epoch s (median)", "epochs timed", "overhead", "range over repeats"]


def percent(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f} %"


def row(label: str, timing: Timing, bare: Timing) -> dict[str, object]:
    ratios = paired_ratios(timing, bare)
    return {
        "run": label,
        "epoch s (median)": timing.median,
        "epochs timed": len(timing.seconds),
        "overhead": "-" if label == BARE else percent(statistics.median(ratios)),
        "range over repeats": "-" if label == BARE else f"{percent(min(ratios))} .. {percent(max(ratios))}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after the defaults")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, interleaved")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the runs' folders under DIR/<time> (default: a temporary folder)",
    )
    parser.add_argument("--no-wandb", action="store_true", help="compare with the CSV logger only")
    args = parser.parse_args(argv)

    overrides = [*DEFAULT_OVERRIDES, *args.overrides]
    logger_runs = {
        label: extra for label, extra in LOGGER_RUNS.items() if not args.no_wandb or "W&B" not in label
    }
    with tempfile.TemporaryDirectory() as temporary, user_errors_as_messages():
        out = args.out / time.strftime("%Y-%m-%d_%H-%M-%S") if args.out else Path(temporary)
        timings, settings = framework_epochs(overrides, out, args.repeats, logger_runs=logger_runs)
    rows = [
        row(label, timing, timings[BARE])
        for label, timing in sorted(timings.items(), key=lambda i: i[0] != BARE)
    ]
    clip = (
        f"clip {settings.gradient_clip_val} ({settings.gradient_clip_algorithm})"
        if settings.gradient_clip_val
        else "no clip"
    )
    print(f"{' '.join(overrides)}; {settings.device}, {settings.precision}, {clip}")
    print(markdown_table(rows, COLUMNS), end="")


if __name__ == "__main__":
    main()
