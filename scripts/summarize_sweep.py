"""Summarise a sweep: a table (summary.md / summary.csv) with one row per run, accuracy against
parameters and against GMACs, and loss / accuracy curves per run. Prints the table.

    python scripts/summarize_sweep.py logs/train/multiruns/2024-05-01_12-00-00
    python scripts/summarize_sweep.py --wandb my-team/vitlab --group 2024-05-01_12-00-00 [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitlab.sweep_summary import summarize_sweep, summarize_wandb


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sweep_dir", nargs="?", type=Path, help="a Hydra multirun folder; the summary is written into it"
    )
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead (needs network)"
    )
    parser.add_argument("--group", help="the W&B group: the multirun folder's name")
    parser.add_argument(
        "--out", type=Path, help="where a W&B summary goes (default: logs/sweep_summaries/<group>)"
    )
    args = parser.parse_args()
    if (args.sweep_dir is None) == (args.wandb is None):
        parser.error("pass either a multirun folder or --wandb ENTITY/PROJECT --group GROUP")
    if args.wandb:
        if not args.group:
            parser.error(
                "--wandb needs --group (the multirun folder's name, which train.py uses as the W&B group)"
            )
        out_dir = args.out or Path("logs/sweep_summaries") / args.group
        summarize_wandb(args.wandb, args.group, out_dir)
    else:
        out_dir = args.sweep_dir
        summarize_sweep(out_dir)
    print((out_dir / "summary.md").read_text(), end="")
    print(f"tables and plots: {out_dir}")


if __name__ == "__main__":
    main()
