"""The inversion objective shared by every method (paper Eq. 8) and the optimization loop around it.

loss = CE(T(jitter(I)), y) + lambda_BN * R_BN + lambda_TV * TV(I) + lambda_l2 * ||I||_2 [+ ADI's competition term]
The loop keeps the batch of the lowest-loss iteration, on the device, without a host sync per iteration.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from natinv.config import DIConfig, NIConfig
from natinv.models import StagedNet
from natinv.synthesis.bn_stats import BNStatsLoss
from natinv.synthesis.competition import Competitor
from natinv.synthesis.priors import jitter_flip, l2_prior, tv_prior

TERMS = ("total", "ce", "bn", "tv", "l2", "competition")  # competition: weighted ADI term, 0 without a competitor


@dataclass
class LossWeights:
    bn: float
    tv: float
    l2: float
    jitter: int = 2
    flip: bool = True

    @classmethod
    def of(cls, method: NIConfig | DIConfig) -> LossWeights:
        """The weights and augmentation a method's config asks for (every method shares these keys)."""
        return cls(method.lambda_bn, method.lambda_tv, method.lambda_l2, method.jitter, method.flip)


@dataclass
class BatchResult:
    images: torch.Tensor  # (B, C, H, W) float32, normalized space: what the teacher saw at the best iteration
    labels: torch.Tensor  # (B,) int64
    curve: torch.Tensor  # (iterations, len(TERMS)) float32
    best_iteration: int
    seed: int


class InversionObjective:
    """Frozen teacher + BN hooks; call it on an image batch to get (total loss, per-term values)."""

    def __init__(self, teacher: StagedNet, weights: LossWeights, competitor: Competitor | None = None,
                 channels_last: bool = False):
        """channels_last: run the teacher passes in that memory layout (the same values up to float rounding)."""
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.teacher = teacher.eval().requires_grad_(False).to(memory_format=self.layout)
        self.weights = weights
        self.bn = BNStatsLoss(teacher)
        self.competitor = competitor

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        seen = jitter_flip(images, gen, w.jitter, w.flip)
        with self.bn.capture():
            logits = self.teacher(seen.contiguous(memory_format=self.layout))
        ce = F.cross_entropy(logits.float(), labels)
        bn, tv, l2 = self.bn.loss(), tv_prior(images), l2_prior(images)
        total = ce + w.bn * bn + w.tv * tv + w.l2 * l2
        if self.competitor is None:
            competition = torch.zeros_like(ce)  # logged as 0; nothing added to the loss
        else:
            competition = self.competitor(seen, logits)
            total = total + competition
        return total, torch.stack([total, ce, bn, tv, l2, competition]).detach()

    @torch.no_grad()
    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Teacher stage features without gradient and without touching the BN loss (the FTP's input)."""
        return self.teacher.forward_stages(images.contiguous(memory_format=self.layout))[0]

    def close(self) -> None:
        self.bn.remove()


def optimize(
    make_images: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    objective: InversionObjective,
    labels: torch.Tensor,
    iterations: int,
    gen: torch.Generator,
    after_step: Callable[[], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run the inversion; returns (best images, loss curve, best iteration). `on_step(it)` is called after every
    optimizer step (the speed benchmark times iterations with it)."""
    curve = torch.empty(iterations, len(TERMS), device=labels.device)
    best_loss = torch.full((), float("inf"), device=labels.device)
    best_iter = torch.zeros((), dtype=torch.long, device=labels.device)
    best = None
    for it in range(iterations):
        images = make_images()
        total, terms = objective(images, labels, gen)
        # keep the images this loss belongs to before the step changes them (DI optimizes them in place)
        curve[it] = terms
        better = terms[0] < best_loss
        detached = images.detach()
        best = detached.clone() if best is None else torch.where(better, detached, best)
        best_loss = torch.where(better, terms[0], best_loss)
        best_iter = torch.where(better, torch.full_like(best_iter, it), best_iter)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        if on_step is not None:
            on_step(it)
    return best, curve.cpu(), int(best_iter)
