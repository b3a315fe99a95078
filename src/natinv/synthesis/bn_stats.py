"""Feature-distribution regularizer (paper Eq. 3): match batch statistics of every BN layer's input
to the layer's running statistics. L2 norms (not squared), biased variance, as in the official code."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean kept as a broadcastable shape, biased variance) over `dims`: two passes, accurate for any offset."""
    mean = x.mean(dims, keepdim=True)
    return mean, (x - mean).square_().mean(dims)


def _moments_backward(x: torch.Tensor, mean: torch.Tensor, grad_mean: torch.Tensor, grad_var: torch.Tensor,
                      count: int) -> torch.Tensor:
    """d mean / dx = 1/M and d var / dx = 2 (x - mean) / M folded into one pass over x: a + b * x per channel."""
    b = (2.0 / count) * grad_var.reshape(mean.shape)
    a = grad_mean.reshape(mean.shape) / count - b * mean
    return torch.addcmul(a, b, x)


class BatchMoments(torch.autograd.Function):
    """Per-channel mean and biased variance over every axis but 1, with a hand-written backward.

    Forward: two passes (the mean, then the mean of the centred squares), accurate to float32 rounding for any
    offset. Backward: d mean / dx = 1/M and d var / dx = 2 (x - mean) / M fold into one pass, a + b * x per
    channel. Autograd of the same formula takes about 10 passes over the activation; this is 3x faster on the
    synthesis hot path (benchmarks/README.md). The BN loss itself uses BNDistance, which adds the norms to it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = _moments(x, (0, *range(2, x.dim())))
        ctx.save_for_backward(x, mean)
        return mean.flatten(), var

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor, grad_var: torch.Tensor) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        return _moments_backward(x, mean, grad_mean, grad_var, x.numel() // x.shape[1])


class BNDistance(torch.autograd.Function):
    """||mu(x) - running_mean||_2 + ||var(x) - running_var||_2 of each of `groups` equal batches stacked along axis 0
    (shape (K,)), in one pass for all of them, with the backward written out: BatchMoments' one-pass gradient scaled
    by the norms' (d ||d|| / d d = d / ||d||). Fewer operators than the same formula through autograd, for every BN
    layer of the teacher at every iteration."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, groups: int) -> torch.Tensor:
        xg = x.reshape(groups, len(x) // groups, *x.shape[1:])  # a view, whatever x's memory format
        mean, var = _moments(xg, (1, *range(3, xg.dim())))
        d_mean, d_var = mean.view(groups, -1) - running_mean, var - running_var
        n_mean, n_var = torch.linalg.vector_norm(d_mean, dim=-1), torch.linalg.vector_norm(d_var, dim=-1)
        ctx.save_for_backward(xg, mean, d_mean, d_var, n_mean, n_var)
        ctx.shape = x.shape
        return n_mean + n_var

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xg, mean, d_mean, d_var, n_mean, n_var = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        # d/d mean and d/d var of the norms (a zero norm has a zero difference: its gradient is 0, not NaN)
        g_mean = d_mean * (g / n_mean.clamp_min(1e-30).unsqueeze(-1))
        g_var = d_var * (g / n_var.clamp_min(1e-30).unsqueeze(-1))
        grad_x = _moments_backward(xg, mean, g_mean, g_var, xg[0].numel() // xg.shape[2])
        return grad_x.view(ctx.shape), None, None, None


def bn_distance(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """||mu(x) - running_mean||_2 + ||var(x) - running_var||_2 over the batch and spatial axes, of each of `groups`
    equal batches stacked along axis 0: shape (groups,)."""
    return BNDistance.apply(x, running_mean, running_var, groups)


class BNStatsLoss:
    """Forward pre-hooks on the teacher's BN layers; only active inside `capture()`. With several batches in one
    pass (`capture(sizes)`), the statistics are taken per batch (of equal batches in one pass for all of them)."""

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layers: the BN-statistics loss needs them")
        self.terms: list[torch.Tensor] = []
        self.sizes: list[int] | None = None
        self.active = False
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        if not self.active:
            return
        x = inputs[0].float()
        sizes = self.sizes or [len(x)]
        if len(set(sizes)) == 1:  # equal batches: one pass for all
            self.terms.append(bn_distance(x, module.running_mean, module.running_var, len(sizes)))
        else:
            self.terms.append(torch.cat([bn_distance(part, module.running_mean, module.running_var)
                                         for part in torch.split(x, sizes)]))

    @contextmanager
    def capture(self, sizes: list[int] | None = None) -> Iterator[BNStatsLoss]:
        self.terms, self.sizes, self.active = [], sizes, True
        try:
            yield self
        finally:
            self.active = False

    def loss(self) -> torch.Tensor:
        """The summed distance over layers, per batch: shape (batches,)."""
        return torch.stack(self.terms).sum(0)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
