"""The parser network: FSErasing's U-Net with a ResNet-18 encoder.

Module and parameter names follow the published ``UNet_res18`` (gsisaoki/FSErasing,
``models/unet.py``) so that its released checkpoint loads unchanged; the code is our own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

from fse_plugin.labels import NUM_CLASSES
from fse_plugin.parsing.widths import DEFAULT_FEATURE_SCALE, parser_widths

__all__ = ["DoubleConv", "UpBlock", "UNetRes18"]

class DoubleConv(nn.Module):
    """Two 3x3 conv+BN+ReLU (the ``unetConv2`` the published code imports but never defines)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1),
                                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, 1),
                                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpBlock(nn.Module):
    """Decoder step: 2x transposed conv, pad to the skip's size, concat [skip, up], DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        x = F.pad(x, [0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]])
        return self.conv(torch.cat([skip, x], 1))


def _stage(cin: int, cout: int) -> nn.Sequential:
    down = nn.Sequential(conv1x1(cin, cout, stride=2), nn.BatchNorm2d(cout))
    return nn.Sequential(BasicBlock(cin, cout, stride=2, downsample=down), BasicBlock(cout, cout))


class UNetRes18(nn.Module):
    """U-Net whose encoder is ResNet-18-like, logits at input resolution.

    Input: aligned faces normalised to [-1, 1] (``common.to_input``). Stem 3x3 stride-1 conv+BN+ReLU
    (no 7x7, no max-pool: 112x112 faces are small), four stages of two BasicBlocks (stride 2 first,
    1x1 conv+BN downsample), widths ``[64, 128, 256, 512, 1024] / feature_scale``, four decoder
    steps (2x transposed conv, concat with the skip, DoubleConv) and a 1x1 head. Attribute names
    match the published ``UNet_res18`` so its state_dict loads unchanged.
    """

    def __init__(self, n_classes: int = NUM_CLASSES, feature_scale: int = DEFAULT_FEATURE_SCALE,
                 in_channels: int = 3) -> None:
        super().__init__()
        w = parser_widths(feature_scale)
        self.n_classes, self.feature_scale = int(n_classes), int(feature_scale)
        self.in_channels = int(in_channels)
        self.conv0 = nn.Sequential(conv3x3(in_channels, w[0]), nn.BatchNorm2d(w[0]),
                                   nn.ReLU(inplace=True))
        self.conv1 = _stage(w[0], w[1])
        self.conv2 = _stage(w[1], w[2])
        self.conv3 = _stage(w[2], w[3])
        self.conv4 = _stage(w[3], w[4])
        self.up_concat4 = UpBlock(w[4], w[3])
        self.up_concat3 = UpBlock(w[3], w[2])
        self.up_concat2 = UpBlock(w[2], w[1])
        self.up_concat1 = UpBlock(w[1], w[0])
        self.final = nn.Conv2d(w[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0 = self.conv0(x)
        c1 = self.conv1(c0)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        x = self.up_concat4(c3, c4)
        x = self.up_concat3(c2, x)
        x = self.up_concat2(c1, x)
        x = self.up_concat1(c0, x)
        return self.final(x)

    def extra_repr(self) -> str:
        return (f"n_classes={self.n_classes}, feature_scale={self.feature_scale}, "
                f"in_channels={self.in_channels}")

