"""What the Hydra entry points share (the only code that reads ``cfg``): where the configs live, the
checks a config must pass before any data is prepared, and user errors as one-line messages."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.errors import CompactHydraException, InstantiationException
from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import get_object, instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)

from vitlab.errors import ConfigError, UserError
from vitlab.models.variants import ModelConfig

log = logging.getLogger(__name__)
_STARTED = time.time()  # files older than this were not written by this command


def config_path() -> str:
    """Where Hydra finds the config tree: the repository's ``conf/`` in a source checkout, else the
    copy an installed wheel carries as the ``vitlab.conf`` package."""
    checkout = Path(__file__).resolve().parents[2] / "conf"
    return str(checkout) if (checkout / "train.yaml").is_file() else "pkg://vitlab.conf"


CONFIG_PATH = config_path()


@contextmanager
def initialize_configs() -> Iterator[None]:
    """Hydra's compose API over the config tree the entry points read (checkout or installed wheel)."""
    from hydra import initialize_config_dir, initialize_config_module

    if CONFIG_PATH.startswith("pkg://"):
        with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
            yield
    else:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            yield


# Known-harmless output that is not the user's business, silenced by name (never a blanket filter).
class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def _quiet_known_noise() -> None:
    # torch.utils.cpp_extension logs "No CUDA runtime is found, using CUDA_HOME=..." when imported on
    # a machine without CUDA; we build no C++/CUDA extensions, so it says nothing about our runs.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # Lightning advertises its cloud products (litlogger, litmodels) at every fit.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropMessages("💡 Tip"))
    # Optuna's RDB storage logs alembic's schema set-up ("Context impl SQLiteImpl", "Will assume
    # non-transactional DDL") whenever a study is created or resumed in a database.
    logging.getLogger("alembic").setLevel(logging.WARNING)


_quiet_known_noise()


def console() -> Any:
    """A rich console that cuts nothing at 80 columns when the output is a file or a pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 10_000)


# ----------------------------------------------------------------------------------------------
# User errors as one-line messages


def _written_by_this_command(folder: Path) -> bool:
    """Whether every file under ``folder`` is new (so nothing of an earlier run would be lost)."""
    return all(path.stat().st_mtime >= _STARTED - 1 for path in folder.rglob("*"))


def remove_new_run_folder(folder: Path | str) -> None:
    """Remove the run folder of a command that failed before its first training step, if this
    command wrote everything in it: it must not pass for an interrupted run (``ckpt_path=last``),
    and a continued run's folder keeps its earlier files."""
    folder = Path(folder)
    if rank_zero_only.rank == 0 and folder.is_dir() and _written_by_this_command(folder):
        shutil.rmtree(folder, ignore_errors=True)
        log.info("nothing was trained: removed the run folder %s", folder)


@contextmanager
def user_errors_as_messages(output_dir: Path | str | None = None) -> Iterator[None]:
    """For the command-line entry points: a typo or a wrong path deserves one line, not a traceback,
    and no run folder that a later command could take for an interrupted run."""
    try:
        yield
    except (UserError, FileNotFoundError, FileExistsError, ConnectionError) as error:
        if output_dir is not None:
            remove_new_run_folder(output_dir)
        raise SystemExit(f"error: {error}") from None


_FULL_ERROR, _OURS = "HYDRA_FULL_ERROR", "VITLAB_SET_HYDRA_FULL_ERROR"


class HydraErrorReporting(HydraCallback):
    """Hands error reporting back to Hydra once the config is composed (see ``run_command``)."""

    def _restore(self) -> None:
        if os.environ.pop(_OURS, None):
            os.environ.pop(_FULL_ERROR, None)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._restore()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._restore()


def run_command(hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function as a command, answering a misspelled key on the command line
    with the closest valid names. Hydra prints composition errors itself and exits, so until the
    config is composed (``HydraErrorReporting``) it is asked to raise them to us instead."""
    if _FULL_ERROR not in os.environ:
        os.environ[_FULL_ERROR] = os.environ[_OURS] = "1"
    try:
        hydra_main()
    except CompactHydraException as error:
        if not os.environ.pop(_OURS, None):  # the user asked for Hydra's full errors
            raise
        os.environ.pop(_FULL_ERROR, None)
        raise SystemExit(f"error: {_composition_message(error)}") from None
    finally:
        if os.environ.pop(_OURS, None):
            os.environ.pop(_FULL_ERROR, None)


def _composition_message(error: CompactHydraException) -> str:
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(
        cause.parent_node, DictConfig
    ):
        return unknown_option_message(cause.full_key, cause.parent_node)
    # Hydra's own message, less the search path it appends to "Could not find" (not the user's concern)
    lines = [str(error).split("\nConfig search path:")[0].rstrip()]
    lines += [str(cause)] if isinstance(cause, OmegaConfBaseException) else []
    return "\n".join(lines)


def unknown_option_message(option: str, valid: Iterable[str], owner: str = "") -> str:
    """``trainer.max_epoch is not an option: did you mean trainer.max_epochs?`` (``valid``: the
    keys beside ``option``'s last part)."""
    parent, _, key = option.rpartition(".")
    candidates = [str(v) for v in valid if not str(v).startswith("_")]
    close = [f"{parent}.{c}" if parent else c for c in difflib.get_close_matches(key, candidates, 3, 0.75)]
    hint = f": did you mean {' or '.join(close)}?" if close else "."
    owner = f" of {owner}" if owner else ""
    return (
        f"{option} is not an option{owner}{hint} "
        "Check its spelling; `python train.py --cfg job` prints every option."
    )


# ----------------------------------------------------------------------------------------------
# Checks before any data is prepared


def accepted_keys(target: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``target`` accepts (for a class, along the ``**kwargs`` its constructor
    passes up to its bases); None when it accepts any."""
    keys: set[str] = set()
    for function in [c.__init__ for c in target.__mro__] if inspect.isclass(target) else [target]:
        parameters = inspect.signature(function).parameters.values()
        keys |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return keys - {"self"}
    return None


def check_keys(cfg: DictConfig) -> None:
    """Every key of the trainer, data, model, optimizer and scheduler configs is an argument of what
    it builds: a misspelled key added with ``+`` fails here, not after the data is prepared."""
    for group in ("trainer", "data", "model", "optimizer", "scheduler"):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        if "_target_" in node:
            target = get_object(node._target_)
            valid, owner = accepted_keys(target), node._target_
        else:
            valid, owner = ModelConfig.keys() if group == "model" else None, ""
        if valid is None:
            continue
        for key in node:
            if not str(key).startswith("_") and key not in valid:
                raise ConfigError(unknown_option_message(f"{group}.{key}", valid, owner))


def _constructed(group: str, node: DictConfig, build: Callable[[], Any]) -> None:
    """Run ``build``, turning its ValueError into a message naming the config options."""
    try:
        build()
    except (ValueError, InstantiationException) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, InterpolationResolutionError):  # e.g. ${oc.env:VITLAB_MPP_CKPT} unset
            raise ConfigError(
                f"{cause.full_key}: {cause.msg.splitlines()[0]}; set it, or give {cause.full_key}=... "
                "on the command line"
            ) from None
        if not isinstance(cause, ValueError):
            raise
        raise _naming_options(group, node, cause) from None


def _naming_options(group: str, node: DictConfig, error: Exception) -> ConfigError:
    """A constructor's ValueError (``image_size=225 is not divisible by ...``) in config words:
    its arguments become options (``model.image_size=225 ...``), or the options whose values it
    quotes are named in front."""
    message = str(error)
    keys = [str(k) for k in node if not str(k).startswith("_")]
    renamed = re.sub(rf"(?<![\w.])({'|'.join(map(re.escape, keys))})=", rf"{group}.\1=", message)
    if renamed != message:
        return ConfigError(renamed)
    quoted = [
        f"{group}.{key}={node[key]}"
        for key in keys
        if node[key] is not None and re.search(rf"(?<![\w.-]){re.escape(str(node[key]))}(?![\w])", message)
    ]
    return ConfigError(f"{', '.join(quoted) or group}: {message}")


def validate(cfg: DictConfig) -> None:
    """Fail at once, before any data is prepared: unknown keys, then each group's own constructor
    checks (the model built on the meta device, the datamodule and optimizer constructed), then the
    checks that span groups or belong to no group's constructor."""
    check_keys(cfg)
    model = cfg.model

    def meta_model() -> None:  # every construction-time check of the model, no weights allocated
        with torch.device("meta"):
            ModelConfig.from_config(model).create(num_classes=2, load_weights=False)

    _constructed("model", model, meta_model)
    # A datamodule's constructor checks its options; files are only looked at in prepare_data.
    _constructed("data", cfg.data, lambda: instantiate(cfg.data))
    if cfg.get("optimizer"):
        parameter = torch.nn.Parameter(torch.zeros(1))
        _constructed("optimizer", cfg.optimizer, lambda: instantiate(cfg.optimizer)([parameter]))
    smoothing = cfg.get("label_smoothing", 0.0)
    _check(_number(smoothing, 0) and smoothing < 1, "label_smoothing", smoothing, "a value in [0, 1)")
    _check(
        cfg.get("test_ckpt", "best") in ("best", "last"), "test_ckpt", cfg.get("test_ckpt"), "best or last"
    )
    if "trainer" in cfg:  # the Trainer is built after the data is prepared, so its checks come too late
        trainer = cfg.trainer
        epochs = trainer.get("max_epochs", 1)
        _check(epochs is None or _number(epochs, -1), "trainer.max_epochs", epochs, ">= 1 (or -1: no limit)")
        accumulate = trainer.get("accumulate_grad_batches", 1)
        _check(_number(accumulate, 1), "trainer.accumulate_grad_batches", accumulate, "an integer >= 1")
        clip = trainer.get("gradient_clip_val")
        _check(clip is None or _number(clip, 0), "trainer.gradient_clip_val", clip, ">= 0 or null")
    if cfg.get("global_batch_size") is not None:
        _check_global_batch(cfg)
    task = cfg.get("task") or {}
    if task.get("name") == "mpp":
        for key in ("corrupt_fraction", "mask_probability", "random_probability"):
            _check(0 <= task[key] <= 1, f"task.{key}", task[key], "a value in [0, 1]")
        _check(
            task.mask_probability + task.random_probability <= 1,
            "task.random_probability",
            task.random_probability,
            f"at most 1 - task.mask_probability = {1 - task.mask_probability}",
        )
        _check(1 <= task.colour_bits <= 8, "task.colour_bits", task.colour_bits, "1..8 bits per channel")


def _number(value: Any, minimum: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= minimum


def _check(condition: bool, option: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(
            f"{option}={value!r} is invalid: expected {expected}. Fix it on the command line, e.g. {option}=..."
        )


@contextmanager
def data_errors_as_user_errors() -> Iterator[None]:
    """Around ``prepare_data``: what fails there (no network, a corrupt or truncated download, a
    folder that is not a dataset) is the user's to fix, and its message says how."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as error:
        raise UserError(str(error)) from error


@contextmanager
def weights_errors_as_user_errors(pretrained: str | None) -> Iterator[None]:
    """Around building a model with ``model.pretrained``: a failed weights download names the file,
    where it comes from, and the offline way."""
    try:
        yield
    except OSError as error:  # URLError, connection and read errors
        if not pretrained or ":" not in str(pretrained) or Path(str(pretrained)).exists():
            raise
        library, _, name = str(pretrained).partition(":")
        if library == "torchvision":
            from torchvision.models import get_weight

            url = get_weight(name).url
            where, file = url, url.rsplit("/", 1)[-1]
        else:
            where, file = f"the Hugging Face Hub (timm's {name})", "pytorch_model.bin or model.safetensors"
        raise UserError(
            f"model.pretrained={pretrained}: downloading the weights failed ({error}). They come from "
            f"{where}; without network, fetch {file} elsewhere and pass the file: "
            f"model.pretrained=/path/to/{file.split(' ')[0]}"
        ) from None


# ----------------------------------------------------------------------------------------------
# The trainer and the printed config


def gradient_accumulation(global_batch_size: int, batch_size: int, devices: Any, num_nodes: int) -> int:
    """``${grad_accumulation:...}``: the ``trainer.accumulate_grad_batches`` that makes steps of
    ``batch_size`` images per device add up to ``global_batch_size`` (Table 3's 4096), so a recipe
    states the batch once. Impossible combinations are reported by ``validate``."""
    per_step = batch_size * (devices if isinstance(devices, int) else 1) * num_nodes
    return max(1, global_batch_size // per_step)


OmegaConf.register_new_resolver("grad_accumulation", gradient_accumulation, replace=True)


def _check_global_batch(cfg: DictConfig) -> None:
    trainer, batch_size = cfg.trainer, cfg.data.batch_size
    _check(
        isinstance(trainer.devices, int),
        "trainer.devices",
        trainer.devices,
        f"a number of devices when global_batch_size={cfg.global_batch_size} is reached by accumulation",
    )
    per_step = batch_size * trainer.devices * trainer.num_nodes
    if trainer.accumulate_grad_batches * per_step != cfg.global_batch_size:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} is not data.batch_size={batch_size} x "
            f"{trainer.devices * trainer.num_nodes} device(s) x trainer.accumulate_grad_batches="
            f"{trainer.accumulate_grad_batches}: choose a data.batch_size that divides "
            f"{cfg.global_batch_size // (trainer.devices * trainer.num_nodes)}, and leave "
            "trainer.accumulate_grad_batches to the recipe."
        )


def resolve_precision(precision: Any, accelerator: str = "auto") -> Any:
    """``auto``: bf16 mixed precision where the hardware runs it fast (bf16 GPUs; CPUs with
    AVX512-BF16 or AMX), else full fp32. Other values pass through to Lightning."""
    if precision != "auto":
        return precision
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    fast_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16-mixed" if fast_bf16 else "32-true"


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> Any:
    """The configured Lightning Trainer, with ``precision: auto`` resolved for this machine."""
    precision = resolve_precision(
        trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto")
    )
    return instantiate(trainer_cfg, precision=precision, **kwargs)


def print_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Print the resolved config as a tree (one branch per group) and save it as YAML; once, on the
    first process (under DDP every process composes the same config)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold")
    for group, value in cfg.items():
        branch = tree.add(str(group), style="bold cyan")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console().print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(OmegaConf.to_yaml(cfg, resolve=True))
