"""Table 1 of the paper as data, ``create_model`` (the one way code builds a ViT), the shape of a
model config (``ModelConfig``: what ``model:`` in the configs holds, read off ``create_model`` and
``VisionTransformer``'s own arguments) and the reverse question: which variant fits a checkpoint's
shapes."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import Tensor

from vitlab.models.hybrid import BiTResNet, reject_torchvision_stem
from vitlab.models.vit import VisionTransformer
from vitlab.models.weights import BackboneMismatch, classifier_options, load_pretrained


@dataclass(frozen=True)
class ModelSize:
    """One row of Table 1 (Ti and S are the DeiT sizes used as small ViTs)."""

    depth: int
    dim: int
    mlp_dim: int
    heads: int


MODEL_SIZES: dict[str, ModelSize] = {
    "ti": ModelSize(depth=12, dim=192, mlp_dim=768, heads=3),
    "s": ModelSize(depth=12, dim=384, mlp_dim=1536, heads=6),
    "b": ModelSize(depth=12, dim=768, mlp_dim=3072, heads=12),
    "l": ModelSize(depth=24, dim=1024, mlp_dim=4096, heads=16),
    "h": ModelSize(depth=32, dim=1280, mlp_dim=5120, heads=16),
}

# Named variants: (size, patch size). Any size also combines with any patch size through the
# ``patch_size`` override, or a name such as ``vit_s32``.
VARIANTS: dict[str, tuple[str, int]] = {
    "vit_ti16": ("ti", 16),
    "vit_s16": ("s", 16),
    "vit_b16": ("b", 16),
    "vit_b32": ("b", 32),
    "vit_l16": ("l", 16),
    "vit_l32": ("l", 32),
    "vit_h14": ("h", 14),
}
# Hybrids (section 4.1): a BiT ResNet-50's feature map as 1x1 patches; (size, ResNet stage depths).
HYBRIDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "r50_vit_b16": ("b", (3, 4, 9)),  # stage 4's 3 blocks moved into stage 3: stride 16
    "r50_vit_l32": ("l", (3, 4, 6, 3)),  # all four stages: stride 32
}

_NAME = re.compile(r"^vit_(ti|s|b|l|h)(\d+)$")


def available_models() -> list[str]:
    return [*VARIANTS, *HYBRIDS]


def resolve_variant(name: str) -> tuple[ModelSize, int, bool]:
    """``name`` -> (size row, patch size in pixels, is hybrid); a clear error for unknown names."""
    if name in HYBRIDS:
        size, stages = HYBRIDS[name]
        return MODEL_SIZES[size], 4 * 2 ** (len(stages) - 1), True  # the ResNet's stride
    if name in VARIANTS:
        size, patch = VARIANTS[name]
        return MODEL_SIZES[size], patch, False
    match = _NAME.match(name)
    if match:
        return MODEL_SIZES[match[1]], int(match[2]), False
    raise ValueError(
        f"unknown model {name!r}: choose one of {', '.join(available_models())} "
        f"(or vit_<size><patch> with size in {', '.join(MODEL_SIZES)})."
    )


# What create_model lets a caller set: VisionTransformer's own keyword arguments, except a hybrid's
# ResNet stem, which the name builds. A new argument of VisionTransformer is an option at once.
ARCHITECTURE_OPTIONS: frozenset[str] = frozenset(
    p.name
    for p in inspect.signature(VisionTransformer.__init__).parameters.values()
    if p.kind == p.KEYWORD_ONLY
) - {"stem"}


def model_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The ``VisionTransformer`` keyword arguments for a variant, before any weights are loaded."""
    size, patch_size, hybrid = resolve_variant(name)
    kwargs: dict[str, Any] = {**asdict(size), "patch_size": patch_size}
    unknown = set(overrides) - ARCHITECTURE_OPTIONS
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for create_model: allowed are {sorted(ARCHITECTURE_OPTIONS)}."
        )
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    if hybrid:
        stem = BiTResNet(HYBRIDS[name][1], in_channels=kwargs.get("in_channels", 3))
        if kwargs["patch_size"] % stem.stride:
            raise ValueError(
                f"{name}: patch_size={kwargs['patch_size']} must be a multiple of the ResNet stem's "
                f"stride {stem.stride}."
            )
        kwargs["patch_size"] //= stem.stride  # patches of the stem's feature map
        kwargs["stem"] = stem
    return kwargs


def create_model(name: str, pretrained: str | None = None, **overrides: Any) -> VisionTransformer:
    """Build a named variant, optionally loading weights from a file or a library.

    ``pretrained`` is a local checkpoint (torchvision, timm or JAX ``.npz`` format, detected) or
    ``torchvision:<WEIGHTS_ENUM>`` / ``timm:<model name>``. When ``num_classes`` differs from the
    checkpoint's, the head is replaced by a fresh zero-initialised one; when ``image_size`` differs,
    the position embeddings are interpolated.
    """
    model = VisionTransformer(**model_kwargs(name, **overrides))
    if pretrained:
        try:
            load_pretrained(model, pretrained)
        except BackboneMismatch as error:
            reject_torchvision_stem(error.checkpoint, str(pretrained))
            raise ValueError(
                f"{error} The checkpoint looks like {fitting_variant(error.checkpoint)}: build that "
                f"variant (image size and class count may differ; they are adapted)."
            ) from None
    return model


@dataclass(frozen=True)
class ModelConfig:
    """A ``model:`` config node (conf/model/): the variant, its weights, freezing, and the
    architecture options, each named as ``create_model`` and ``VisionTransformer`` name it.

    The class count is not among them: it comes from the data. ``null`` options take the variant's
    value (Table 1), as ``create_model`` does. Checkpoints store ``name`` and ``options`` (as
    ``model_name`` and ``model_options``), so a trained model is rebuilt from the same shape.
    """

    name: str
    pretrained: str | None = None  # a file, torchvision:<ENUM> or timm:<name>
    pretrained_file: str | None = None  # a local copy of a named source's weights (offline)
    freeze_backbone: bool = False  # train only the head (the classifier task's; ignored by others)
    options: dict[str, Any] = field(default_factory=dict)  # VisionTransformer's arguments

    @staticmethod
    def keys() -> frozenset[str]:
        """Every key a model config may hold."""
        own = {f.name for f in fields(ModelConfig)} - {"options"}
        return frozenset(own | ARCHITECTURE_OPTIONS - {"num_classes"})

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> ModelConfig:
        """From a model config node (a DictConfig or a plain dict, e.g. a W&B run's config); keys
        starting with ``_`` are Hydra's. An unknown key is a ValueError naming it."""
        keys = {str(k) for k in node if not str(k).startswith("_")}
        unknown = keys - cls.keys()
        if unknown:
            raise ValueError(f"unknown model option(s) {sorted(unknown)}: allowed are {sorted(cls.keys())}.")
        own = {f.name for f in fields(cls)} - {"options"}
        options = {k: node[k] for k in sorted(keys - own)}
        return cls(**{k: node[k] for k in keys & own}, options=options)

    @property
    def patch_size(self) -> int:
        """The patch size in pixels: the option where set, else the variant's (for a hybrid, its
        ResNet stem's stride)."""
        return self.options.get("patch_size") or resolve_variant(self.name)[1]

    @property
    def weights(self) -> str | None:
        """What to load: the local copy where given, else the named source."""
        return self.pretrained_file or self.pretrained

    def create(self, num_classes: int, load_weights: bool = True) -> VisionTransformer:
        """``create_model`` as this config says (without weights: for checks on the meta device)."""
        weights = self.weights if load_weights else None
        return create_model(self.name, pretrained=weights, num_classes=num_classes, **self.options)


def fitting_variant(checkpoint: Mapping[str, Tensor]) -> str:
    """The ``create_model`` call whose model a state dict (vitlab names) fits, read off its shapes
    (the number of attention heads is not in a state dict; the Table 1 row's is assumed)."""
    try:
        dim = checkpoint["position_embedding"].shape[-1]
        grid = math.isqrt(checkpoint["position_embedding"].shape[1] - 1)
        patch = checkpoint["patch_embedding.projection.weight"].shape[-1]
        mlp_dim = checkpoint["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, IndexError):
        return "a model this checkpoint was saved from"
    depth = len({key.split(".")[1] for key in checkpoint if key.startswith("blocks.")})
    num_stages = len({key.split(".")[2] for key in checkpoint if key.startswith("stem.stages.")})
    hybrid = next((n for n, (_, stages) in HYBRIDS.items() if len(stages) == num_stages), None)
    stride = 4 * 2 ** (num_stages - 1) if hybrid else 1
    size = next(
        (s for s, row in MODEL_SIZES.items() if (row.depth, row.dim, row.mlp_dim) == (depth, dim, mlp_dim)),
        None,
    )
    if hybrid:
        name, options = hybrid, [] if patch == 1 else [f"patch_size={patch * stride}"]
    else:
        name, options = f"vit_{size or 'b'}{patch}", []
    if size is None or (hybrid and HYBRIDS[name][0] != size):
        options += [f"depth={depth}", f"dim={dim}", f"mlp_dim={mlp_dim}"]
    options += [f"image_size={grid * patch * stride}", *classifier_options(checkpoint)]
    return f"create_model({name!r}, {', '.join(options)})"
