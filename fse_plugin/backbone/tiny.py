"""The built-in ``iresnet_tiny`` (0.06 GFLOP per face): arcface_torch's IResNet layout
(BN-conv-BN-PReLU-conv-BN blocks, BN-dropout-FC-BN head to a 512-d embedding) at a size that trains
on a CPU in minutes (tests, demo)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["IResNetTiny", "iresnet_tiny"]


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.body(x) + identity


class IResNetTiny(nn.Module):
    """IResNet-style backbone for 112x112 faces; ``widths`` and ``blocks`` set its size."""

    def __init__(self, num_features: int = 512, widths: tuple[int, ...] = (8, 16, 32, 64),
                 blocks: tuple[int, ...] = (1, 1, 1, 1), dropout: float = 0.0,
                 input_size: int = 112) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        layers, cin = [], widths[0]
        for w, n in zip(widths, blocks):
            for i in range(n):
                layers.append(IBasicBlock(cin, w, 2 if i == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        self.bn2 = nn.BatchNorm2d(cin)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.layers(self.stem(x)))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


def iresnet_tiny(num_features: int = 512, **kwargs) -> IResNetTiny:
    return IResNetTiny(num_features=num_features, **kwargs)
