"""The paper's hybrid architecture (section 3.1): a CNN feature map replaces raw image patches."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet50


class ResNetStem(nn.Module):
    """ResNet-50 up to stage 3 (torchvision's layers): stride 16, 1024 channels.

    The paper's R50 uses group norm and weight standardisation and moves stage 4's blocks into stage
    3; this stem uses torchvision's standard ResNet-50 layers so torchvision's ImageNet weights fit.
    """

    stride = 16
    out_channels = 1024

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        resnet = resnet50(weights=None)
        if in_channels != 3:
            resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.layers = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2, resnet.layer3
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # [B, 1024, H/16, W/16]
