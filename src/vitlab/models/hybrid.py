"""The paper's hybrid (section 3.1): a BiT ResNet's feature map, cut into 1x1 patches, feeds the ViT.

Dosovitskiy et al. (2020), section 4.1 ("Model variants"), build the CNN as "ResNet (BiT)": ResNet-50
with Group Normalization instead of Batch Normalization and standardized convolutions (Kolesnikov et
al. 2020, "Big Transfer (BiT)"; Qiao et al. 2019, weight standardisation). For a hybrid they either
(i) take the output of stage 4 (stride 32: R50+ViT-L/32 here, stages (3, 4, 6, 3)), or (ii) remove
stage 4 and put its blocks into stage 3 (stride 16: R50+ViT-B/16, stages (3, 4, 9)), a 4x longer
sequence. The block is the post-activation bottleneck of ResNet v1.5 (stride on the 3x3 conv).

Padding is TensorFlow's "SAME" (output = ceil(input / stride), the odd pixel on the bottom/right), as
in the original JAX code; PyTorch's symmetric padding would shift every strided layer by a pixel.
The weights of the original ``R50+ViT-B_16.npz`` and timm's ``vit_base_r50_s16_*`` /
``vit_large_r50_s32_*`` load into this module (``weights.py``) with the same outputs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

# timm's StdConv2dSame for these models uses eps=1e-8 inside the square root; the JAX original divides
# by (std + eps). Either way the weights' own spread dominates.
WS_EPS = 1e-8
GROUPS = 32  # GroupNorm groups, BiT's choice
WIDTHS = (256, 512, 1024, 2048)  # output channels of ResNet-50's stages (bottleneck width x 4)


def pad_same(x: Tensor, kernel_size: int, stride: int, value: float = 0.0) -> Tensor:
    """Pad ``[B, C, H, W]`` for TF "SAME": ceil(size / stride) outputs, extra padding at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardisation (each output filter to zero mean, unit variance) and
    TF "SAME" padding, without bias (a GroupNorm follows every one)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        w = (w - mean) / (var + WS_EPS).sqrt()
        return F.conv2d(pad_same(x, self.kernel_size[0], self.stride[0]), w, None, self.stride)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions with GroupNorm, ReLU after the residual sum; the
    first unit of a stage projects the shortcut (``downsample``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        mid = out_channels // 4
        self.downsample: nn.Module = (
            nn.Identity()
            if in_channels == out_channels and stride == 1
            else nn.Sequential(
                OrderedDict(
                    conv=StdConv2d(in_channels, out_channels, 1, stride),
                    norm=nn.GroupNorm(GROUPS, out_channels),
                )
            )
        )
        self.conv1, self.norm1 = StdConv2d(in_channels, mid, 1), nn.GroupNorm(GROUPS, mid)
        self.conv2, self.norm2 = StdConv2d(mid, mid, 3, stride), nn.GroupNorm(GROUPS, mid)
        self.conv3, self.norm3 = StdConv2d(mid, out_channels, 1), nn.GroupNorm(GROUPS, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + self.downsample(x))


class Stage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                Bottleneck(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class Root(nn.Module):
    """The ResNet root: 7x7/2 standardised convolution, GroupNorm, ReLU, 3x3/2 max-pool ("SAME")."""

    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        self.conv = StdConv2d(in_channels, channels, 7, stride=2)
        self.norm = nn.GroupNorm(GROUPS, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(pad_same(x, 3, 2, value=-math.inf), 3, 2)


class BiTResNet(nn.Module):
    """ResNet (BiT) feature extractor: ``[B, C, H, W]`` -> ``[B, out_channels, H/stride, W/stride]``.

    ``stages`` are the block counts; stage 1 keeps the root's stride 4, each later one halves.
    """

    def __init__(self, stages: Sequence[int], in_channels: int = 3) -> None:
        super().__init__()
        if not 1 <= len(stages) <= len(WIDTHS) or min(stages) < 1:
            raise ValueError(
                f"stages={tuple(stages)}: give 1 to {len(WIDTHS)} positive block counts, e.g. (3, 4, 9)."
            )
        self.stage_depths = tuple(stages)
        self.stride = 4 * 2 ** (len(stages) - 1)
        self.out_channels = WIDTHS[len(stages) - 1]
        self.root = Root(in_channels)
        channels = [64, *WIDTHS]
        self.stages = nn.Sequential(
            *(
                Stage(channels[i], channels[i + 1], depth, stride=1 if i == 0 else 2)
                for i, depth in enumerate(stages)
            )
        )
        self.reset_parameters()
        self.register_load_state_dict_pre_hook(_reject_torchvision_stem)

    def reset_parameters(self) -> None:
        """He-normal convolutions (standardisation makes their scale irrelevant to the output), GroupNorm
        1 / 0, as timm's ResNetV2."""
        for module in self.modules():
            if isinstance(module, StdConv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.root(x))


OLD_STEM_MESSAGE = (
    "holds the old r50_vit_b16, whose stem was torchvision's ResNet-50 (BatchNorm, 6 blocks in stage 3); "
    "r50_vit_b16 is now the paper's BiT ResNet (GroupNorm, standardised convolutions, 9 blocks in stage 3) "
    "and those weights cannot fit it: retrain, or start from R50+ViT-B_16.npz or timm:vit_base_r50_s16_224."
)


def reject_torchvision_stem(
    state_dict: Mapping[str, object], source: str, stem_prefix: str = "stem."
) -> None:
    """One clear error for weights of the torchvision-stem hybrid vitlab built before the BiT stem."""
    if any(key.startswith(f"{stem_prefix}layers.") for key in state_dict):
        raise ValueError(f"{source} {OLD_STEM_MESSAGE}")


def _reject_torchvision_stem(
    module: nn.Module, state_dict: Mapping[str, object], prefix: str, *_: object
) -> None:
    # A load_state_dict pre-hook: a Lightning checkpoint of the old hybrid stops here, named.
    reject_torchvision_stem(state_dict, "the checkpoint", stem_prefix=prefix)
