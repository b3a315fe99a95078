"""Feature-distribution regularizer (paper Eq. 3): match batch statistics of every BN layer's input
to the layer's running statistics. L2 norms (not squared), biased variance, as in the official code.

Two autograd Functions with their backward written out keep the synthesis hot path's largest share of operators small
(a ResNet-34 has 36 BN layers; the same formula through autograd dispatches about 29 operators per layer per
iteration, benchmarks/README.md, "Operators per synthesis iteration"):
- `LayerMoments`, applied in each BN layer's forward hook: the mean and variance of the K batches of a group in one
  reduction, and back one fused pass a + b * x. It runs in the hook, not after the forward pass, so that autograd
  meets each layer's backward where the layer is and frees its gradient there (all layers' at once would hold a second
  copy of every BN input's size);
- `PaddedNorms`: ||mean - running_mean|| + ||var - running_var|| of every layer in one padded reduction.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from natinv.train import widened


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _groups(x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """x's batches as (k, b, C, ...) views: one view of all K when the batches are equal in size, else one per batch."""
    if len(set(sizes)) == 1:
        return [x.reshape(len(sizes), sizes[0], *x.shape[1:])]
    return [part.unsqueeze(0) for part in torch.split(x, list(sizes))]


def _var_mean(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(biased variance, mean) of a (k, b, C, ...) view over its axes 1, 3, ...: (k, C) each."""
    dims = (1, *range(3, g.dim()))
    mean = g.mean(dims, keepdim=True)
    return (g - mean).square_().mean(dims), mean.view(len(g), -1)


class LayerMoments(torch.autograd.Function):
    """(biased variance, mean) per batch and channel, (K, C) each, of a BN input x holding K batches (`sizes`) along
    axis 0, in float32 (a bfloat16 activation is widened one layer at a time, for the reduction only).

    Forward: two passes per group view, the mean and then the mean of the centred squares (accurate for any offset;
    torch.var_mean's one-pass Welford was 1.7x slower on a CPU at ResNet-34's early layers, 13x at its last).
    Backward: d mean / dx = 1/M and d var / dx = 2 (x - mean) / M fold into one pass over x, a + b * x per batch and
    channel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_var_mean(widened(g)) for g in _groups(x, sizes)]
        var, mean = parts[0] if len(parts) == 1 else (torch.cat([v for v, _ in parts]), torch.cat([m for _, m in parts]))
        ctx.save_for_backward(x, mean)
        ctx.sizes = sizes
        return var, mean

    @staticmethod
    def backward(ctx, grad_var: torch.Tensor, grad_mean: torch.Tensor):
        x, mean = ctx.saved_tensors
        spatial = math.prod(x.shape[2:])
        shape = (1, -1, *[1] * (x.dim() - 2))
        groups = _groups(x, ctx.sizes)
        if len(groups) > 1:  # unequal batches: each its own count
            parts = zip(groups, grad_var.split(1), grad_mean.split(1), mean.split(1))
            grad = torch.cat([_fold(g, gv, gm, m, g.shape[1] * spatial, shape) for g, gv, gm, m in parts], dim=1)
        else:
            grad = _fold(groups[0], grad_var, grad_mean, mean, groups[0].shape[1] * spatial, shape)
        return grad.view(x.shape).to(x.dtype), None


def _fold(g: torch.Tensor, grad_var: torch.Tensor, grad_mean: torch.Tensor, mean: torch.Tensor, count: int,
          shape: tuple[int, ...]) -> torch.Tensor:
    """a + b * g per batch and channel: b = 2 grad_var / M, a = (grad_mean - 2 grad_var mean) / M."""
    b = grad_var * (2.0 / count)
    a = torch.addcmul(grad_mean, grad_var, mean, value=-2.0).mul_(1.0 / count)
    return torch.addcmul(a.view(len(g), *shape), b.view(len(g), *shape), g)


@dataclass
class _Layout:
    """Where the statistics of every layer sit: concatenated, means then variances then a zero, (K, 2S + 1); `index`
    gathers that into (K, 2L, C_max), each layer's vector padded with the zero; `back` gathers a padded gradient back
    into (K, 2S); `zero`: the padding's target; `channels`: C of each statistic, in order."""

    zero: torch.Tensor
    index: torch.Tensor
    back: torch.Tensor
    width: int
    channels: list[int]


def _layout(stats: Sequence[torch.Tensor]) -> _Layout:
    channels = [s.shape[1] for s in stats]
    width, total = max(channels), sum(channels)
    index, back, start = [], [], 0
    for row, c in enumerate(channels):
        back.extend(range(row * width, row * width + c))
        index.extend([*range(start, start + c), *[total] * (width - c)])
        start += c
    device = stats[0].device
    return _Layout(torch.zeros(1, dtype=stats[0].dtype, device=device), torch.tensor(index, device=device),
                   torch.tensor(back, device=device), width, channels)


class PaddedNorms(torch.autograd.Function):
    """sum_i ||stats_i - target_i||_2 per batch, (K,): stats are (K, C_i) each, target their running values
    concatenated (then a zero, the padding's); one padded reduction for all of them. The backward is d / ||d|| (a zero
    norm has a zero gradient, not NaN), gathered back to each statistic: no scatter (atomic, hence not reproducible,
    on a GPU)."""

    @staticmethod
    def forward(ctx, layout: _Layout, target: torch.Tensor, *stats: torch.Tensor) -> torch.Tensor:
        k = len(stats[0])
        flat = torch.cat([*stats, layout.zero.expand(k, 1)], dim=1)
        padded = (flat - target).index_select(1, layout.index).view(k, -1, layout.width)
        norms = torch.linalg.vector_norm(padded, dim=-1)
        ctx.save_for_backward(padded, norms)
        ctx.layout = layout
        return norms.sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        padded, norms = ctx.saved_tensors
        scale = grad.unsqueeze(1) / norms.clamp_min(1e-30)
        g = (padded * scale.unsqueeze(-1)).view(len(grad), -1).index_select(1, ctx.layout.back)
        return None, None, *g.split(ctx.layout.channels, dim=1)


class BNStatsLoss:
    """Forward pre-hooks on the teacher's BN layers; inside `capture(sizes)` each takes its input's statistics per batch
    of the group (equal batches or not); `loss()` is their distance to the running statistics, per batch."""

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layers: the BN-statistics loss needs them")
        self.stats: list[tuple[nn.modules.batchnorm._BatchNorm, torch.Tensor, torch.Tensor]] = []  # layer, var, mean
        self.sizes: list[int] | None = None
        self.active = False
        self._layouts: dict[tuple, _Layout] = {}
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.active:
            x = inputs[0]
            self.stats.append((module, *LayerMoments.apply(x, tuple(self.sizes or [len(x)]))))

    @contextmanager
    def capture(self, sizes: list[int] | None = None) -> Iterator[BNStatsLoss]:
        self.stats, self.sizes, self.active = [], sizes, True
        try:
            yield self
        finally:
            self.active = False

    def loss(self) -> torch.Tensor:
        """The summed distance over layers, per batch: shape (batches,)."""
        layers, variances, means = zip(*self.stats)
        self.stats = []
        key = (means[0].device, means[0].dtype, *(m.shape[1] for m in means))
        if key not in self._layouts:
            self._layouts[key] = _layout([*means, *variances])
        layout = self._layouts[key]
        # the running statistics as they are now (one copy of them all; the teacher is frozen, but not by this class)
        target = torch.cat([*(m.running_mean for m in layers), *(m.running_var for m in layers), layout.zero])
        return PaddedNorms.apply(layout, target.to(layout.zero.dtype), *means, *variances)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
