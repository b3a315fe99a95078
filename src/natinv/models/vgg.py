"""CIFAR-style VGG with BatchNorm. Stages end at each max-pool, so stage outputs are the pooling outputs."""
from __future__ import annotations

from torch import nn

from natinv.models.base import StagedNet, conv_bn

_CFG = {
    11: [[1], [2], [4, 4], [8, 8], [8, 8]],
    16: [[1, 1], [2, 2], [4, 4, 4], [8, 8, 8], [8, 8, 8]],
}


def vgg(depth: int, width: int, num_classes: int, in_channels: int) -> StagedNet:
    stages, cin = [], in_channels
    for group in _CFG[depth]:
        layers = []
        for mult in group:
            layers.append(conv_bn(cin, width * mult, 3))
            cin = width * mult
        layers.append(nn.MaxPool2d(2))
        stages.append(nn.Sequential(*layers))
    return StagedNet(nn.Identity(), stages, cin, num_classes)


def vgg11(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> StagedNet:
    return vgg(11, width or 64, num_classes, in_channels)


def vgg16(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> StagedNet:
    return vgg(16, width or 64, num_classes, in_channels)
