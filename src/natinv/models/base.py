"""A classifier as stem -> stages -> head, so every model can hand out its stage feature maps.

A stage is the group of layers at one spatial resolution; its output is the feature map at a downsampling
point (ResNet: each residual layer's output; VGG: each pooling output, as in the paper's appendix).
"""
from __future__ import annotations

import torch
from torch import nn


class StagedNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: list[nn.Module], head_channels: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_channels, num_classes)

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Stage feature maps (low to high level) and the logits."""
        feats = []
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats, self.fc(torch.flatten(self.pool(h), 1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (the pooled last stage)."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return torch.flatten(self.pool(h), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    @torch.no_grad()
    def stage_shapes(self, in_channels: int, image_size: int) -> list[tuple[int, int, int]]:
        """(C, H, W) of every stage output for an input of the given size."""
        was_training = self.training
        self.eval()
        p = next(self.parameters())
        feats, _ = self.forward_stages(torch.zeros(1, in_channels, image_size, image_size, device=p.device, dtype=p.dtype))
        self.train(was_training)
        return [tuple(f.shape[1:]) for f in feats]


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)
