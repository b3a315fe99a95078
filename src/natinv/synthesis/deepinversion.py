"""DeepInversion: the inversion objective optimized directly on the pixels (Yin et al. 2020, CIFAR settings)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from natinv.config import DIConfig
from natinv.synthesis.objective import BatchResult, InversionObjective, optimize


def synthesize(
    objective: InversionObjective,
    batches: list[tuple[torch.Tensor, int]],
    cfg: DIConfig,
    num_classes: int,
    shape: tuple[int, int, int],
    device: torch.device,
    pixel_range: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Iterator[BatchResult]:
    for labels, seed in batches:
        gen = torch.Generator().manual_seed(seed)
        pixels = torch.randn(len(labels), *shape, generator=gen).to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([pixels], lr=cfg.lr)
        after_step = None
        if cfg.clamp and pixel_range is not None:
            lo, hi = pixel_range

            def after_step():
                with torch.no_grad():
                    pixels.copy_(torch.maximum(torch.minimum(pixels, hi), lo))
        best, curve, best_iter = optimize(lambda: pixels, optimizer, objective, labels.to(device), cfg.iterations, gen, after_step, on_step)
        yield BatchResult(best, labels, curve, best_iter, seed)
