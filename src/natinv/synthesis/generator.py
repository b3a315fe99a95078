"""The image generator: NaturalInversion's G(z|y) (paper Table 6), and unconditional with a normalized output for DAFL
and DFAD (their CIFAR generator: the same layers, then tanh and a BatchNorm without affine parameters)."""
from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """z (and a one-hot y when num_classes > 0) -> linear -> BN, up x2, conv-BN-LReLU, up x2, conv-BN-LReLU -> conv.

    normalize_output: end with tanh and BatchNorm2d(affine=False) (DAFL, DFAD), so the images come out with zero mean
    and unit variance per channel, the teacher's normalized input space. DAFL's code builds its BatchNorms with
    `BatchNorm2d(c, 0.8)`, which sets eps = 0.8 (meant as a momentum, we take it); we keep the default eps.
    DAFL and DFAD have no LeakyReLU after the first BatchNorm; the paper's Table 6 has one, and we keep it for all."""

    def __init__(self, num_classes: int, out_channels: int, image_size: int, latent_dim: int = 1024, width: int = 128,
                 normalize_output: bool = False):
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
            *([nn.Tanh(), nn.BatchNorm2d(out_channels, affine=False)] if normalize_output else []),
        )

    def official_init(self) -> Generator:
        """The official NaturalInversion code's initialization: Kaiming-normal conv weights, zero conv biases, BN weights
        ~ N(1, 0.02) and zero BN biases; the linear layer keeps PyTorch's. The output's std at init is about twice
        PyTorch's default."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        return self

    @classmethod
    def unconditional(cls, shape: tuple[int, int, int], latent_dim: int, width: int, device: torch.device) -> Generator:
        """DAFL's / DFAD's generator for images of `shape` (C, H, W), in training mode on `device`."""
        return cls(0, shape[0], shape[1], latent_dim, width, normalize_output=True).to(device).train()

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n images of an unconditional generator from fresh z ~ N(0, I) drawn with `gen`, on gen's device (the
        generator's own: no copy from the host per batch)."""
        return self(torch.randn(n, self.latent_dim, generator=gen, device=gen.device).to(self.fc.weight.device))

    def conditioned(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The linear layer's input: z, then the one-hot y of a conditional generator (by scatter: one_hot checks the
        labels' range with a read back to the host)."""
        if not self.num_classes:
            return z
        onehot = torch.zeros(len(y), self.num_classes, dtype=z.dtype, device=z.device).scatter_(1, y.unsqueeze(1), 1.0)
        return torch.cat([z, onehot], dim=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = self.conditioned(z, y)
        h = self.fc(z).view(len(z), self.width, self.init_size, self.init_size)
        return self.body(h)
