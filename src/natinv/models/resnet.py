"""CIFAR-style ResNets (3x3 stem, no max-pool): ResNet-8 (small CPU net), ResNet-18, ResNet-34."""
from __future__ import annotations

import torch
from torch import nn

from natinv.models.base import StagedNet, conv_bn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=None)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def resnet(depths: list[int], width: int, num_classes: int, in_channels: int) -> StagedNet:
    widths = [width * 2**i for i in range(len(depths))]
    stages, cin = [], width
    for i, (depth, cout) in enumerate(zip(depths, widths)):
        blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(depth)]
        stages.append(nn.Sequential(*blocks))
        cin = cout
    return StagedNet(conv_bn(in_channels, width, 3), stages, widths[-1], num_classes)


def resnet8(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> StagedNet:
    return resnet([1, 1, 1], width or 16, num_classes, in_channels)


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> StagedNet:
    return resnet([2, 2, 2, 2], width or 64, num_classes, in_channels)


def resnet34(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> StagedNet:
    return resnet([3, 4, 6, 3], width or 64, num_classes, in_channels)
