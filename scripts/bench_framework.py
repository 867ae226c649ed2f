"""What does Lightning cost per epoch? Times a training epoch of ``train.py <overrides>`` (by default
``experiment=foodvision_small_data``) with the CSV logger, and with CSV + W&B offline, against a bare
PyTorch loop over the same datamodule, model, optimizer and schedule, precision and gradient clipping.

Every run trains from scratch for ``trainer.max_epochs`` epochs (default 2), its first epoch an
untimed warm-up; runs are interleaved and the median epoch reported (``vitlab.bench``). The first
table gives the overhead over the bare loop: per repeat, the run's median epoch over the bare loop's
in the same repeat; the median of those and their range, which shows the machine's noise.

The second table measures the same thing in a way the noise touches far less: the same runs with
little arithmetic (``debug=overhead`` appended: one block, 2 x 2 patches),
where the difference to the bare loop is what Lightning itself adds per epoch, in milliseconds;
over the first table's bare epoch it is the overhead to expect there:

    python scripts/bench_framework.py data.root=../shared/data/pizza_steak_sushi
    python scripts/bench_framework.py --repeats 5 trainer.max_epochs=5 --cost-repeats 9 data.root=...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vitlab.bench import (
    BARE,
    LOGGER_RUNS,
    MINIMAL_COMPUTE,
    Timing,
    framework_epochs,
    paired_differences,
    paired_ratios,
)
from vitlab.cli.command import user_errors_exit
from vitlab.tables import markdown_table

DEFAULT_OVERRIDES = ["experiment=foodvision_small_data", "trainer.max_epochs=2"]
COLUMNS = ["run", "epoch s (median)", "epochs timed", "overhead", "range over repeats"]
COST_COLUMNS = ["run", "epoch ms (median)", "Lightning's own ms", "range over repeats", "overhead"]


def percent(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f} %"


def milliseconds(seconds: float) -> str:
    return f"{1000 * seconds:+.0f}"


def span(values: Sequence[float], show: Callable[[float], str]) -> str:
    return f"{show(min(values))} .. {show(max(values))}"


def row(label: str, timing: Timing, bare: Timing) -> dict[str, object]:
    ratios = paired_ratios(timing, bare)
    return {
        "run": label,
        "epoch s (median)": timing.median,
        "epochs timed": len(timing.seconds),
        "overhead": "-" if label == BARE else percent(statistics.median(ratios)),
        "range over repeats": "-" if label == BARE else span(ratios, percent),
    }


def cost_row(label: str, timing: Timing, bare: Timing, full_bare_epoch: float) -> dict[str, object]:
    """Lightning's own milliseconds per epoch and, over the full bare epoch, the overhead they make."""
    added = paired_differences(timing, bare)
    own = statistics.median(added)
    return {
        "run": label,
        "epoch ms (median)": f"{1000 * timing.median:.0f}",
        "Lightning's own ms": "-" if label == BARE else milliseconds(own),
        "range over repeats": "-" if label == BARE else span(added, milliseconds),
        "overhead": "-" if label == BARE else percent(1 + own / full_bare_epoch),
    }


def sorted_runs(timings: dict[str, Timing]) -> list[tuple[str, Timing]]:
    return sorted(timings.items(), key=lambda item: item[0] != BARE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after the defaults")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, interleaved")
    parser.add_argument(
        "--cost-repeats", type=int, default=5, help="repeats of the minimal-arithmetic runs (0: skip them)"
    )
    parser.add_argument("--cost-epochs", type=int, default=10, help="timed epochs per minimal-arithmetic run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the runs' folders under DIR/<time> (default: a temporary folder)",
    )
    parser.add_argument("--no-wandb", action="store_true", help="compare with the CSV logger only")
    args = parser.parse_intermixed_args(argv)  # overrides before and after the options

    overrides = [*DEFAULT_OVERRIDES, *args.overrides]
    cost_overrides = [*overrides, *MINIMAL_COMPUTE, f"trainer.max_epochs={args.cost_epochs + 1}"]
    logger_runs = {
        label: extra for label, extra in LOGGER_RUNS.items() if not args.no_wandb or "W&B" not in label
    }
    with tempfile.TemporaryDirectory() as temporary, user_errors_exit():
        out = args.out / time.strftime("%Y-%m-%d_%H-%M-%S") if args.out else Path(temporary)
        timings, settings = framework_epochs(overrides, out / "full", args.repeats, logger_runs=logger_runs)
        costs = (
            framework_epochs(cost_overrides, out / "cost", args.cost_repeats, logger_runs=logger_runs)[0]
            if args.cost_repeats
            else None
        )
    clip = (
        f"clip {settings.gradient_clip_val} ({settings.gradient_clip_algorithm})"
        if settings.gradient_clip_val
        else "no clip"
    )
    print(f"{' '.join(overrides)}; {settings.device}, {settings.precision}, {clip}")
    print(
        markdown_table([row(label, t, timings[BARE]) for label, t in sorted_runs(timings)], COLUMNS), end=""
    )
    if costs is None:
        return
    full_bare_epoch = timings[BARE].median
    print(
        f"\nLightning's own cost per epoch, with {' '.join(MINIMAL_COMPUTE)}; overhead: over the bare epoch above"
    )
    rows = [cost_row(label, t, costs[BARE], full_bare_epoch) for label, t in sorted_runs(costs)]
    print(markdown_table(rows, COST_COLUMNS), end="")


if __name__ == "__main__":
    main()
