"""The Vision Transformer of Dosovitskiy et al. (2020), one module per equation.

Eq. 1  z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos         -> PatchEmbedding + VisionTransformer.embed
Eq. 2  z'_l = MSA(LN(z_{l-1})) + z_{l-1}                       -> EncoderBlock (Attention)
Eq. 3  z_l = MLP(LN(z'_l)) + z'_l                               -> EncoderBlock (MLP)
Eq. 4  y = LN(z_L^0)                                             -> VisionTransformer.forward_features

Options for training on small data, each off by default (the paper's model) and free when off:
``tokenizer`` (patch | conv | shifted, see tokenizers.py), ``attention`` (standard | lsa: locality
self-attention, Lee et al. 2021), ``position_embedding`` (learned | sincos2d, fixed) and ``pooling``
(token | avg | seq: CCT's sequence pooling).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitlab.models.posembed import sincos_2d
from vitlab.models.tokenizers import ConvTokenizer, ShiftedPatchTokenizer

Pooling = Literal["token", "avg", "seq"]
Tokenizer = Literal["patch", "conv", "shifted"]
AttentionKind = Literal["standard", "lsa"]
PositionEmbedding = Literal["learned", "sincos2d"]


def _lecun_normal_(weight: Tensor) -> None:
    """Truncated-normal LeCun init, as flax's default ``lecun_normal`` (used by the reference code)."""
    fan_in = weight[0].numel()
    # 0.8796... is the std of a unit normal truncated to [-2, 2]; dividing keeps the variance at 1/fan_in.
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class PatchEmbedding(nn.Module):
    """Split the image into P x P patches and project each to D dims (the E of eq. 1).

    A convolution with kernel = stride = P is exactly a linear map applied to each flattened patch.
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not divisible by patch_size={patch_size}: use a multiple of "
                f"{patch_size}, e.g. image_size={image_size // patch_size * patch_size or patch_size}."
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.projection = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        _lecun_normal_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.projection(x)  # [B, D, H/P, W/P]
        return x.flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    """Multi-head self-attention (MSA). The fused SDPA kernel is the default path;
    ``attention_probabilities`` keeps the explicit softmax(q k^T / sqrt(d)) for inspection.

    ``locality=True`` is LSA (Lee et al. 2021): a learnable temperature in place of sqrt(d) (started
    there) and no token attends to itself (the diagonal is masked), which sharpens attention on other
    tokens where data is too scarce to learn that.
    """

    def __init__(
        self, dim: int, heads: int, attn_dropout: float = 0.0, dropout: float = 0.0, locality: bool = False
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}: choose heads that divide {dim}.")
        self.heads = heads
        self.head_dim = dim // heads
        # log of the temperature tau, so that it stays positive; tau starts at sqrt(head_dim).
        self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(self.head_dim))) if locality else None
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, heads, N+1, head_dim]

    def _merge_heads(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2).flatten(2)  # [B, N+1, D]
        return self.proj_dropout(self.proj(x))

    def _locality(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """LSA: queries divided by the learned temperature, and the mask that lets no token see itself."""
        assert self.log_temperature is not None
        tokens = q.shape[-2]
        not_self = ~torch.eye(tokens, dtype=torch.bool, device=q.device)  # True: may attend
        return q * (-self.log_temperature).exp(), not_self

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._split_heads(x)
        dropout_p = self.attn_dropout if self.training else 0.0
        if self.log_temperature is None:
            return self._merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p))
        q, mask = self._locality(q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=1.0)
        return self._merge_heads(out)

    def attention_probabilities(self, x: Tensor) -> Tensor:
        """softmax(q k^T / sqrt(d_head)) (LSA: / tau, diagonal masked): ``[B, heads, N+1, N+1]``, rows
        sum to 1 (no dropout)."""
        q, k, _ = self._split_heads(x)
        if self.log_temperature is None:
            return (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
        q, mask = self._locality(q)
        return (q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    """Two layers with a GELU non-linearity (paper section 3.1)."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: eqs. 2 and 3."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        locality: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = Attention(dim, heads, attn_dropout=attn_dropout, dropout=dropout, locality=locality)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, mlp_dim, dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, z: Tensor) -> Tensor:
        z = z + self.drop_path(self.attention(self.norm1(z)))  # eq. 2
        return z + self.drop_path(self.mlp(self.norm2(z)))  # eq. 3


class VisionTransformer(nn.Module):
    """ViT backbone + classifier head.

    The seam between ``forward_features`` (pooled ``[B, D]``) and ``forward_head`` (logits) is where
    backbone freezing, feature extraction and fine-tuning hang.

    Initialisation follows the reference JAX code (google-research/vision_transformer): patch
    projection LeCun-normal, class token zeros, position embedding N(0, 0.02), attention and MLP
    weights Xavier-uniform (q, k, v each on its own D x D fan), MLP biases N(0, 1e-6), other biases
    zero, pre-logits LeCun-normal, classifier head zeros, LayerNorm 1 / 0.
    """

    def __init__(
        self,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        num_classes: int = 1000,
        depth: int = 12,
        dim: int = 768,
        mlp_dim: int = 3072,
        heads: int = 12,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        pooling: Pooling = "token",
        representation_size: int | None = None,
        stem: nn.Module | None = None,
        tokenizer: Tokenizer = "patch",
        attention: AttentionKind = "standard",
        position_embedding: PositionEmbedding = "learned",
    ) -> None:
        super().__init__()
        for option, value, allowed in (
            ("pooling", pooling, ("token", "avg", "seq")),
            ("tokenizer", tokenizer, ("patch", "conv", "shifted")),
            ("attention", attention, ("standard", "lsa")),
            ("position_embedding", position_embedding, ("learned", "sincos2d")),
        ):
            if value not in allowed:
                raise ValueError(f"{option}={value!r} is not supported: use one of {', '.join(allowed)}.")
        if stem is not None and tokenizer != "patch":
            raise ValueError(f"tokenizer={tokenizer!r} cannot follow a hybrid stem: use tokenizer=patch.")
        for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout), ("drop_path", drop_path)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}={p} must lie in [0, 1).")
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes} must be >= 0 (0 gives features, no head).")
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.dim = dim
        self.pooling = pooling
        # A hybrid stem (section 3.1) turns the image into a feature map that is then "patchified".
        self.stem = stem
        stem_stride = getattr(stem, "stride", 1)
        if image_size % stem_stride:
            raise ValueError(
                f"image_size={image_size} is not divisible by the hybrid stem's stride {stem_stride}."
            )
        embed_channels = getattr(stem, "out_channels", in_channels)
        tokenizer_class = {"patch": PatchEmbedding, "conv": ConvTokenizer, "shifted": ShiftedPatchTokenizer}
        self.patch_embedding = tokenizer_class[tokenizer](
            image_size // stem_stride, patch_size, embed_channels, dim
        )
        self.patch_size = patch_size * stem_stride  # effective patch size in image pixels
        if image_size % self.patch_size:
            raise ValueError(
                f"image_size={image_size} is not divisible by the effective patch size {self.patch_size}."
            )
        num_tokens = self.patch_embedding.num_patches + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        if position_embedding == "learned":
            self.position_embedding = nn.Parameter(torch.empty(1, num_tokens, dim))
        else:  # fixed: derived from the grid, so neither trained nor saved
            grid = self.patch_embedding.grid_size
            fixed = torch.cat([torch.zeros(1, dim), sincos_2d(grid, dim)])[None]  # class token: zeros
            self.register_buffer("position_embedding", fixed, persistent=False)
        self.embedding_dropout = nn.Dropout(dropout)
        drop_rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        locality = attention == "lsa"
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, mlp_dim, dropout, attn_dropout, rate, locality) for rate in drop_rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # Sequence pooling (CCT): a linear scorer whose softmax over the tokens weights their mean.
        self.pool_scorer = nn.Linear(dim, 1) if pooling == "seq" else None
        self.pre_logits = (
            nn.Sequential(nn.Linear(dim, representation_size), nn.Tanh())
            if representation_size
            else nn.Identity()
        )
        head_in = representation_size or dim
        self.head = nn.Linear(head_in, num_classes) if num_classes else nn.Identity()
        self.reset_parameters()

    @property
    def grid_size(self) -> int:
        return self.patch_embedding.grid_size

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.patch_embedding.reset_parameters()
        nn.init.zeros_(self.class_token)
        if isinstance(self.position_embedding, nn.Parameter):
            nn.init.normal_(self.position_embedding, std=0.02)
        for block in self.blocks:
            qkv = block.attention.qkv
            bound = math.sqrt(6.0 / (qkv.in_features + qkv.out_features // 3))
            nn.init.uniform_(qkv.weight, -bound, bound)
            nn.init.zeros_(qkv.bias)
            nn.init.xavier_uniform_(block.attention.proj.weight)
            nn.init.zeros_(block.attention.proj.bias)
            for linear in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.normal_(linear.bias, std=1e-6)
        if isinstance(self.pre_logits, nn.Sequential):
            _lecun_normal_(self.pre_logits[0].weight)
            nn.init.zeros_(self.pre_logits[0].bias)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if self.pool_scorer is not None:
            nn.init.trunc_normal_(self.pool_scorer.weight, std=0.02)  # as CCT
            nn.init.zeros_(self.pool_scorer.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay (timm's ``no_weight_decay()`` convention, read by the
        optimizer's parameter groups): the position embeddings, the class token and every 1-D
        parameter (biases and the LayerNorm and stem GroupNorm scales and shifts), as torchvision's
        and timm's recipes exclude them. A fixed (sin-cos) position embedding is a buffer, not named."""
        parameters = dict(self.named_parameters())
        vectors = {name for name, parameter in parameters.items() if parameter.ndim <= 1}
        return ({"position_embedding", "class_token"} & parameters.keys()) | vectors

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"expected images of shape [B, {self.in_channels}, {self.image_size}, {self.image_size}], "
                f"got {list(x.shape)}: resize the input to {self.image_size} px (data transforms), or build "
                f"the model with image_size={x.shape[-1] if x.ndim == 4 else '...'} (position embeddings "
                f"are resized when loading weights)."
            )

    def patch_tokens(self, x: Tensor) -> Tensor:
        """The x_p E of eq. 1: one embedding per patch, ``[B, N, D]`` (what masked patch prediction
        corrupts)."""
        self._check_input(x)
        if self.stem is not None:
            x = self.stem(x)
        return self.patch_embedding(x)

    def add_class_and_position(self, patches: Tensor) -> Tensor:
        """The rest of eq. 1: the class token prepended, position embeddings added: ``[B, N+1, D]``."""
        class_token = self.class_token.expand(patches.shape[0], -1, -1)  # [B, 1, D]
        z = torch.cat([class_token, patches], dim=1) + self.position_embedding  # [B, N+1, D]
        return self.embedding_dropout(z)

    def embed(self, x: Tensor) -> Tensor:
        """Eq. 1: patch embeddings with the class token prepended, plus position embeddings."""
        return self.add_class_and_position(self.patch_tokens(x))

    def encode_tokens(self, z: Tensor) -> Tensor:
        """Eqs. 2-3 over embedded tokens, then the final LayerNorm: ``[B, N+1, D]``."""
        for block in self.blocks:
            z = block(z)
        return self.norm(z)

    def encode_images(self, x: Tensor) -> Tensor:
        """All tokens after the encoder and its final LayerNorm: ``[B, N+1, D]``."""
        return self.encode_tokens(self.embed(x))

    def pooling_weights(self, tokens: Tensor) -> Tensor:
        """Sequence pooling's weights over the patch tokens, ``[B, N]``, summing to 1 per image."""
        assert self.pool_scorer is not None, "pooling_weights needs pooling='seq'"
        return self.pool_scorer(tokens[:, 1:]).squeeze(-1).softmax(dim=-1)

    def pool(self, tokens: Tensor) -> Tensor:
        """Eq. 4 takes the class token's output; ``avg`` averages the patch tokens instead and ``seq``
        weights them by a learned score (CCT)."""
        if self.pooling == "token":
            return tokens[:, 0]
        if self.pooling == "avg":
            return tokens[:, 1:].mean(dim=1)
        return torch.einsum("bn,bnd->bd", self.pooling_weights(tokens), tokens[:, 1:])

    def forward_features(self, x: Tensor) -> Tensor:
        """The backbone: images ``[B, C, H, W]`` -> image representation ``y`` ``[B, D]``."""
        return self.pool(self.encode_images(x))

    def forward_head(self, features: Tensor) -> Tensor:
        """The classifier: ``[B, D]`` -> logits ``[B, num_classes]``."""
        return self.head(self.pre_logits(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """Per-layer attention probabilities, each ``[B, heads, N+1, N+1]``, for visualisation."""
        z = self.embed(x)
        maps = []
        for block in self.blocks:
            maps.append(block.attention.attention_probabilities(block.norm1(z)))
            z = block(z)
        return maps

    def reset_classifier(self, num_classes: int) -> None:
        """Drop the pre-training head (and its tanh layer) for a zero-initialised D x K layer, as the
        paper does for fine-tuning (section 3.2)."""
        self.num_classes = num_classes
        self.pre_logits = nn.Identity()
        self.head = nn.Linear(self.dim, num_classes) if num_classes else nn.Identity()
        if num_classes:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.head.to(self.class_token.device)
