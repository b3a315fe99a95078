"""DeepInversion: the inversion objective optimized directly on the pixels (Yin et al. 2020, CIFAR settings)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from natinv.config import DIConfig
from natinv.synthesis.objective import BatchResult, InversionObjective, chunks, concat, optimize, split_batches
from natinv.train import adam


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
    """One BatchResult per batch, in order; objective.engine.batches_per_step batches advance together."""
    for group in chunks(batches, objective.engine.batches_per_step):
        gens = [torch.Generator().manual_seed(seed) for _, seed in group]
        # the group's pixels as one tensor (Adam's update is per element: the batches stay independent)
        pixels = concat([torch.randn(len(labels), *shape, generator=gen) for (labels, _), gen in zip(group, gens)])
        pixels = pixels.to(device).requires_grad_(True)
        optimizer = adam([pixels], lr=cfg.lr, capturable=objective.engine.capture)
        after_step = _clamp([pixels], *pixel_range) if cfg.clamp and pixel_range is not None else None
        sizes = [len(labels) for labels, _ in group]
        y = concat([labels for labels, _ in group]).to(device)
        best, curve, best_iters = optimize(lambda: pixels, optimizer, objective, y, cfg.iterations, objective.draws(gens),
                                           after_step, on_step, sizes)
        for k, (images, (labels, seed)) in enumerate(zip(split_batches(best, sizes), group)):
            yield BatchResult(images, labels, curve[:, k], best_iters[k], seed)


def _clamp(pixels: list[torch.Tensor], lo: torch.Tensor, hi: torch.Tensor) -> Callable[[], None]:
    """After each step: the pixels back into [lo, hi] (the valid image range, in normalized space)."""
    def clamp() -> None:
        with torch.no_grad():
            for p in pixels:
                p.copy_(torch.maximum(torch.minimum(p, hi), lo))
    return clamp


def run_shard(job):
    """One shard of DeepInversion (natinv.synthesis.shard.ShardJob -> ShardImages); pixels may be clamped to the valid
    [0, 1] range, in normalized space."""
    from natinv.data import pixel_range
    from natinv.synthesis.inversion import run_batches

    valid = pixel_range(job.meta.mean, job.meta.std, job.device)
    return run_batches(job, lambda objective, batches, carry: synthesize(
        objective, batches, job.method, job.meta.num_classes, job.shape, job.device, valid, job.on_step))
