"""Regenerate every results table in docs/ and the numbers README.md quotes, from the run records in
docs/runs/ (made by scripts/record_run.py, never typed).

    python scripts/results_tables.py           # rewrite what sits between the markers
    python scripts/results_tables.py --check   # exit 1 naming the table and cell that differ

A table sits between ``<!-- table: NAME -->`` and ``<!-- /table -->``; a quoted number between
``<!-- value: NAME -->`` and ``<!-- /value -->``. ``--check`` also fails when a record lacks
provenance or names a commit that is not in this repository's history.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitlab import tables
from vitlab.stats import bootstrap_interval, paired_bootstrap_interval

REPO = Path(__file__).resolve().parents[1]
HISTORY = REPO  # the git repository whose history every record's commit must be in
RUNS = REPO / "docs" / "runs"
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
TABLE = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
VALUE = re.compile(r"(<!-- value: (?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /value -->)", re.S)


@dataclass(frozen=True)
class Record:
    """One run record: ``docs/runs/<study>/<name>.json``."""

    path: Path
    results: dict[str, Any]
    test_predictions: list[dict[str, Any]] | None
    legacy: bool = False

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def provenance(self) -> dict[str, Any]:
        return self.results.get("provenance") or {}

    @property
    def correct(self) -> torch.Tensor:
        """Per test image (in file order): whether the prediction was right."""
        rows = sorted(self.test_predictions or [], key=lambda row: row["image"])
        return torch.tensor([row["true"] == row["predicted"] for row in rows], dtype=torch.float64)

    @property
    def commit(self) -> str:
        """Short commit, and a warning where the code had uncommitted changes."""
        commit = self.provenance.get("git_commit") or self.provenance.get("package_version", "?")
        return commit[:7] + (" (uncommitted changes)" if self.provenance.get("git_dirty") else "")


def load_records(study: str) -> list[Record]:
    folder = RUNS / study
    records = []
    for path in sorted(folder.glob("*.json")):
        stored = json.loads(path.read_text())
        records.append(
            Record(path, stored["results"], stored.get("test_predictions"), bool(stored.get("legacy")))
        )
    return records


def problems_with(record: Record) -> list[str]:
    """Why a record cannot back a published number: no provenance, or a commit not in history."""
    where = record.path.relative_to(REPO)
    commit = record.provenance.get("git_commit")
    if commit is None:
        return [f"{where}: no provenance (git_commit): re-make it with scripts/record_run.py"]
    known = subprocess.run(
        ["git", "-C", str(HISTORY), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    found = [] if known.returncode == 0 else [f"{where}: commit {commit} is not in this repository's history"]
    return found + disagreements(record)


def disagreements(record: Record) -> list[str]:
    """A record's numbers checked against each other: the logged test accuracy, the confusion matrix
    it came from, and the per-image predictions must all count the same right answers."""
    if not record.test_predictions:
        return []
    where = record.path.relative_to(REPO)
    right = int(record.correct.sum())
    images = len(record.correct)
    found = []
    confusion = record.results.get("test_confusion_matrix")
    if confusion is not None:
        diagonal = sum(confusion[i][i] for i in range(len(confusion)))
        if diagonal != right or sum(map(sum, confusion)) != images:
            found.append(
                f"{where}: the confusion matrix has {diagonal} right of {sum(map(sum, confusion))}, "
                f"the per-image predictions {right} of {images}"
            )
    logged = record.results.get("metrics", {}).get("test/acc")
    if logged is not None and abs(logged - right / images) > 1e-6:
        found.append(f"{where}: test/acc {logged:.4f} is not {right}/{images} right per image")
    return found


def named(records: list[Record], name: str, study: str) -> Record:
    """The record ``docs/runs/<study>/<name>.json``; ValueError saying which script makes it."""
    for record in records:
        if record.name == name:
            return record
    raise ValueError(f"no record docs/runs/{study}/{name}.json: {STUDIES[study]} makes it")


# --- formatting ------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: Iterable[list[Any]], align: str | None = None) -> str:
    return tables.markdown_table([dict(zip(header, row, strict=True)) for row in rows], header, align)


def interval(low: float, high: float) -> str:
    return f"{low:.3f} to {high:.3f}"


def accuracy(record: Record) -> str:
    correct = record.correct
    return f"{correct.mean():.3f} ({int(correct.sum())}/{len(correct)})"


def minutes(record: Record) -> str:
    return f"{record.provenance['wall_time_s'] / 60:.1f}"


# --- the seeds study -------------------------------------------------------------------------------

SEEDS_COMMAND = "scripts/study_seeds.sh"
PENDING = "(pending: no record yet; `{command}` makes it)"  # what a quoted number says before its run
RECIPES = {  # record name prefix -> what the tables call it
    "transfer_frozen": "transfer, frozen backbone (ViT-Ti/16, 224 px)",
    "transfer_finetuned": "transfer, fine-tuned (ViT-Ti/16, 224 px)",
    "small_data_v2": "from scratch, small-data v2 (ViT-Ti/8 depth 6, 80 px)",
}


def recipes(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {}
    for prefix in RECIPES:
        found = [r for r in records if r.name.startswith(prefix + "_seed")]
        if found:
            grouped[prefix] = found
    return grouped


def seed_mean_correct(runs: list[Record]) -> torch.Tensor:
    """Per test image, the share of seeds that got it right: what the recipe's interval resamples."""
    return torch.stack([run.correct for run in runs]).mean(0)


def seeds_runs_table(records: list[Record], only: str | None = None) -> str:
    """Every run of the seeds study (``only``: of one recipe)."""
    rows = []
    for prefix, runs in recipes(records).items():
        if only is not None and prefix != only:
            continue
        for run in runs:
            metrics = run.results["metrics"]
            rows.append(
                [
                    RECIPES[prefix],
                    run.provenance["seed"],
                    accuracy(run),
                    interval(*bootstrap_interval(run.correct)),
                    f"{metrics['test/f1']:.3f}",
                    f"`{run.results['test_confusion_matrix']}`",
                    minutes(run),
                    f"`{run.commit}`",
                ]
            )
    header = ["recipe", "seed", "test acc", "95 % interval", "macro F1", "confusion", "minutes", "commit"]
    return markdown_table(header, rows, "lrrrrlrl")


def seeds_summary_table(records: list[Record]) -> str:
    rows = []
    for prefix, runs in recipes(records).items():
        accuracies = [float(run.correct.mean()) for run in runs]
        rows.append(
            [
                RECIPES[prefix],
                len(runs),
                f"**{statistics.mean(accuracies):.3f}**",
                f"{min(accuracies):.3f} to {max(accuracies):.3f}",
                interval(*bootstrap_interval(seed_mean_correct(runs))),
            ]
        )
    header = ["recipe", "seeds", "mean test acc", "seeds' range", "95 % interval (images resampled)"]
    return markdown_table(header, rows, "lrrrr")


def seeds_differences_table(records: list[Record]) -> str:
    grouped = recipes(records)
    rows = []
    names = list(grouped)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            mean_a, mean_b = seed_mean_correct(grouped[a]), seed_mean_correct(grouped[b])
            low, high = paired_bootstrap_interval(mean_a, mean_b)
            verdict = "noise: the interval holds 0" if low <= 0 <= high else "a real difference"
            rows.append(
                [
                    RECIPES[a],
                    RECIPES[b],
                    f"{float(mean_a.mean() - mean_b.mean()):+.3f}",
                    interval(low, high),
                    verdict,
                ]
            )
    header = ["recipe a", "recipe b", "a - b", "95 % interval (paired)", "verdict"]
    return markdown_table(header, rows, "llrrl")


def errors_table(
    records: list[Record], prefixes: tuple[str, ...] = ("transfer_frozen", "transfer_finetuned")
) -> str:
    """Every test image some run of the recipes got wrong: its class, and per recipe how many seeds
    missed it and what they said."""
    grouped = {prefix: runs for prefix, runs in recipes(records).items() if prefix in prefixes}
    missed: dict[str, dict[str, list[str]]] = {}
    truth: dict[str, str] = {}
    for prefix, runs in grouped.items():
        for run in runs:
            for row in run.test_predictions or []:
                truth[row["image"]] = row["true"]
                if row["predicted"] != row["true"]:
                    missed.setdefault(row["image"], {}).setdefault(prefix, []).append(row["predicted"])
    rows = []
    for image in sorted(missed):
        cells = []
        for prefix, runs in grouped.items():
            said = missed[image].get(prefix, [])
            cells.append(
                f"{len(said)} of {len(runs)}" + (f" ({', '.join(sorted(set(said)))})" if said else "")
            )
        rows.append([f"`{image}`", truth[image], *cells])
    header = ["image", "true class", *[f"{RECIPES[p].split(' (')[0]}: seeds wrong" for p in grouped]]
    return markdown_table(header, rows, "ll" + "r" * len(grouped))


def recipe_mean(prefix: str) -> Callable[[], str]:
    def value() -> str:
        runs = recipes(load_records("seeds")).get(prefix)
        if not runs:
            return PENDING.format(command=SEEDS_COMMAND)
        seeds = f"{len(runs)} seed" + ("s" if len(runs) > 1 else "")
        return f"{statistics.mean(float(r.correct.mean()) for r in runs):.3f} (mean of {seeds})"

    return value


# --- the Table 1 sweep, shrunk -------------------------------------------------------------------

TABLE1_ORDER = ["vit_ti16", "vit_s16", "vit_b16", "vit_b32", "vit_l16", "vit_l32", "vit_h14"]


def table1_mini_table(records: list[Record]) -> str:
    rows = []
    for record in sorted(records, key=lambda r: TABLE1_ORDER.index(r.name) if r.name in TABLE1_ORDER else 99):
        results, metrics = record.results, record.results["metrics"]
        rows.append(
            [
                record.name,
                results["patch_size"],
                f"{results['params']:,}",
                f"{results['gmacs']:.2f}",
                f"{metrics['val/acc_best']:.3f}",
                f"{metrics['val/acc']:.3f}",
                f"{accuracy(record)} ({results['tested_checkpoint']})",
                interval(*bootstrap_interval(record.correct)),
                f"{metrics['train/images_per_sec']:.1f}",
                minutes(record),
                f"`{record.commit}`",
            ]
        )
    header = [
        "model",
        "patch",
        "params",
        "GMACs",
        "best val acc",
        "final val acc",
        "test acc (checkpoint)",
        "95 % interval",
        "train img/s",
        "minutes",
        "commit",
    ]
    return markdown_table(header, rows, "lrrrrrrrrrl")


def preprocessing_table(records: list[Record]) -> str:
    """The frozen recipe with the weights' statistics and with ImageNet's, and their paired difference."""
    ours = named(records, "weights_statistics", "preprocessing")
    imagenet = named(records, "imagenet_statistics", "preprocessing")
    rows = [
        [label, accuracy(r), interval(*bootstrap_interval(r.correct)), f"`{r.commit}`"]
        for label, r in (("the weights' own (mean = std = 0.5)", ours), ("ImageNet's", imagenet))
    ]
    difference = float(ours.correct.mean() - imagenet.correct.mean())
    paired = interval(*paired_bootstrap_interval(ours.correct, imagenet.correct))
    rows.append(["difference (paired bootstrap)", f"{difference:+.3f}", paired, ""])
    return markdown_table(["statistics", "test acc", "95 % interval", "commit"], rows, "lrrl")


def record_accuracy(study: str, name: str) -> Callable[[], str]:
    def value() -> str:
        found = [r for r in load_records(study) if r.name == name]
        if not found:
            return PENDING.format(command=STUDIES[study])
        return f"{float(found[0].correct.mean()):.3f}"

    return value


# --- paper fidelity: the variant profile, Figure 7, few-shot ---------------------------------------

PAPER_FIDELITY_COMMAND = "VITLAB_DATA_DIR=../shared/data scripts/study_paper_fidelity.sh"
FIGURE7_MODELS = {  # record -> what the table calls its model
    "figure7_pretrained": "pretrained ViT-Ti/16",
    "figure7_random": "ViT-Ti/16, random initialisation",
    "figure7_small_data_v2": "small-data v2 seed 3 (ViT-Ti/8 depth 6, 80 px)",
}


def recorded_table(study: str, name: str) -> Callable[[list[Record]], str]:
    """A benchmark's own table as its record holds it (``vitlab.bench.TableReport``), with its setting,
    machine, load and commit."""

    def maker(records: list[Record]) -> str:
        record = named(records, name, study)
        results, machine = record.results, record.provenance["machine"]
        load = results["load_average"]
        return tables.markdown_table(results["rows"], results["columns"]) + (
            f"\n{results['setting']}; {machine['cpu']} ({machine['cpu_cores']} cores), load average "
            f"{load['before'][0]} before, {load['after'][0]} after; commit `{record.commit}`.\n"
        )

    return maker


def attention_distance_table(records: list[Record]) -> str:
    """Per layer, the smallest, mean and largest of the heads' mean attention distances (pixels)."""
    found = {name: named(records, name, "paper_fidelity") for name in FIGURE7_MODELS}
    distances = {name: r.results["mean_attention_distance"] for name, r in found.items()}
    depth = max(len(layers) for layers in distances.values())
    rows = []
    for layer in range(depth):
        row = [layer + 1]
        for name in FIGURE7_MODELS:
            heads = distances[name][layer] if layer < len(distances[name]) else None
            row.append(
                "-"
                if heads is None
                else f"{min(heads):.0f} / {statistics.mean(heads):.0f} / {max(heads):.0f}"
            )
        rows.append(row)
    images = {r.results["num_images"] for r in found.values()}
    commits = sorted({f"`{r.commit}`" for r in found.values()})
    return markdown_table(["layer", *FIGURE7_MODELS.values()], rows, "r" + "r" * len(FIGURE7_MODELS)) + (
        f"\nPixels, smallest / mean / largest over the heads; {', '.join(map(str, images))} images; "
        f"commit {', '.join(commits)}.\n"
    )


def fewshot_table(records: list[Record]) -> str:
    """Few-shot linear accuracy per images per class: mean (min - max) over the draws."""
    pretrained = named(records, "fewshot_pretrained", "paper_fidelity")
    random = named(records, "fewshot_random", "paper_fidelity")
    rows = []
    for shots in pretrained.results["summary"]:
        cells = [shots]
        for record in (pretrained, random):
            cell = record.results["summary"][shots]
            cells.append(f"{cell['mean']:.3f} ({cell['min']:.3f} - {cell['max']:.3f})")
        rows.append(cells)
    commits = sorted({f"`{r.commit}`" for r in (pretrained, random)})
    header = ["images per class", "pretrained ViT-Ti/16", "ViT-Ti/16, random initialisation"]
    return markdown_table(header, rows, "rrr") + f"\ncommit {', '.join(commits)}.\n"


# --- deployment -----------------------------------------------------------------------------------

DEPLOY_COLUMNS = ["model", "runtime", "test acc", "size (MiB)", "batch 1 (s)", "preprocessing (s)"]


def deploy_bench_table(records: list[Record]) -> str:
    """The CPU deployment benchmark (scripts/bench_deploy.py --record), with the machine's load."""
    record = named(records, "bench_cpu", "deploy")
    results = record.results
    load = results["load_average"]
    return tables.markdown_table([*results["rows"], *results["course"]], DEPLOY_COLUMNS, "llrrrr") + (
        f"\n{results['threads']} threads on {record.provenance['machine']['cpu']} "
        f"({record.provenance['machine']['cpu_cores']} cores); load average {load['before'][0]} before, "
        f"{load['after'][0]} after; commit `{record.commit}`.\n"
    )


# --- legacy records (transcribed from tables made before records existed) --------------------------


def gpu_check_table(records: list[Record]) -> str:
    record = named(records, "gpu_check_h100", "legacy")
    rows = [[c["check"], c["status"], c["result"], c["time"]] for c in record.results["checks"]]
    machine = record.provenance["machine"]["gpu"]
    return markdown_table(["check", "status", "result", "time"], rows, "lllr") + (
        f"\n**Legacy record**: {machine}, commit `{record.commit}`, {record.provenance['started_at']}.\n"
    )


# --- registry -------------------------------------------------------------------------------------

STUDIES: dict[str, str] = {  # study -> the command that re-makes its records
    "seeds": SEEDS_COMMAND,
    "legacy": "scripts/gpu_check.sh on a GPU (then record its table: these rows go)",
    "table1_mini": "scripts/study_table1_mini.sh",
    "deploy": "python scripts/bench_deploy.py --ckpt <transfer_frozen_seed0>/last.ckpt --ckpt "
    "<small_data_v2_seed1>/last.ckpt --record docs/runs/deploy/bench_cpu.json",
    "preprocessing": "scripts/study_preprocessing.sh",
    "paper_fidelity": PAPER_FIDELITY_COMMAND,
    "data_pipeline": "VITLAB_DATA_DIR=../shared/data scripts/study_data_pipeline.sh",
}
TABLES: dict[str, tuple[str, Callable[[list[Record]], str]]] = {  # table -> (its study, its maker)
    "seeds-runs": ("seeds", seeds_runs_table),
    "seeds-summary": ("seeds", seeds_summary_table),
    "seeds-differences": ("seeds", seeds_differences_table),
    "transfer-errors": ("seeds", errors_table),
    "small-data-v2-runs": ("seeds", lambda records: seeds_runs_table(records, only="small_data_v2")),
    "gpu-check": ("legacy", gpu_check_table),
    "table1-mini": ("table1_mini", table1_mini_table),
    "deploy-bench": ("deploy", deploy_bench_table),
    "preprocessing": ("preprocessing", preprocessing_table),
    "variant-profile": ("paper_fidelity", recorded_table("paper_fidelity", "variant_profile")),
    "data-rates": ("data_pipeline", recorded_table("data_pipeline", "rates")),
    "data-per-worker": ("data_pipeline", recorded_table("data_pipeline", "per_worker")),
    "attention-distance": ("paper_fidelity", attention_distance_table),
    "fewshot": ("paper_fidelity", fewshot_table),
}


def make_table(name: str) -> str:
    """A table and the line under it that says where its numbers come from and how to re-make them."""
    study, maker = TABLES[name]
    records = load_records(study)
    dirty = sum(bool(r.provenance.get("git_dirty")) for r in records)
    note = f"; {dirty} of them ran with uncommitted changes" if dirty else ""
    return (
        maker(records)
        + f"\n<sub>Generated by scripts/results_tables.py from {len(records)} records in "
        + f"docs/runs/{study}/{note}; re-made by `{STUDIES[study]}`.</sub>\n"
    )


VALUES: dict[str, Callable[[], str]] = {
    "transfer-frozen-mean": recipe_mean("transfer_frozen"),
    "transfer-finetuned-mean": recipe_mean("transfer_finetuned"),
    "small-data-v2-mean": recipe_mean("small_data_v2"),
    "weights-statistics-acc": record_accuracy("preprocessing", "weights_statistics"),
    "imagenet-statistics-acc": record_accuracy("preprocessing", "imagenet_statistics"),
}


def regenerate(text: str, problems: list[str]) -> str:
    """``text`` with every table and value between markers made again from the records; a marker
    that cannot be made (its records are missing) is left as it is and named in ``problems``."""

    def remake(match: re.Match[str], make: Callable[[str], str]) -> str:
        try:
            return match[1] + make(match["name"]) + match[4]
        except (ValueError, KeyError) as error:
            problems.append(f"{match['name']}: {error}")
            return match[0]

    text = TABLE.sub(lambda m: remake(m, make_table), text)
    return VALUE.sub(lambda m: remake(m, lambda name: VALUES[name]()), text)


def first_difference(name: str, old: str, new: str) -> str:
    """The first cell (row and column) where a table's text differs."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for row, (was, now) in enumerate(zip(old_lines, new_lines, strict=False), start=1):
        if was != now:
            for column, (a, b) in enumerate(zip(was.split("|"), now.split("|"), strict=False)):
                if a.strip() != b.strip():
                    return f"table {name}, row {row}, column {column}: {a.strip()!r} should be {b.strip()!r}"
            return f"table {name}, row {row}: {was!r} should be {now!r}"
    return f"table {name}: {len(old_lines)} lines, should be {len(new_lines)}"


def check(document: Path) -> list[str]:
    text = document.read_text()
    found = []
    makers = ((TABLE, TABLES, make_table, "table"), (VALUE, VALUES, lambda n: VALUES[n](), "value"))
    for pattern, known, make, kind in makers:
        for match in pattern.finditer(text):
            name, body = match["name"], match["body"]
            if name not in known:
                found.append(f"{document.relative_to(REPO)}: unknown {kind} {name!r}")
                continue
            made = make(name)
            if made != body:
                where = (
                    first_difference(name, body, made)
                    if kind == "table"
                    else f"value {name}: {body!r} should be {made!r}"
                )
                found.append(f"{document.relative_to(REPO)}: {where}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything differs")
    args = parser.parse_args(argv)
    problems = [
        p
        for study in sorted(p.name for p in RUNS.iterdir() if p.is_dir())
        for r in load_records(study)
        for p in problems_with(r)
    ]
    for document in DOCUMENTS:
        where = document.relative_to(REPO)
        if args.check:
            try:
                problems += check(document)
            except (ValueError, KeyError) as error:
                problems.append(f"{where}: {error}")
            continue
        text, missing = document.read_text(), []
        made = regenerate(text, missing)
        problems += [f"{where}: {problem}" for problem in missing]
        if made != text:
            document.write_text(made)
            print(f"regenerated {where}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
