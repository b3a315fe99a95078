"""Feature-distribution regularizer (paper Eq. 3): match batch statistics of every BN layer's input
to the layer's running statistics. L2 norms (not squared), biased variance, as in the official code.

The distance of all layers is one autograd Function (`LayerDistances`) applied after the teacher's forward pass: per
layer one reduction for the mean and variance (of the K batches of a group at once) and one fused pass back; the
norms of every layer are one padded reduction. This is the synthesis hot path's largest share of operators: a
ResNet-34 has 36 BN layers, and the same formula through autograd dispatches about 29 operators per layer per
iteration (benchmarks/README.md, "Synthesis engine").
"""
from __future__ import annotations

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


def _var_mean(x: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch and channel (K, C): biased variance and mean of x over its batch and spatial axes, in float32 (a
    bfloat16 activation is widened one layer at a time, for the reduction only)."""
    parts = [torch.var_mean(widened(g), dim=(1, *range(3, g.dim())), correction=0) for g in _groups(x, sizes)]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([v for v, _ in parts]), torch.cat([m for _, m in parts])


@dataclass
class _Layout:
    """Where each layer's statistics sit: `stats` is (K, 2S + 1), the means of every layer's channels, then their
    variances, then a zero; `index` gathers it into (K, 2L, C_max), each layer's vector padded with that zero;
    `back` gathers a padded gradient back into (K, 2S); `inv_count` is 1 / (elements per channel) of each statistic's
    batch and layer, (K or 1, S); `zero` the padding's target."""

    zero: torch.Tensor
    index: torch.Tensor
    back: torch.Tensor
    inv_count: torch.Tensor
    width: int


def _layout(xs: Sequence[torch.Tensor], sizes: Sequence[int]) -> _Layout:
    channels = [x.shape[1] for x in xs]
    width, total = max(channels), sum(channels)
    device, dtype = xs[0].device, widened(xs[0][:1]).dtype
    index, back, start = [], [], 0
    for c in [*channels, *channels]:  # the means' vectors, then the variances'
        row = len(index) // width
        back.extend(range(row * width, row * width + c))
        index.extend([*range(start, start + c), *[2 * total] * (width - c)])
        start += c
    spatial = [x[0].numel() // x.shape[1] for x in xs]
    batch = sizes if len(set(sizes)) > 1 else sizes[:1]
    inv_count = torch.tensor([[1.0 / (b * n) for n, c in zip(spatial, channels) for _ in range(c)] for b in batch], dtype=dtype)
    return _Layout(torch.zeros(1, dtype=dtype, device=device), torch.tensor(index, device=device),
                   torch.tensor(back, device=device), inv_count.to(device), width)


class LayerDistances(torch.autograd.Function):
    """sum over layers l of ||mu_l - running_mean_l||_2 + ||var_l - running_var_l||_2, per batch (shape (K,)), of the
    BN inputs xs (one per layer) of K batches stacked along axis 0 (`sizes`); `target`: every layer's running means,
    then their running variances, then a zero (the padding's).

    Forward: one var_mean per layer (K batches at once), the norms of all layers in one padded reduction. Backward,
    written out: the norms' gradient d / ||d|| for all layers at once, then d mean / dx = 1/M and d var / dx =
    2 (x - mean) / M folded into one pass per layer, a + b * x per batch and channel. A zero norm (a statistic equal
    to its target) has a zero gradient, not NaN."""

    @staticmethod
    def forward(ctx, layout: _Layout, sizes: Sequence[int], target: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        moments = [_var_mean(x, sizes) for x in xs]
        means = torch.cat([m for _, m in moments], dim=1)
        stats = torch.cat([means, *(v for v, _ in moments), means.new_zeros(len(sizes), 1)], dim=1)
        padded = (stats - target).index_select(1, layout.index).view(len(sizes), -1, layout.width)
        norms = torch.linalg.vector_norm(padded, dim=-1)
        ctx.save_for_backward(means, padded, norms, *xs)
        ctx.layout, ctx.sizes = layout, sizes
        return norms.sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        means, padded, norms, *xs = ctx.saved_tensors
        layout, sizes = ctx.layout, ctx.sizes
        scale = grad.unsqueeze(1) / norms.clamp_min(1e-30)
        g = (padded * scale.unsqueeze(-1)).view(len(sizes), -1).index_select(1, layout.back)
        g_mean, g_var = g.chunk(2, dim=1)
        b = 2.0 * g_var * layout.inv_count
        a = g_mean * layout.inv_count - b * means
        channels = [x.shape[1] for x in xs]
        grads = [_moments_backward(x, sizes, a_l, b_l)
                 for x, a_l, b_l in zip(xs, a.split(channels, dim=1), b.split(channels, dim=1))]
        return None, None, None, *grads


def _moments_backward(x: torch.Tensor, sizes: Sequence[int], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b * x per batch and channel (a, b: (K, C)), in x's shape and dtype."""
    parts = _groups(x, sizes)
    shape = (1, -1, *[1] * (x.dim() - 2))
    outs = [torch.addcmul(a_k.view(len(g), *shape), b_k.view(len(g), *shape), g)
            for g, a_k, b_k in zip(parts, a.split([len(g) for g in parts]), b.split([len(g) for g in parts]))]
    grad = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return grad.view(x.shape).to(x.dtype)


class BNStatsLoss:
    """Forward pre-hooks on the teacher's BN layers keep each layer's input inside `capture()`; `loss()` is their
    distance to the running statistics, per batch of the group (`capture(sizes)`: equal or not in size)."""

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layers: the BN-statistics loss needs them")
        self.inputs: list[tuple[nn.modules.batchnorm._BatchNorm, torch.Tensor]] = []  # each call's layer and input
        self.sizes: list[int] | None = None
        self.active = False
        self._layouts: dict[tuple, _Layout] = {}
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.active:
            self.inputs.append((module, inputs[0]))

    @contextmanager
    def capture(self, sizes: list[int] | None = None) -> Iterator[BNStatsLoss]:
        self.inputs, self.sizes, self.active = [], sizes, True
        try:
            yield self
        finally:
            self.active = False

    def loss(self) -> torch.Tensor:
        """The summed distance over layers, per batch: shape (batches,)."""
        layers, xs = zip(*self.inputs)
        self.inputs = []
        sizes = tuple(self.sizes or [len(xs[0])])
        key = (sizes, xs[0].device, xs[0].dtype, *(x.shape[1:] for x in xs))
        if key not in self._layouts:  # one per group shape: the last, shorter group of a shard has its own
            self._layouts[key] = _layout(xs, sizes)
        layout = self._layouts[key]
        # the running statistics as they are now (one copy of them all; the teacher is frozen, but not by this class)
        target = torch.cat([*(m.running_mean for m in layers), *(m.running_var for m in layers), layout.zero])
        return LayerDistances.apply(layout, sizes, target.to(layout.zero.dtype), *xs)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
