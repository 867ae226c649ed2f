"""The one timing harness the benchmark scripts share (``scripts/bench_*.py``,
``scripts/profile_variants.py``); the scripts only present its numbers.

Runs are repeated in rotating order (A B C, B C A, C A B, ...) and summarised by the median, so that
every run sees the same, drifting machine state and one slow repeat does not move the result. Peak
memory is measured in a fresh process per step, so that it belongs to that model alone: on CUDA with
the allocator's peak counter, on CPU as the growth of the resident set (Linux). Besides model steps
it times whole training epochs: Lightning's (``train.py`` as configured) against a bare PyTorch loop
doing the same arithmetic, for the framework's overhead.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, TextIO

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig
from torch import nn

from vitlab.cli.command import initialize_configs
from vitlab.data.datamodule import build_datamodule
from vitlab.errors import ConfigError
from vitlab.models import create_model
from vitlab.provenance import Provenance, write_record
from vitlab.tables import markdown_table
from vitlab.train import build_module, resolve_run_preprocessing, train

# A run returns None to have its whole call timed, or the seconds of the part it timed itself (one
# value or several, e.g. the epochs inside a longer fit).
Run = Callable[[], float | Sequence[float] | None]


@dataclass(frozen=True)
class Timing:
    """The timed repeats of one run, in seconds: one tuple per repeat (several values where the run
    timed several parts itself, e.g. the epochs of a fit)."""

    repeats: tuple[tuple[float, ...], ...]

    @property
    def seconds(self) -> tuple[float, ...]:
        return tuple(itertools.chain.from_iterable(self.repeats))

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, items: int) -> float:
        """Items (images) per second of the median repeat."""
        return items / self.median


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work, so that a wall-clock reading includes it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rotations(names: Sequence[str], repeats: int) -> list[list[str]]:
    """The order of the runs in each repeat: shifted by one each time, so that each run takes every
    position equally often (two runs simply alternate)."""
    return [[*names[r % len(names) :], *names[: r % len(names)]] for r in range(repeats)]


def interleaved(
    runs: Mapping[str, Run], repeats: int, warmup: int = 0, device: torch.device | str = "cpu"
) -> dict[str, Timing]:
    """Call every run ``warmup`` times untimed (allocations, kernel selection, worker start-up), then
    ``repeats`` times in rotating order; the whole call is timed, with CUDA synchronised around it,
    unless the run returns the seconds it timed itself."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least one timed repeat.")
    for _ in range(warmup):
        for run in runs.values():
            run()
    seconds: dict[str, list[tuple[float, ...]]] = {name: [] for name in runs}
    for order in rotations(list(runs), repeats):
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            own = runs[name]()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if own is None:
                own = elapsed
            seconds[name].append((own,) if isinstance(own, int | float) else tuple(own))
    return {name: Timing(tuple(values)) for name, values in seconds.items()}


def paired_ratios(run: Timing, base: Timing) -> list[float]:
    """Per repeat, ``run``'s median over ``base``'s: the two ran back to back in that repeat, so a
    machine that slows down for a while (another job, thermal limits) slows both and cancels out,
    where a ratio of overall medians would keep it."""
    return [
        statistics.median(ours) / statistics.median(theirs)
        for ours, theirs in zip(run.repeats, base.repeats, strict=True)
    ]


def paired_differences(run: Timing, base: Timing) -> list[float]:
    """Per repeat, ``run``'s median minus ``base``'s, in seconds: what ``run`` adds, paired as in
    ``paired_ratios``."""
    return [
        statistics.median(ours) - statistics.median(theirs)
        for ours, theirs in zip(run.repeats, base.repeats, strict=True)
    ]


# ----------------------------------------------------------------------------------- model steps


@dataclass(frozen=True)
class StepSpec:
    """One training step (forward, cross-entropy, backward, AdamW) or inference forward pass of a
    freshly initialised model on a random batch. Plain data, so that a fresh process can rebuild it
    to measure its peak memory."""

    model: str  # a vitlab variant (vit_b16, ...) or timm:<name> (timm:vit_base_patch16_224)
    mode: Literal["train", "infer"] = "train"
    batch_size: int = 8
    image_size: int = 224
    num_classes: int = 1000
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast
    device: str = "cpu"
    compile: bool = False


def build_model(spec: StepSpec) -> nn.Module:
    if spec.model.startswith("timm:"):
        import timm

        model = timm.create_model(
            spec.model.removeprefix("timm:"),
            pretrained=False,
            num_classes=spec.num_classes,
            img_size=spec.image_size,
        )
    else:
        model = create_model(spec.model, image_size=spec.image_size, num_classes=spec.num_classes)
    return model.to(spec.device).train(spec.mode == "train")


def build_step(spec: StepSpec) -> Callable[[], None]:
    """The step as a function of no arguments: its model, batch and optimizer built once."""
    model = build_model(spec)
    return make_step(torch.compile(model) if spec.compile else model, spec)


def make_step(model: nn.Module, spec: StepSpec) -> Callable[[], None]:
    """``spec``'s step on a given model (a random batch of ``spec``'s size, a fresh AdamW)."""
    if spec.mode not in ("train", "infer") or spec.precision not in ("fp32", "bf16"):
        raise ValueError(
            f"mode={spec.mode!r}, precision={spec.precision!r}: expected mode train or infer, "
            "precision fp32 or bf16."
        )
    if spec.mode == "train" and spec.num_classes < 1:
        raise ValueError(f"num_classes={spec.num_classes}: a training step needs a head (num_classes >= 1).")
    device = torch.device(spec.device)
    images = torch.randn(spec.batch_size, 3, spec.image_size, spec.image_size, device=device)
    labels = torch.randint(spec.num_classes, (spec.batch_size,), device=device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if spec.precision == "bf16" else nullcontext()
    )

    if spec.mode == "infer":

        @torch.inference_mode()
        def infer() -> None:
            with autocast:
                model(images)

        return infer

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train() -> None:
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train


def time_steps(
    specs: Mapping[str, StepSpec], repeats: int = 5, warmup: int = 2, threads: int | None = None
) -> dict[str, Timing]:
    """Interleaved step times of several models (e.g. ours and timm's), all built before timing."""
    if threads:
        torch.set_num_threads(threads)
    steps = {}
    for name, spec in specs.items():
        torch.manual_seed(0)
        steps[name] = build_step(spec)
    return interleaved(steps, repeats, warmup, device=next(iter(specs.values())).device)


# -------------------------------------------------------------------------------- peak memory


def _resident_peak_bytes() -> int | None:
    """This process's resident-set high-water mark (Linux ``VmHWM``; unlike ``ru_maxrss`` it does not
    carry the parent's peak over into a spawned child)."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


class PeakMemory:
    """Peak bytes since ``start()``: the CUDA allocator's counter, or the growth of the CPU resident
    set over the process's baseline (which is why measuring happens in a fresh process)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.baseline = _resident_peak_bytes() if self.device.type == "cpu" else 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _resident_peak_bytes() if self.device.type == "cpu" else None
        return None if peak is None or self.baseline is None else (peak - self.baseline) / 2**20


def _peak_memory_here(spec: StepSpec, steps: int, threads: int | None) -> float | None:
    if threads:
        torch.set_num_threads(threads)
    if spec.model.startswith("timm:"):
        import timm  # noqa: F401  its import is not the model's memory

    memory = PeakMemory(spec.device)  # baseline: the interpreter, torch and the model library
    step = build_step(spec)
    memory.start()  # on CUDA the weights already allocated count, as they do on CPU
    for _ in range(steps):  # the second training step holds the optimizer state too
        step()
    synchronize(spec.device)
    return memory.peak_mib()


def peak_memory(spec: StepSpec, steps: int = 2, threads: int | None = None) -> float | None:
    """Peak MiB of a step's model, optimizer state and activations, measured in a fresh process
    (``None`` where the device offers no way to read it)."""
    context = multiprocessing.get_context("spawn")  # a fork would share the parent's memory peak
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_peak_memory_here, spec, steps, threads).result()


# ------------------------------------------------------------ a Lightning epoch against a bare loop

# The Lightning runs compared with the bare loop: a label and the logger overrides of each.
LOGGER_RUNS: dict[str, list[str]] = {
    "Lightning, CSV": ["logger=csv"],
    "Lightning, CSV + W&B offline": ["logger=[csv,wandb]", "logger.wandb.offline=true"],
}
BARE = "bare PyTorch loop"
# Appended to a run's overrides to measure Lightning's own cost per epoch, not its ratio: little
# arithmetic on the run's own data (conf/debug/overhead.yaml says why that measures it steadily).
MINIMAL_COMPUTE = ["debug=overhead"]


@dataclass(frozen=True)
class TrainerSettings:
    """What the bare loop takes from a Lightning run, so that both do the same arithmetic."""

    device: torch.device
    precision: str  # Lightning's resolved value: 32-true, bf16-mixed, 16-mixed
    gradient_clip_val: float | None
    gradient_clip_algorithm: str | None
    accumulate_grad_batches: int
    batches_per_epoch: int  # after trainer.limit_train_batches


class EpochTimer(L.Callback):
    """Wall time of each training epoch inside a fit, from its start to the next one's (or to the
    end of training), so that everything Lightning does per epoch counts: its loops, logging and
    callbacks. Validation, which the bare loop does not do, is left out (the checkpoints saved after
    it stay in). Also notes the settings the trainer ran with."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.settings: TrainerSettings | None = None
        self._started: float | None = None
        self._validation_started: float | None = None

    def _now(self, trainer: L.Trainer) -> float:
        synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self._now(trainer)
        if self._started is not None:
            self.seconds.append(now - self._started)
        self._started = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = self._now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self._now(trainer)
        if self._started is not None and self._validation_started is not None:
            self._started += now - self._validation_started  # as if it had not run
        self._validation_started = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self.seconds.append(self._now(trainer) - self._started)
        self.settings = TrainerSettings(
            device=trainer.strategy.root_device,
            precision=str(trainer.precision),
            gradient_clip_val=trainer.gradient_clip_val,
            gradient_clip_algorithm=getattr(trainer.gradient_clip_algorithm, "value", None),  # an enum
            accumulate_grad_batches=trainer.accumulate_grad_batches,
            batches_per_epoch=int(trainer.num_training_batches),
        )


@contextmanager
def lightning_logs_into(stream: TextIO) -> Iterator[None]:
    """Lightning's log lines (seeds, devices, "max_epochs reached") into ``stream``: its handlers
    hold the ``sys.stderr`` of import time, which ``redirect_stderr`` does not reach."""
    handlers = [
        handler
        for name in ("lightning.pytorch", "lightning.fabric")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    previous = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)


def compose_train_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The config ``python train.py <overrides>`` runs, writing into ``output_dir``, without testing."""
    with initialize_configs():
        try:
            return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}", "test=false"])
        except (ConfigCompositionException, OverrideParseException) as error:
            raise ConfigError(f"{' '.join(overrides)}: {error}") from None


def bare_fit(cfg: DictConfig, settings: TrainerSettings) -> tuple[list[float], nn.Module]:
    """Train as ``train(cfg)`` does, in a plain PyTorch loop: the same datamodule, model, optimizer
    and schedule (from the module's own ``configure_optimizers``), precision, clipping and batches
    per epoch, without Lightning, loggers, metrics or callbacks. Returns each epoch's seconds and the trained model."""
    if settings.accumulate_grad_batches != 1:
        raise ValueError(
            f"trainer.accumulate_grad_batches={settings.accumulate_grad_batches}: the bare loop steps "
            "every batch; compare with trainer.accumulate_grad_batches=1."
        )
    mixed = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if settings.precision not in mixed:
        raise ValueError(
            f"trainer.precision={settings.precision}: the bare loop runs {', '.join(mixed)}; pick one."
        )
    L.seed_everything(cfg.seed, workers=True)
    preprocessing = resolve_run_preprocessing(cfg)
    datamodule = build_datamodule(cfg.data, preprocessing)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.num_classes, datamodule.class_names, preprocessing)
    model = module.model.to(settings.device).train()
    if cfg.get("compile"):
        model.compile()
    loader = datamodule.train_dataloader()
    # configure_optimizers reads only the run's number of optimizer steps from its trainer.
    steps = cfg.trainer.max_epochs * settings.batches_per_epoch
    module.trainer = SimpleNamespace(estimated_stepping_batches=steps)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    device, dtype = settings.device, mixed[settings.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    seconds = []
    for _ in range(cfg.trainer.max_epochs):
        synchronize(device)
        start = time.perf_counter()
        for images, targets in itertools.islice(loader, settings.batches_per_epoch):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if datamodule.soft_targets:
                images, targets = datamodule.batch_transform(images, targets)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(images), targets, label_smoothing=module.label_smoothing)
            scaler.scale(loss).backward()
            if settings.gradient_clip_val:
                scaler.unscale_(optimizer)
                if settings.gradient_clip_algorithm == "value":
                    nn.utils.clip_grad_value_(parameters, settings.gradient_clip_val)
                else:
                    nn.utils.clip_grad_norm_(parameters, settings.gradient_clip_val)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds, model


def framework_epochs(
    overrides: Sequence[str],
    out_dir: Path,
    repeats: int = 3,
    warmup_epochs: int = 1,
    logger_runs: Mapping[str, Sequence[str]] = LOGGER_RUNS,
) -> tuple[dict[str, Timing], TrainerSettings]:
    """Epoch seconds of ``train.py <overrides>`` under each of ``logger_runs`` and of the bare loop
    (``BARE``), interleaved. Every run trains from scratch for ``trainer.max_epochs`` epochs; its
    first ``warmup_epochs`` (worker start-up, first allocations) are not kept. The bare loop copies
    device, precision and clipping from the Lightning runs, so these go first in the first repeat.
    Each run's output (config tree, progress bar) goes to ``out_dir/<n>/bench.log``."""
    numbers = itertools.count()
    settings: list[TrainerSettings] = []

    def logged(run: Callable[[Path], list[float]]) -> list[float]:
        run_dir = out_dir / str(next(numbers))
        run_dir.mkdir(parents=True)
        with (
            open(run_dir / "bench.log", "w") as log,
            redirect_stdout(log),
            redirect_stderr(log),
            lightning_logs_into(log),
        ):
            return run(run_dir)[warmup_epochs:]

    def lightning(logger_overrides: Sequence[str]) -> Run:
        def fit(run_dir: Path) -> list[float]:
            timer = EpochTimer()
            train(compose_train_config([*overrides, *logger_overrides], run_dir), callbacks=[timer])
            settings.append(timer.settings)
            return timer.seconds

        return lambda: logged(fit)

    def bare() -> list[float]:
        return logged(lambda run_dir: bare_fit(compose_train_config(overrides, run_dir), settings[0])[0])

    runs = {label: lightning(extra) for label, extra in logger_runs.items()} | {BARE: bare}
    timings = interleaved(runs, repeats)
    if any(s != settings[0] for s in settings):
        raise RuntimeError(f"the Lightning runs used different trainer settings: {settings}")
    return timings, settings[0]


class TableReport:
    """A benchmark's table, printed, and with a record path also written as a run record (with the
    command's provenance and the machine's load before and after: a loaded machine reads slower)."""

    def __init__(self, record: Path | None, argv: Sequence[str] | None) -> None:
        self.record = record
        self.provenance = Provenance(None, sys.argv[1:] if argv is None else argv)
        self.load_before = [round(x, 2) for x in os.getloadavg()]

    def __call__(self, setting: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        print(setting)
        print(markdown_table(rows, columns), end="")
        if self.record is not None:
            load = {"before": self.load_before, "after": [round(x, 2) for x in os.getloadavg()]}
            results = {"setting": setting, "columns": columns, "rows": rows, "load_average": load}
            results["provenance"] = self.provenance.record()
            write_record(self.record, results)
            print(f"recorded {self.record}")
