"""NaturalInversion (paper Alg. 1): I = alpha * tanh(W1(G(z|y) + m_L)), m_L = FTP(teacher stage features).

One-to-one (o2o): generator, FTP and alpha are re-initialized for every batch. With o2o off, one generator
and FTP serve all batches of a shard (alpha and z stay per batch), the paper's one-to-many ablation.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from natinv.config import NIConfig
from natinv.errors import ConfigError
from natinv.synthesis.ftp import FeatureTransferPyramid
from natinv.synthesis.generator import Generator
from natinv.synthesis.objective import BatchResult, InversionObjective, optimize


class NaturalInversionImage(nn.Module):
    """Generator + FTP + output head; alpha (ACS) is kept outside so a shared generator can have per-batch alphas."""

    def __init__(self, cfg: NIConfig, num_classes: int, shape: tuple[int, int, int], stage_shapes: list[tuple[int, int, int]]):
        super().__init__()
        channels, size, _ = shape
        self.generator = Generator(num_classes, channels, size, cfg.latent_dim, cfg.generator_width)
        self.stages = [s - 1 for s in cfg.ftp_stages] if cfg.ftp_stages else list(range(len(stage_shapes)))
        self.ftp = FeatureTransferPyramid([stage_shapes[i] for i in self.stages], channels, size) if cfg.ftp else None
        self.head = nn.Conv2d(channels, channels, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, objective: InversionObjective) -> torch.Tensor:
        x = self.generator(z, y)
        if self.ftp is not None:
            feats = objective.stage_features(x)
            x = x + self.ftp([feats[i] for i in self.stages])
        return alpha * torch.tanh(self.head(x))


def synthesize(
    objective: InversionObjective,
    batches: list[tuple[torch.Tensor, int]],
    cfg: NIConfig,
    num_classes: int,
    shape: tuple[int, int, int],
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
) -> Iterator[BatchResult]:
    stage_shapes = objective.teacher.stage_shapes(shape[0], shape[1])
    if cfg.ftp_stages and max(cfg.ftp_stages) > len(stage_shapes):
        raise ConfigError(f"ftp_stages = {cfg.ftp_stages}: the teacher has {len(stage_shapes)} stages (1..{len(stage_shapes)})")
    shared = None
    for labels, seed in batches:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if cfg.o2o or shared is None:
                shared = NaturalInversionImage(cfg, num_classes, shape, stage_shapes)
            model = shared
            z = torch.randn(len(labels), cfg.latent_dim)
            alpha0 = torch.randn(len(labels), shape[0], 1, 1) * cfg.alpha_std + cfg.alpha_mean
        model.to(device).train()
        z, y = z.to(device), labels.to(device)
        alpha = nn.Parameter(alpha0.to(device)) if cfg.acs else torch.ones_like(alpha0, device=device)
        groups = [{"params": model.generator.parameters(), "lr": cfg.lr_generator},
                  {"params": model.head.parameters(), "lr": cfg.lr_generator}]
        if model.ftp is not None:
            groups.append({"params": model.ftp.parameters(), "lr": cfg.lr_ftp})
        if cfg.acs:
            groups.append({"params": [alpha], "lr": cfg.lr_alpha})
        optimizer = torch.optim.Adam(groups)
        gen = torch.Generator().manual_seed(seed)
        if not cfg.o2o:  # one-to-many: a fresh z every iteration, the generator carries over
            def make_images():
                return model(torch.randn(len(y), cfg.latent_dim, generator=gen).to(device), y, alpha, objective)
        else:
            def make_images():
                return model(z, y, alpha, objective)
        best, curve, best_iter = optimize(make_images, optimizer, objective, y, cfg.iterations, gen, on_step=on_step)
        yield BatchResult(best, labels, curve, best_iter, seed)
