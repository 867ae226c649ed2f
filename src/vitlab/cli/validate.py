"""The checks a composed config must pass before anything long is printed or any data is prepared:
unknown keys (with the closest valid names), each group's own constructor checks, and the checks
that span groups. Constructor ``ValueError``s become ``ConfigError``s naming the options."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from vitlab.data.datamodule import build_datamodule
from vitlab.errors import ConfigError
from vitlab.models.preprocessing import FROM_SCRATCH, with_options
from vitlab.models.variants import ModelConfig


def missing_values(cfg: DictConfig) -> None:
    """A mandatory option (``???`` in the config, e.g. eval's ``ckpt_path``) that was not given. Only
    the top level holds them; nothing is resolved here (an unset ``oc.env`` is reported later)."""
    missing = [str(key) for key in cfg if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ConfigError(
            f"{missing[0]} is required: give it on the command line, e.g. {missing[0]}=..."
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )


def unknown_option_message(
    option: str, valid: Iterable[str], owner: str = "", root: DictConfig | None = None
) -> str:
    """``trainer.max_epoch is not an option: did you mean trainer.max_epochs?`` (``valid``: the
    keys beside ``option``'s last part; ``root``: the whole config, whose other groups holding that
    key are named too, as ``preprocessing.mean`` for ``data.mean``)."""
    parent, _, key = option.rpartition(".")
    candidates = [str(v) for v in valid if not str(v).startswith("_")]
    close = [f"{parent}.{c}" if parent else c for c in difflib.get_close_matches(key, candidates, 3, 0.75)]
    close += _groups_holding(root, key, parent) if root is not None else []
    hint = f": did you mean {' or '.join(close)}?" if close else "."
    owner = f" of {owner}" if owner else ""
    return (
        f"{option} is not an option{owner}{hint} "
        "Check its spelling; `python train.py --cfg job` prints every option."
    )


def _groups_holding(root: DictConfig, key: str, parent: str) -> list[str]:
    groups = OmegaConf.to_container(root)  # unresolved: an unset ${oc.env:...} is no concern here
    return [
        f"{g}.{key}" for g, node in groups.items() if g != parent and isinstance(node, dict) and key in node
    ]


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
                raise ConfigError(unknown_option_message(f"{group}.{key}", valid, owner, cfg))


def _constructed(group: str, node: DictConfig, build: Callable[[], Any], **others: DictConfig) -> None:
    """Run ``build``, turning its ValueError into a message naming the config options (of ``node``,
    or of the ``others`` groups it is built with)."""
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
        raise _naming_options({group: node, **others}, cause) from None


def _naming_options(nodes: dict[str, DictConfig], error: Exception) -> ConfigError:
    """A constructor's ValueError (``image_size=225 is not divisible by ...``) in config words:
    its arguments become options (``model.image_size=225 ...``), or the options whose values it
    quotes are named in front (``nodes``: the groups it was built from, the first its own)."""
    message = str(error)
    options = {str(k): (group, node) for group, node in reversed(nodes.items()) for k in node}
    options = {key: where for key, where in options.items() if not key.startswith("_")}
    pattern = rf"(?<![\w.])({'|'.join(map(re.escape, options))})="
    renamed = re.sub(pattern, lambda match: f"{options[match[1]][0]}.{match[1]}=", message)
    if renamed != message:
        return ConfigError(renamed)
    quoted = [
        f"{group}.{key}={node[key]}"
        for key, (group, node) in options.items()
        if node[key] is not None and re.search(rf"(?<![\w.-]){re.escape(str(node[key]))}(?![\w])", message)
    ]
    return ConfigError(f"{', '.join(quoted) or next(iter(nodes))}: {message}")


def validate(cfg: DictConfig) -> None:
    """Fail at once, before any data is prepared: unknown keys, then each group's own constructor
    checks (the model built on the meta device, the datamodule and optimizer constructed), then the
    checks that span groups or belong to no group's constructor."""
    missing_values(cfg)
    check_keys(cfg)
    model = cfg.model

    def meta_model() -> None:  # every construction-time check of the model, no weights allocated
        with torch.device("meta"):
            ModelConfig.from_config(model).create(num_classes=2, load_weights=False)

    _constructed("model", model, meta_model)
    # A datamodule's constructor checks its options and the preprocessing ones; files are only looked
    # at in prepare_data. The weights' preprocessing is resolved after validation (it may read files):
    # the user's options are checked on top of the course's.
    options = cfg.get("preprocessing") or OmegaConf.create({})
    _constructed(
        "data",
        cfg.data,
        lambda: build_datamodule(cfg.data, with_options(FROM_SCRATCH, OmegaConf.to_container(options), "")),
        preprocessing=options,
    )
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
