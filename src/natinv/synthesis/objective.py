"""The inversion objective shared by every method (paper Eq. 8) and the optimization loop around it.

loss = CE(T(J(I)), y) + lambda_BN * R_BN + lambda_TV * TV(J(I)) + lambda_l2 * ||J(I)||_2 [+ ADI's competition term]
J is the random roll (and flip) before the teacher; the priors may also be taken on I itself (`priors_on: clean`).
The loop keeps the batch of the lowest-loss iteration, on the device, without a host sync per iteration.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from natinv.config import DIConfig, EngineConfig, NIConfig
from natinv.models import StagedNet
from natinv.synthesis.bn_stats import BNStatsLoss
from natinv.synthesis.competition import Competitor
from natinv.synthesis.priors import GroupJitter, JitterDraws, l2_prior, tv_prior
from natinv.train import autocast, widened

TERMS = ("total", "ce", "bn", "tv", "l2", "competition")  # competition: weighted ADI term, 0 without a competitor


@dataclass
class LossWeights:
    bn: float
    tv: float
    l2: float
    jitter: int = 2
    flip: bool = True
    priors_on: str = "jittered"  # TV and l2 on the image the teacher sees (jittered) or on the image itself (clean)

    @classmethod
    def of(cls, method: NIConfig | DIConfig) -> LossWeights:
        """The weights and augmentation a method's config asks for (every method shares these keys)."""
        return cls(method.lambda_bn, method.lambda_tv, method.lambda_l2, method.jitter, method.flip, method.priors_on)


@dataclass
class BatchResult:
    images: torch.Tensor  # (B, C, H, W) float32, normalized space: what the teacher saw at the best iteration
    labels: torch.Tensor  # (B,) int64
    curve: torch.Tensor  # (iterations, len(TERMS)) float32
    best_iteration: int
    seed: int


@dataclass
class Carry:
    """What passes from one batch of a shard to the next besides its images: one-to-many's shared generator and FTP,
    or ni-fast's meta-parameters (`module`, set by the method when it makes it; None when every batch starts afresh).
    A resumed shard's saved state of it (`saved`) is loaded into the module when the method adopts it."""

    module: nn.Module | None = None
    saved: dict | None = None

    def adopt(self, module: nn.Module) -> nn.Module:
        if self.saved is not None:
            module.load_state_dict(self.saved)
            self.saved = None
        self.module = module
        return module

    def state(self) -> dict | None:
        return None if self.module is None else {k: v.clone() for k, v in self.module.state_dict().items()}


class InversionObjective:
    """Frozen teacher + BN hooks; call it on a group of image batches to get per-batch (total loss, per-term values).

    Several independent batches can share one teacher pass: `sizes` splits the images, and BN statistics, CE and
    the priors are taken per batch, so each batch's loss (and gradient) is the one it would have alone."""

    def __init__(self, teacher: StagedNet, weights: LossWeights, competitor: Competitor | None = None,
                 engine: EngineConfig = EngineConfig()):
        self.engine = engine
        self.layout = torch.channels_last if engine.channels_last else torch.contiguous_format
        self.teacher = teacher.eval().requires_grad_(False).to(memory_format=self.layout)
        self.weights = weights
        self.bn = BNStatsLoss(teacher)
        self.competitor = competitor
        self._forward, self._forward_stages = self.teacher, self.teacher.forward_stages
        if engine.compile:
            self._forward, self._forward_stages = torch.compile(self.teacher), torch.compile(self.teacher.forward_stages)

    def autocast(self, device: torch.device):
        """engine.autocast's context on `device` (bfloat16, or nothing)."""
        return autocast(device, self.engine.autocast, cache=not self.engine.capture)

    def draws(self, gens: list[torch.Generator]) -> GroupJitter:
        """The rolls and flips of a group's batches, each from its own generator, with this objective's jitter and flip."""
        return GroupJitter([JitterDraws(gen, self.weights.jitter, self.weights.flip) for gen in gens])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, draws: GroupJitter,
                 sizes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """images: the batches of a group, concatenated; draws: each batch's rolls and flips (`draws`); sizes: the
        batch sizes (None: one batch). Returns (total loss per batch (K,), per-term values (K, len(TERMS)), detached)."""
        w = self.weights
        sizes = sizes or [len(images)]
        seen = draws(images, sizes)
        with self.bn.capture(sizes), self.autocast(images.device):
            logits = self._forward(seen.contiguous(memory_format=self.layout))
        bn = self.bn.loss()
        # every term per batch, for all batches of the group at once (per_batch)
        ce = per_batch(lambda v, k: v.reshape(k, -1).mean(1), F.cross_entropy(widened(logits), labels, reduction="none"), sizes)
        prior_x = seen if w.priors_on == "jittered" else images
        tv, l2 = per_batch(tv_prior, prior_x, sizes), per_batch(l2_prior, prior_x, sizes)
        total = ce + w.bn * bn + w.tv * tv + w.l2 * l2
        if self.competitor is None:
            competition = torch.zeros_like(ce)  # logged as 0; nothing added to the loss
        else:
            with self.autocast(images.device):
                competition = torch.stack([self.competitor(x, logit)
                                           for x, logit in zip(split_batches(seen, sizes), split_batches(logits, sizes))])
            total = total + competition
        return total, torch.stack([total, ce, bn, tv, l2, competition], dim=1).detach()

    @torch.no_grad()
    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Teacher stage features without gradient and without touching the BN loss (the FTP's input)."""
        with self.autocast(images.device):
            feats = self._forward_stages(images.contiguous(memory_format=self.layout))[0]
        return [f.to(images.dtype) for f in feats]  # autocast's bfloat16 features in the images' precision

    def close(self) -> None:
        self.bn.remove()


def per_batch(fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """fn(x, K) of a group of batches (x: the K batches stacked along axis 0, `sizes` long) as shape (K,): one call for
    all when the batches are the same size, else one per batch."""
    if len(set(sizes)) == 1:
        return fn(x, len(sizes)).reshape(len(sizes))
    return torch.cat([fn(part, 1).reshape(1) for part in torch.split(x, sizes)])


def split_batches(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The batches of a group along dim 0 (views); one batch is x itself."""
    return [x] if len(sizes) == 1 else list(torch.split(x, sizes))


def concat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The batches of a group as one tensor (one batch: itself, not a copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def chunks(items: list, size: int) -> list[list]:
    """Consecutive groups of `size` items (the last may be shorter)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def optimize(
    make_images: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    objective: InversionObjective,
    labels: torch.Tensor,
    iterations: int,
    draws: GroupJitter,
    after_step: Callable[[], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    sizes: list[int] | None = None,
    generators: tuple[torch.Generator, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Run the inversion of a group of batches (`sizes`; None: one batch; `draws`: their rolls and flips); returns
    (best images, loss curves (iterations, batches, len(TERMS)), best iteration per batch): each batch keeps its
    own lowest-loss iteration. `on_step(it)` is called after every optimizer step (the speed benchmark times
    iterations with it). With engine.capture the iterations after a few eager ones replay one captured iteration
    (natinv.synthesis.capture; `generators`: the device generators make_images draws from, which the graph advances)."""
    sizes = sizes or [len(labels)]
    device = labels.device
    curve = torch.empty(iterations, len(sizes), len(TERMS), device=device)
    rows = torch.arange(iterations, device=device).view(-1, 1, 1)  # a static iteration's row of the curve: rows == it
    lowest = Lowest(sizes, device)

    def step(it: int | torch.Tensor) -> None:
        """Iteration `it` (a number, or a (1,) device counter in a static iteration)."""
        with objective.autocast(device):  # the generator, FTP and ACS (NI); the losses are float32 (widened)
            images = widened(make_images())
        totals, terms = objective(images, labels, draws, sizes)
        # keep the images this loss belongs to before the step changes them (DI optimizes them in place)
        if isinstance(it, int):
            curve[it] = terms
        else:  # an elementwise select, not an indexed write: no index kernel that a deterministic mode may sync in
            torch.where(rows == it, terms, curve, out=curve)
        lowest.keep(images.detach(), terms[:, 0], it)
        optimizer.zero_grad(set_to_none=True)
        totals.sum().backward()  # the batches share no parameters: each gets its own loss's gradient
        optimizer.step()
        if after_step is not None:
            after_step()

    if objective.engine.capture:
        from natinv.synthesis.capture import run_captured

        run_captured(step, draws, iterations, on_step, device, generators)
    else:
        for it in range(iterations):
            step(it)
            if on_step is not None:
                on_step(it)
    return lowest.images, curve.cpu(), lowest.iteration.tolist()


class Lowest:
    """Each batch's lowest-loss iteration so far and the images it had, on the device, updated in place (a static
    iteration writes into the same memory every time) without reading anything back."""

    def __init__(self, sizes: list[int], device: torch.device):
        self.loss = torch.full((len(sizes),), float("inf"), device=device)
        self.iteration = torch.zeros(len(sizes), dtype=torch.long, device=device)
        self.owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)  # each image's batch
        self.images: torch.Tensor | None = None

    def keep(self, images: torch.Tensor, loss: torch.Tensor, it: int | torch.Tensor) -> None:
        """Iteration `it`'s images and per-batch losses: kept where they are lower than every earlier one's."""
        better = loss < self.loss
        if self.images is None:
            self.images = images.clone()
        else:
            torch.where(better[self.owner].view(-1, 1, 1, 1), images, self.images, out=self.images)
        torch.where(better, loss, self.loss, out=self.loss)
        torch.where(better, torch.full_like(self.iteration, it) if isinstance(it, int) else it, self.iteration,
                    out=self.iteration)
