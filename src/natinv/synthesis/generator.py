"""The NaturalInversion generator G(z|y) (paper Table 6), with a width setting."""
from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, num_classes: int, out_channels: int, image_size: int, latent_dim: int = 1024, width: int = 128):
        super().__init__()
        self.num_classes, self.latent_dim = num_classes, latent_dim
        self.init_size = image_size // 4
        self.width = width
        self.fc = nn.Linear(latent_dim + num_classes, width * self.init_size**2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(width), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, 1, 1), nn.BatchNorm2d(width // 2), nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, out_channels, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(y, self.num_classes).to(z.dtype)
        h = self.fc(torch.cat([z, onehot], dim=1)).view(len(z), self.width, self.init_size, self.init_size)
        return self.body(h)
