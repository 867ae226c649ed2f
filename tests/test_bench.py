"""The timing harness (order, median, peak memory, the steps it times) and the scripts that present
it. No wall-clock speed is asserted: only what is timed, in which order, and how it is summarised."""

from __future__ import annotations

import json
import re
import runpy
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import TINY_RUN

from vitlab.bench import (
    EpochTimer,
    StepSpec,
    Timing,
    bare_fit,
    build_model,
    compose_train_config,
    interleaved,
    make_step,
    paired_differences,
    paired_ratios,
    rotations,
)
from vitlab.models import available_models
from vitlab.models.cost import count_parameters
from vitlab.train import train

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def script(name: str) -> dict:
    return runpy.run_path(str(SCRIPTS / name), run_name="script_under_test")


def table_rows(printed: str, table: int = 0) -> list[dict[str, str]]:
    """The ``table``-th markdown table in ``printed`` as dicts keyed by its header."""
    tables = re.findall(r"(?:^\|.*\n?)+", printed, flags=re.MULTILINE)
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in tables[table].splitlines()]
    return [dict(zip(cells[0], row, strict=True)) for row in cells[2:]]


def test_each_run_takes_every_position_equally_often_and_two_runs_alternate():
    orders = rotations(["a", "b", "c"], repeats=6)
    for position in range(3):
        assert sorted(order[position] for order in orders) == ["a", "a", "b", "b", "c", "c"]
    assert rotations(["ours", "timm"], repeats=3) == [["ours", "timm"], ["timm", "ours"], ["ours", "timm"]]


def test_interleaved_warms_up_untimed_then_calls_runs_in_rotating_order():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    timings = interleaved(runs, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(timings[name].seconds) for name in runs] == [3, 3]  # warm-up calls are not kept


def test_a_run_that_times_itself_reports_its_own_seconds():
    own = iter([[5.0, 7.0], [6.0]])
    timings = interleaved({"fit": lambda: next(own)}, repeats=2)
    assert timings["fit"].seconds == (5.0, 7.0, 6.0)
    with pytest.raises(ValueError, match=r"repeats=0"):
        interleaved({"fit": lambda: None}, repeats=0)


def test_overheads_are_paired_per_repeat_so_a_slow_spell_of_the_machine_cancels_out():
    # The machine is twice as slow during the first run of repeat 2 and during repeat 3.
    lightning = Timing(((1.1,), (2.2,), (2.2,)))
    bare = Timing(((1.0,), (1.0,), (2.0,)))
    assert paired_ratios(lightning, bare) == pytest.approx([1.1, 2.2, 1.1])  # median 1.1: +10 %
    assert lightning.median / bare.median == pytest.approx(2.2)  # unpaired medians: +120 %
    two_epochs = Timing(((3.0, 1.0), (2.0, 4.0)))  # a repeat's own median first
    assert paired_ratios(two_epochs, Timing(((1.0,), (2.0,)))) == pytest.approx([2.0, 1.5])
    assert two_epochs.seconds == (3.0, 1.0, 2.0, 4.0)


def test_differences_are_paired_per_repeat_like_the_ratios():
    lightning = Timing(((1.06, 1.04), (2.05,), (1.5,)))
    bare = Timing(((1.0,), (2.0,), (1.45,)))
    assert paired_differences(lightning, bare) == pytest.approx([0.05, 0.05, 0.05])


def test_the_epoch_timer_leaves_out_validation_but_counts_the_rest_of_the_epoch(monkeypatch):
    # The sanity check 0-1, epoch 1 from 2, its validation 5-7, epoch 2 from 8.5.
    clock = iter([0.0, 1.0, 2.0, 5.0, 7.0, 8.5])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    timer = EpochTimer()
    timer.on_validation_start(trainer, None)  # the sanity check, before any epoch: not subtracted
    timer.on_validation_end(trainer, None)
    timer.on_train_epoch_start(trainer, None)
    timer.on_validation_start(trainer, None)
    timer.on_validation_end(trainer, None)
    timer.on_train_epoch_start(trainer, None)
    assert timer.seconds == pytest.approx([4.5])  # 6.5 s, of which 2 s validating


def test_the_median_picks_the_middle_repeat_so_one_slow_repeat_does_not_move_it():
    timing = Timing(((0.3,), (0.1,), (9.0,)))
    assert timing.median == 0.3
    assert timing.rate(6) == pytest.approx(20.0)
    assert Timing(((0.1, 0.2), (0.4,), (9.0,))).median == pytest.approx(0.3)


def test_our_variant_and_timms_counterpart_are_the_same_size_so_the_comparison_is_fair():
    for variant, timm_name in script("bench_model.py")["TIMM_NAMES"].items():
        with torch.device("meta"):
            ours, theirs = (
                build_model(StepSpec(name, image_size=32, num_classes=3, device="meta"))
                for name in (variant, f"timm:{timm_name}")
            )
        assert count_parameters(ours) == count_parameters(theirs)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_training_step_updates_the_weights_and_an_inference_step_does_not(precision):
    spec = StepSpec("vit_ti16", "train", batch_size=2, image_size=32, num_classes=3, precision=precision)
    model = build_model(spec)
    before = [p.detach().clone() for p in model.parameters()]
    make_step(model, replace(spec, mode="infer"))()
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    make_step(model, spec)()
    assert not all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"precision='fp16'"):
        make_step(model, replace(spec, precision="fp16"))


def test_profile_lists_every_registered_variant_beside_table_1_without_timing_by_default():
    rows = script("profile_variants.py")["profile_rows"](available_models())
    assert [row["variant"] for row in rows] == available_models()
    b16 = next(row for row in rows if row["variant"] == "vit_b16")
    assert (b16["layers"], b16["D"], b16["MLP"], b16["heads"], b16["patch"]) == (12, 768, 3072, 12, 16)
    assert b16["params"] == 86_567_656
    assert b16["GFLOPs"] == pytest.approx(2 * b16["GMACs"]) == pytest.approx(35.1, rel=0.01)
    assert (b16["paper model"], b16["paper layers/D/MLP/heads"], b16["paper params"]) == (
        "ViT-Base",
        "12/768/3072/12",
        "86M",
    )
    h14 = next(row for row in rows if row["variant"] == "vit_h14")
    assert h14["params"] == pytest.approx(632e6, rel=0.01)
    assert "train img/s" not in h14
    assert "paper model" not in rows[0]  # Ti/16 is DeiT's size, not in Table 1
    hybrid = next(row for row in rows if row["variant"] == "r50_vit_b16")
    assert hybrid["paper model"] == "ViT-Base" and hybrid["paper params"] is None  # plus a ResNet stem


def test_profile_cli_prints_the_markdown_table_and_records_it_with_provenance(capsys, tmp_path):
    profile = script("profile_variants.py")
    record = tmp_path / "runs" / "profile.json"
    profile["main"](["--variants", "vit_b16", "vit_l32", "--skip-measure", "--record", str(record)])
    rows = table_rows(capsys.readouterr().out)
    results = json.loads(record.read_text())["results"]
    assert [row["variant"] for row in results["rows"]] == ["vit_b16", "vit_l32"]
    assert results["rows"][0]["params"] == 86_567_656 and results["columns"] == profile["COLUMNS"]
    assert (
        len(results["provenance"]["git_commit"]) == 40
        and "--skip-measure" in results["provenance"]["overrides"]
    )
    assert list(rows[0]) == profile["COLUMNS"]
    assert [rows[0][c] for c in ("variant", "layers", "D", "patch", "params", "GMACs", "train img/s")] == [
        "vit_b16",
        "12",
        "768",
        "16",
        "86,567,656",
        "17.56",
        "-",
    ]
    assert rows[1]["variant"] == "vit_l32"


@pytest.mark.slow
def test_profile_measures_speed_and_memory_of_variants_under_the_gmacs_limit():
    rows = script("profile_variants.py")["profile_rows"](
        ["vit_ti8", "vit_b16"], image_size=32, num_classes=3, batch_size=2, measure_up_to_gmacs=0.1, steps=1
    )
    ti8, b16 = rows
    assert ti8["train img/s"] > 0 and ti8["infer img/s"] > 0
    assert ti8["train peak MiB"] > 3 * ti8["params"] * 4 / 2**20  # weights, gradients, Adam's moments
    assert b16["GMACs"] > 0.1 and "train img/s" not in b16


def test_bench_model_prints_ours_against_timm_as_a_markdown_table(capsys):
    script("bench_model.py")["main"](
        [
            *("--variants", "vit_ti16", "--precisions", "fp32", "--modes", "infer", "train"),
            *("--batch-size", "1", "--warmup", "0", "--steps", "1", "--no-memory"),
        ]
    )
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert [(row["variant"], row["mode"]) for row in rows] == [("vit_ti16", "infer"), ("vit_ti16", "train")]
    for row in rows:
        ours, timm = float(row["ours img/s"]), float(row["timm img/s"])
        assert float(row["ours/timm"]) == pytest.approx(ours / timm, abs=0.01)  # of unrounded rates
        assert row["ours peak MiB"] == "-"
    assert re.match(r"device=cpu batch=1 compile=False", printed)


# Epochs of the tiny test run limited to two of its three batches (the bare loop must keep to that),
# without the sanity check's validation batches (whose loader draws from the global RNG and so would
# shuffle the training batches differently).
TINY_EPOCHS = [*TINY_RUN, "+trainer.limit_train_batches=2", "+trainer.num_sanity_val_steps=0"]


class KeepModel(L.Callback):
    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.model = module.model


def test_the_bare_loop_trains_to_exactly_the_weights_lightning_reaches(tmp_path):
    """Same data order, model, optimizer groups and schedule, clipping and loss: the two loops do the
    same arithmetic, so the overhead measured is Lightning's alone."""
    overrides = [
        *TINY_EPOCHS,
        f"paths.log_dir={tmp_path / 'logs'}",
        "label_smoothing=0.1",
        "model.drop_path=0.1",
    ]
    timer, kept = EpochTimer(), KeepModel()
    train(compose_train_config(overrides, tmp_path / "lightning"), callbacks=[timer, kept])
    assert timer.settings.gradient_clip_val == 1.0 and timer.settings.gradient_clip_algorithm == "norm"
    seconds, model = bare_fit(compose_train_config(overrides, tmp_path / "bare"), timer.settings)
    assert len(seconds) == len(timer.seconds) == 1
    torch.testing.assert_close(model.state_dict(), kept.model.state_dict())
    with pytest.raises(ValueError, match=r"trainer.precision=bf16-true"):
        bare_fit(
            compose_train_config(overrides, tmp_path / "b2"), replace(timer.settings, precision="bf16-true")
        )


@pytest.mark.slow
def test_framework_bench_times_the_small_data_recipe_against_the_bare_loop(
    tmp_path, capsys, make_image_folder
):
    root = make_image_folder(n_per_class={"train": 6, "test": 2}, size=40)
    script("bench_framework.py")["main"](
        [
            *(f"data.root={root}", "data.num_workers=0", "data.batch_size=9", "model.image_size=32"),
            *("model.depth=1", "callbacks.model_summary=null"),
            *("--repeats", "2", "--cost-repeats", "2", "--cost-epochs", "2"),
            *("--out", str(tmp_path / "bench"), f"paths.log_dir={tmp_path / 'logs'}"),  # overrides may follow
        ]
    )
    printed = capsys.readouterr().out
    assert printed.startswith("experiment=foodvision_small_data trainer.max_epochs=2 data.root=")
    assert f"model.depth=1 callbacks.model_summary=null paths.log_dir={tmp_path / 'logs'};" in printed
    rows = {row["run"]: row for row in table_rows(printed)}
    assert list(rows) == ["bare PyTorch loop", "Lightning, CSV", "Lightning, CSV + W&B offline"]
    assert all(row["epochs timed"] == "2" for row in rows.values())  # 2 repeats x (2 epochs - 1 warm-up)
    assert rows["bare PyTorch loop"]["overhead"] == "-"
    for label in ("Lightning, CSV", "Lightning, CSV + W&B offline"):
        overhead = float(rows[label]["overhead"].removesuffix(" %"))
        low, high = (float(end.removesuffix(" %")) for end in rows[label]["range over repeats"].split(" .. "))
        assert low <= overhead <= high  # the median of 2 repeats' ratios lies between them
    # Lightning's own milliseconds from the minimal-arithmetic runs, and the overhead they make over
    # the first table's bare epoch.
    bare_ms = 1000 * float(rows["bare PyTorch loop"]["epoch s (median)"])
    costs = {row["run"]: row for row in table_rows(printed, table=1)}
    assert list(costs) == list(rows) and costs["bare PyTorch loop"]["Lightning's own ms"] == "-"
    for label in ("Lightning, CSV", "Lightning, CSV + W&B offline"):
        own = float(costs[label]["Lightning's own ms"])
        low, high = (float(end) for end in costs[label]["range over repeats"].split(" .. "))
        assert low <= own <= high
        assert float(costs[label]["overhead"].removesuffix(" %")) == pytest.approx(
            100 * own / bare_ms,
            abs=100 * 0.5 / bare_ms + 0.05 + 1e-9,  # own ms and % are rounded
        )
    assert len(list((tmp_path / "bench").glob("*/*/*/bench.log"))) == 12  # each run's output in its own log
    assert len(list(tmp_path.rglob("offline-run-*"))) == 4  # W&B ran, offline, in the four W&B runs


def test_framework_bench_reports_a_bad_override_in_one_message_before_training(tmp_path):
    with pytest.raises(SystemExit, match=r"model=nope.*Could not find 'model/nope'"):
        script("bench_framework.py")["main"](["model=nope", "--out", str(tmp_path)])
