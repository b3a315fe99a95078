"""MobileNetV2 for 32x32 inputs (stride 1 in the stem and the second block group, as in CIFAR ports).

Stages are split where the resolution halves; the final 1x1 conv belongs to the last stage.
"""
from __future__ import annotations

import torch
from torch import nn

from natinv.models.base import StagedNet, conv_bn

# (expansion t, output channels c, repeats n, first stride s)
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: int | None = None) -> StagedNet:
    scale = (width or 32) / 32  # width = stem channels; 32 is the standard network

    def ch(c: int) -> int:  # channels scaled, rounded to a multiple of 8
        return max(8, round(c * scale / 8) * 8)

    stem_c = ch(32)
    stages: list[list[nn.Module]] = [[]]
    cin = stem_c
    for t, c, n, s in _SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            if stride == 2:
                stages.append([])
            stages[-1].append(InvertedResidual(cin, ch(c), stride, t))
            cin = ch(c)
    last = max(1280, ch(1280)) if scale > 1 else 1280
    stages[-1].append(conv_bn(cin, last, 1, act=nn.ReLU6))
    return StagedNet(conv_bn(in_channels, stem_c, 3, act=nn.ReLU6), [nn.Sequential(*s) for s in stages], last, num_classes)
