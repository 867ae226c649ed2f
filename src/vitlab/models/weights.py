"""Pretrained weights: read torchvision, timm, JAX ``.npz`` and vitlab checkpoints into our model.

Every format is first converted to vitlab's key names by a pure function on state dicts (one place
per format, with its inverse where the format is a PyTorch one), then fitted to the model: the
position-embedding grid is resized for a new image size and the classifier is replaced when the
class count differs. Anything else that does not fit is an error naming the keys, never a silent
partial load. This module knows the architecture (``vit.py``) alone: which Table 1 variant a state
dict fits is the registry's question (``variants.fitting_variant``).
"""

from __future__ import annotations

import math
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vitlab.checkpoint import (
    UNREADABLE_CHECKPOINT,
    TrainingCheckpoint,
    is_training_checkpoint,
    load_torch_file,
)
from vitlab.errors import MissingDependencyError, NetworkError
from vitlab.models.vit import VisionTransformer

__all__ = [
    "BackboneMismatch",
    "checkpoint_format",
    "classifier_options",
    "from_jax_npz",
    "from_timm",
    "from_torchvision",
    "load_pretrained",
    "read_checkpoint",
    "resize_position_embedding",
    "to_timm",
    "to_torchvision",
]

StateDict = dict[str, Tensor]

# (their name, vitlab name) prefixes; ``{i}`` is a block index. Names that are the same in both
# formats (torchvision's ``class_token``; timm's norms, MLP and head) need no entry.
_TORCHVISION_NAMES = (
    ("conv_proj", "patch_embedding.projection"),
    ("encoder.pos_embedding", "position_embedding"),
    ("encoder.layers.encoder_layer_{i}.ln_1", "blocks.{i}.norm1"),
    ("encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight", "blocks.{i}.attention.qkv.weight"),
    ("encoder.layers.encoder_layer_{i}.self_attention.in_proj_bias", "blocks.{i}.attention.qkv.bias"),
    ("encoder.layers.encoder_layer_{i}.self_attention.out_proj", "blocks.{i}.attention.proj"),
    ("encoder.layers.encoder_layer_{i}.ln_2", "blocks.{i}.norm2"),
    ("encoder.layers.encoder_layer_{i}.mlp.0", "blocks.{i}.mlp.fc1"),
    ("encoder.layers.encoder_layer_{i}.mlp.3", "blocks.{i}.mlp.fc2"),
    ("encoder.ln", "norm"),
    ("heads.pre_logits", "pre_logits.0"),
    ("heads.head", "head"),
)
# torchvision < 0.14 named the MLP layers linear_1 / linear_2; read only (torchvision renames them too).
_TORCHVISION_LEGACY_NAMES = (
    ("encoder.layers.encoder_layer_{i}.mlp.linear_1", "blocks.{i}.mlp.fc1"),
    ("encoder.layers.encoder_layer_{i}.mlp.linear_2", "blocks.{i}.mlp.fc2"),
)
_TIMM_NAMES = (
    ("cls_token", "class_token"),
    ("pos_embed", "position_embedding"),
    ("patch_embed.proj", "patch_embedding.projection"),
    ("blocks.{i}.attn", "blocks.{i}.attention"),
    ("pre_logits.fc", "pre_logits.0"),  # timm < 0.9's representation layer; timm 1.0 has none
    ("patch_embed.backbone.stem", "stem.root"),  # the hybrids' ResNet (models/hybrid.py)
    ("patch_embed.backbone.stages", "stem.stages"),
)


def _rename(state_dict: Mapping[str, Tensor], names: tuple[tuple[str, str], ...]) -> StateDict:
    """Rename keys by the first matching (from, to) prefix; keys matching none are kept as they are,
    so a strict load downstream reports them instead of them vanishing here."""
    rules = []
    for source, target in names:
        pattern = re.escape(source).replace(re.escape("{i}"), r"(?P<i>\d+)")
        rules.append((re.compile(pattern + r"(?=\.|$)"), target))
    renamed = {}
    for key, value in state_dict.items():
        for pattern, target in rules:
            match = pattern.match(key)
            if match:
                key = target.format(**match.groupdict()) + key[match.end() :]
                break
        renamed[key] = value
    return renamed


def _swap(names: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((ours, theirs) for theirs, ours in names)


def from_torchvision(state_dict: Mapping[str, Tensor]) -> StateDict:
    """torchvision ``VisionTransformer`` keys -> vitlab keys (the tensors are laid out alike)."""
    return _rename(state_dict, _TORCHVISION_NAMES + _TORCHVISION_LEGACY_NAMES)


def to_torchvision(state_dict: Mapping[str, Tensor]) -> StateDict:
    """vitlab keys -> torchvision ``VisionTransformer`` keys, loadable with ``strict=True``."""
    return _rename(state_dict, _swap(_TORCHVISION_NAMES))


def from_timm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """timm ``VisionTransformer`` keys -> vitlab keys (the tensors are laid out alike)."""
    return _rename(state_dict, _TIMM_NAMES)


def to_timm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """vitlab keys -> timm ``VisionTransformer`` keys. A pre-logits layer comes out under timm < 0.9's
    ``pre_logits.fc`` name, which timm 1.0 (without such a layer) drops when loading pretrained weights."""
    return _rename(state_dict, _swap(_TIMM_NAMES))


def from_jax_npz(arrays: Mapping[str, np.ndarray]) -> StateDict:
    """The original google-research/vision_transformer ``.npz`` layout (e.g. ViT-B_16.npz) -> vitlab.

    Flax stores dense kernels as [in, out] (so they are transposed), the patch kernel as HWIO, and
    attention per head: q/k/v kernels [D, heads, head_dim], the output kernel [heads, head_dim, D].
    Arrays that are absent are left out, so the fit check reports them under vitlab's names.
    """
    prefix = "opt/target/" if "opt/target/embedding/kernel" in arrays else ""

    def get(name: str) -> Tensor | None:
        return torch.from_numpy(np.asarray(arrays[prefix + name])) if prefix + name in arrays else None

    def linear(ours: str, theirs: str) -> dict[str, Tensor | None]:
        kernel = get(f"{theirs}/kernel")
        return {f"{ours}.weight": None if kernel is None else kernel.T, f"{ours}.bias": get(f"{theirs}/bias")}

    def layer_norm(ours: str, theirs: str) -> dict[str, Tensor | None]:
        return {f"{ours}.weight": get(f"{theirs}/scale"), f"{ours}.bias": get(f"{theirs}/bias")}

    patch_kernel = get("embedding/kernel")  # [P, P, C, D]
    converted: dict[str, Tensor | None] = {
        "class_token": get("cls"),
        "position_embedding": get("Transformer/posembed_input/pos_embedding"),
        "patch_embedding.projection.weight": None
        if patch_kernel is None
        else patch_kernel.permute(3, 2, 0, 1),
        "patch_embedding.projection.bias": get("embedding/bias"),
        **layer_norm("norm", "Transformer/encoder_norm"),
        **linear("pre_logits.0", "pre_logits"),
        **linear("head", "head"),
    }
    block_pattern = re.compile(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/")
    depth = len({match[1] for match in map(block_pattern.match, arrays) if match})
    for i in range(depth):
        block, ours = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attention = f"{block}MultiHeadDotProductAttention_1/"
        q_k_v = [
            (get(f"{attention}{n}/kernel"), get(f"{attention}{n}/bias")) for n in ("query", "key", "value")
        ]
        if all(kernel is not None and bias is not None for kernel, bias in q_k_v):
            converted[f"{ours}attention.qkv.weight"] = torch.cat([k.flatten(1).T for k, _ in q_k_v])
            converted[f"{ours}attention.qkv.bias"] = torch.cat([b.flatten() for _, b in q_k_v])
        out_kernel = get(f"{attention}out/kernel")  # [heads, head_dim, D]
        converted[f"{ours}attention.proj.weight"] = None if out_kernel is None else out_kernel.flatten(0, 1).T
        converted[f"{ours}attention.proj.bias"] = get(f"{attention}out/bias")
        converted |= layer_norm(f"{ours}norm1", f"{block}LayerNorm_0")
        converted |= layer_norm(f"{ours}norm2", f"{block}LayerNorm_2")
        converted |= linear(f"{ours}mlp.fc1", f"{block}MlpBlock_3/Dense_0")
        converted |= linear(f"{ours}mlp.fc2", f"{block}MlpBlock_3/Dense_1")
    if prefix + "conv_root/kernel" in arrays:
        converted |= _hybrid_stem_from_jax(get, [name.removeprefix(prefix) for name in arrays])
    return {key: value for key, value in converted.items() if value is not None}


def _hybrid_stem_from_jax(get: Callable[[str], Tensor | None], names: list[str]) -> dict[str, Tensor | None]:
    """The hybrids' BiT ResNet in R50+ViT-B_16.npz: ``conv_root``/``gn_root`` and
    ``block{stage}/unit{unit}/{conv,gn}{1,2,3,_proj}``, 1-based; HWIO kernels, GroupNorm vectors."""

    def conv(ours: str, theirs: str) -> dict[str, Tensor | None]:
        kernel = get(f"{theirs}/kernel")
        return {f"{ours}.weight": None if kernel is None else kernel.permute(3, 2, 0, 1)}

    def group_norm(ours: str, theirs: str) -> dict[str, Tensor | None]:
        scale, bias = get(f"{theirs}/scale"), get(f"{theirs}/bias")
        return {
            f"{ours}.weight": None if scale is None else scale.flatten(),
            f"{ours}.bias": None if bias is None else bias.flatten(),
        }

    converted = conv("stem.root.conv", "conv_root") | group_norm("stem.root.norm", "gn_root")
    units = {(int(m[1]), int(m[2])) for m in map(re.compile(r"block(\d+)/unit(\d+)/").match, names) if m}
    for stage, unit in sorted(units):
        theirs, ours = f"block{stage}/unit{unit}/", f"stem.stages.{stage - 1}.blocks.{unit - 1}."
        for r in ("1", "2", "3"):
            converted |= conv(ours + "conv" + r, theirs + "conv" + r)
            converted |= group_norm(ours + "norm" + r, theirs + "gn" + r)
        if f"{theirs}conv_proj/kernel" in names:
            converted |= conv(f"{ours}downsample.conv", f"{theirs}conv_proj")
            converted |= group_norm(f"{ours}downsample.norm", f"{theirs}gn_proj")
    return converted


def resize_position_embedding(
    pos_embed: Tensor, new_grid: tuple[int, int], mode: str = "bicubic", antialias: bool = True
) -> Tensor:
    """Resize position embeddings ``[1, 1 + H*W, D]`` (class token first, square H x W grid) to
    ``[1, 1 + h*w, D]`` for ``new_grid = (h, w)``, so a checkpoint serves another image size.

    Interpolation: ``mode`` (bicubic by default) over the 2-D grid with ``align_corners=False`` and,
    by default, ``antialias=True``; the class token's embedding is kept unchanged. With antialias torch
    uses the PIL-style bicubic kernel (a = -0.5) even when enlarging, so the flag changes results in
    both directions. These are timm's defaults (``resample_abs_pos_embed``), with which most ViT
    weights in circulation were fine-tuned at new resolutions, and its numbers are the reference in
    our tests. (The paper's JAX code zoomed bilinearly; torchvision's ``interpolate_embeddings`` uses
    bicubic with ``align_corners=True``.) Computed in float32, returned in the input dtype.
    """
    tokens, dim = pos_embed.shape[1] - 1, pos_embed.shape[-1]
    old = math.isqrt(tokens)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or old * old != tokens:
        raise ValueError(
            f"position embedding of shape {list(pos_embed.shape)} is not [1, 1 + H*W, D] with a square "
            f"H x W grid after the class token: pass a ViT checkpoint with one class token and square images."
        )
    if (old, old) == tuple(new_grid):
        return pos_embed
    class_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.float().reshape(1, old, old, dim).permute(0, 3, 1, 2)  # [1, D, H, W]
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # [1, h*w, D]
    return torch.cat([class_pos, grid], dim=1)


def _download_failed(source: str, where: str, file: str, error: Exception) -> NetworkError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return NetworkError(
        f"model.pretrained={source}: downloading the weights failed ({reason}). They come from {where}; "
        f"without network, fetch {file} elsewhere and keep the source, which sets the preprocessing: "
        f"model.pretrained={source} model.pretrained_file=/path/to/{file}"
    )


def torchvision_weights(weights_name: str) -> Any:
    """torchvision's ``WeightsEnum`` member named ``weights_name`` (its metadata needs no download)."""
    from torchvision.models import get_weight

    try:
        return get_weight(weights_name)
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"torchvision has no weights {weights_name!r} ({error}): name an enum member such as "
            f"'torchvision:ViT_B_16_Weights.IMAGENET1K_V1' (see torchvision.models.get_model_weights)."
        ) from error


def _fetch_torchvision(weights_name: str) -> StateDict:
    weights = torchvision_weights(weights_name)
    try:
        return weights.get_state_dict(progress=True)
    except OSError as error:  # URLError, no route, refused connection
        url = weights.url
        raise _download_failed(f"torchvision:{weights_name}", url, url.rsplit("/", 1)[-1], error) from error


HUB_PROBE_TIMEOUT_S = 3


def probe_hub() -> None:
    """Raise ``OSError`` at once when the Hugging Face Hub does not answer (or ``HF_HUB_OFFLINE`` is
    set): huggingface_hub would retry for about a minute, warning twice per try, before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise OSError("HF_HUB_OFFLINE is set")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(
            urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S
        ).close()
    except urllib.error.HTTPError:
        pass  # it answered
    except OSError as error:
        reason = getattr(error, "reason", error)
        raise OSError(f"{endpoint} did not answer within {HUB_PROBE_TIMEOUT_S} s: {reason}") from error


def _hub_cached(repo_id: str) -> bool:
    """Whether timm finds the weights of ``repo_id`` in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    names = ("model.safetensors", "pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names)


def _fetch_timm(model_name: str) -> StateDict:
    try:
        import timm
    except ImportError as error:
        raise MissingDependencyError(
            f"'timm:{model_name}' needs timm, which vitlab does not install: `pip install timm` "
            f"(or `pip install -e .[dev]`)."
        ) from error
    hub_id = getattr(timm.models.get_pretrained_cfg(model_name), "hf_hub_id", None)
    try:
        if hub_id and not _hub_cached(hub_id):
            probe_hub()
        return timm.create_model(model_name, pretrained=True).state_dict()
    except (OSError, RuntimeError) as error:  # Hugging Face Hub and URL errors, offline mode
        where = f"the Hugging Face Hub (timm's {model_name})"
        raise _download_failed(f"timm:{model_name}", where, "pytorch_model.bin", error) from error


# (a key only that format has, its converter to vitlab names) for vitlab, torchvision and timm.
_FORMATS: tuple[tuple[str, str, Callable[[Mapping[str, Tensor]], StateDict]], ...] = (
    ("vitlab", "position_embedding", dict),
    ("vitlab", "blocks.0.attention.qkv.weight", dict),  # fixed (unsaved) sin-cos position embeddings
    ("torchvision", "encoder.pos_embedding", from_torchvision),
    ("timm", "pos_embed", from_timm),
)
_WRAPPER_PREFIXES = ("", "model.", "backbone.", "module.")  # Lightning modules, DDP wrappers
_SUPPORTED = (
    "a torch.save'd state dict in vitlab, torchvision or timm ViT format (also under 'state_dict' or "
    "'model', keys optionally prefixed 'model.', 'backbone.' or 'module.', as in Lightning checkpoints); "
    "an original JAX .npz (e.g. ViT-B_16.npz); 'torchvision:<WEIGHTS_ENUM>'; 'timm:<model name>'"
)


def _is_npz(path: Path) -> bool:
    """numpy archives hold ``.npy`` members; torch.save's zip files hold ``data.pkl`` and raw storages."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith(".npy") for name in archive.namelist())


def _unknown_format(path: Path, keys: list[str]) -> ValueError:
    return ValueError(
        f"{path}: cannot tell the checkpoint format from its keys {keys[:5]}{' ...' if len(keys) > 5 else ''}. "
        f"Supported: {_SUPPORTED}."
    )


def _read_torch_file(path: Path) -> tuple[str, StateDict]:
    """(format name, state dict in vitlab names) of a ``torch.save``'d file."""
    try:
        contents = load_torch_file(path)
    except UNREADABLE_CHECKPOINT as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path}: torch.load(weights_only=True) cannot read it ({reason}). If it is a checkpoint you "
            f"trust that holds objects other than tensors (e.g. a Lightning .ckpt's hyper-parameters), save "
            f"only its state dict: torch.save(torch.load(path, weights_only=False)['state_dict'], "
            f"'weights.pt'), and load that. Supported: {_SUPPORTED}."
        ) from error
    if is_training_checkpoint(contents):  # vitlab's reader refuses one of a newer format
        contents = TrainingCheckpoint.from_contents(contents, path).state_dict
    if not isinstance(contents, Mapping):
        raise _unknown_format(path, [type(contents).__name__])
    for wrapper in ("state_dict", "model"):
        if isinstance(contents.get(wrapper), Mapping):
            contents = contents[wrapper]
            break
    for prefix in _WRAPPER_PREFIXES:
        for name, signature, convert in _FORMATS:
            if prefix + signature in contents:
                unwrapped = {k[len(prefix) :]: v for k, v in contents.items() if k.startswith(prefix)}
                return name, convert(unwrapped)
    raise _unknown_format(path, list(contents))


def _read_file(source: str) -> tuple[str, StateDict]:
    """(format name: ``npz``, ``vitlab``, ``torchvision`` or ``timm``; state dict in vitlab names)."""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={source!r} is not a file. Supported: {_SUPPORTED}.")
    if not _is_npz(path):
        return _read_torch_file(path)
    with np.load(path) as archive:
        if not any(name.endswith("embedding/kernel") for name in archive.files):
            raise _unknown_format(path, list(archive.files))
        return "npz", from_jax_npz({name: archive[name] for name in archive.files})


def checkpoint_format(path: str | os.PathLike[str]) -> str:
    """The format of a weights file, told from its keys: ``npz`` (Google's JAX release), ``vitlab``,
    ``torchvision`` or ``timm``. Cheap: ``.pt`` files are memory-mapped, not read."""
    path = Path(path)
    if _is_npz(path):
        return "npz"
    return _read_file(os.fspath(path))[0]


def read_checkpoint(source: str | os.PathLike[str]) -> StateDict:
    """Weights from a file (format detected from its keys) or a library, under vitlab's key names."""
    source_name = os.fspath(source)
    if source_name.startswith("torchvision:"):
        return from_torchvision(_fetch_torchvision(source_name.removeprefix("torchvision:")))
    if source_name.startswith("timm:"):
        return from_timm(_fetch_timm(source_name.removeprefix("timm:")))
    return _read_file(source_name)[1]


def _is_classifier(key: str) -> bool:
    return key.startswith(("head.", "pre_logits."))


def classifier_options(state_dict: Mapping[str, Tensor]) -> list[str]:
    """The ``create_model`` options a state dict's classifier was built with (none: no classifier)."""
    options = []
    if "head.weight" in state_dict:
        options.append(f"num_classes={state_dict['head.weight'].shape[0]}")
    if "pre_logits.0.weight" in state_dict:
        options.append(f"representation_size={state_dict['pre_logits.0.weight'].shape[0]}")
    return options


class BackboneMismatch(ValueError):
    """A checkpoint's backbone does not fit the model; ``checkpoint`` (vitlab names) lets the caller
    say which model it would fit."""

    def __init__(self, message: str, checkpoint: Mapping[str, Tensor]) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def _check_backbone_fits(model: VisionTransformer, checkpoint: Mapping[str, Tensor], source: str) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped key outside the classifier
    (which ``_fit_classifier`` adapts)."""
    expected = {key: value for key, value in model.state_dict().items() if not _is_classifier(key)}
    backbone = {key: value for key, value in checkpoint.items() if not _is_classifier(key)}

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" ... and {len(keys) - 8} more" if len(keys) > 8 else "")

    missing = sorted(expected.keys() - backbone.keys())
    unexpected = sorted(backbone.keys() - expected.keys())
    misshaped = sorted(
        f"{key} (checkpoint {list(backbone[key].shape)}, model {list(expected[key].shape)})"
        for key in expected.keys() & backbone.keys()
        if backbone[key].shape != expected[key].shape
    )
    if missing or unexpected or misshaped:
        problems = [
            f"{label} ({len(keys)}): {listing(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if keys
        ]
        raise BackboneMismatch(f"{source} does not fit the model; " + "; ".join(problems) + ".", checkpoint)


def _fit_classifier(model: VisionTransformer, checkpoint: StateDict, source: str) -> StateDict:
    """Keep the checkpoint's head where it fits; otherwise a fresh zero head (paper section 3.2)."""
    model_state = model.state_dict()
    classifier_keys = {key for key in (*model_state, *checkpoint) if _is_classifier(key)}
    if all(
        key in model_state and key in checkpoint and model_state[key].shape == checkpoint[key].shape
        for key in classifier_keys
    ):
        return checkpoint
    if model.num_classes:  # with num_classes=0 dropping the classifier is what was asked for
        theirs = ", ".join(classifier_options(checkpoint))
        warnings.warn(
            f"{source}: the checkpoint's classifier ({theirs or 'none'}) does not fit the model's "
            f"({', '.join(classifier_options(model_state))}); kept the backbone and replaced the "
            f"classifier by a zero-initialised {model.num_classes}-class head without pre-logits, to be "
            f"fine-tuned (paper section 3.2)."
            + (f" To keep the checkpoint's classifier, build the model with {theirs}." if theirs else ""),
            stacklevel=3,
        )
    model.reset_classifier(model.num_classes)
    fresh_head = {key: value for key, value in model.state_dict().items() if _is_classifier(key)}
    return {key: value for key, value in checkpoint.items() if not _is_classifier(key)} | fresh_head


def load_pretrained(model: VisionTransformer, source: str | os.PathLike[str]) -> None:
    """Load ``source`` (a checkpoint file or ``torchvision:``/``timm:`` name, see ``read_checkpoint``)
    into ``model`` in place, adapting the position embeddings to its image size and its classifier to
    its class count; any other mismatch raises before the model is touched."""
    source_name = os.fspath(source)
    checkpoint = read_checkpoint(source)
    pos_embed = checkpoint.get("position_embedding")
    if pos_embed is not None and pos_embed.shape != model.position_embedding.shape:
        grid = math.isqrt(pos_embed.shape[1] - 1)
        if grid * grid == pos_embed.shape[1] - 1 and pos_embed.shape[-1] == model.dim:
            checkpoint["position_embedding"] = resize_position_embedding(pos_embed, (model.grid_size,) * 2)
    _check_backbone_fits(model, checkpoint, source_name)
    model.load_state_dict(_fit_classifier(model, checkpoint, source_name))
