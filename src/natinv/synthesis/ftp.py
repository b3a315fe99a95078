"""Feature Transfer Pyramid (paper Eq. 5, Table 7), built from the teacher's stage shapes.

Top-down over the chosen stages f_1..f_N: m_1 = W1(up(f_N)); m_l = W1(up(W3(m_{l-1} + f_{N-l+1}))); the
last block maps to image channels at image resolution. Nearest upsampling commutes with a 1x1 conv, so
the 1x1 conv runs before the upsampling (same result, 4x fewer MACs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureTransferPyramid(nn.Module):
    def __init__(self, stage_shapes: list[tuple[int, int, int]], image_channels: int, image_size: int):
        super().__init__()
        top_down = list(reversed(stage_shapes))
        targets = [*top_down[1:], (image_channels, image_size, image_size)]
        self.sizes = [t[1:] for t in targets]
        self.mix = nn.ModuleList([nn.Identity()] + [nn.Conv2d(c, c, 3, 1, 1) for c, _, _ in top_down[1:]])
        self.proj = nn.ModuleList([nn.Conv2d(src[0], dst[0], 1) for src, dst in zip(top_down, targets)])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """feats: the chosen stage features, low to high level. Returns m_L (B, image_channels, H, W)."""
        m = None
        for mix, proj, size, f in zip(self.mix, self.proj, self.sizes, reversed(feats)):
            h = proj(f if m is None else mix(m + f))
            m = h if tuple(h.shape[-2:]) == tuple(size) else F.interpolate(h, size=size, mode="nearest")
        return m
