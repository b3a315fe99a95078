"""Feature-distribution regularizer (paper Eq. 3): match batch statistics of every BN layer's input
to the layer's running statistics. L2 norms (not squared), biased variance, as in the official code."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_distance(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


class BNStatsLoss:
    """Forward pre-hooks on the teacher's BN layers; only active inside `capture()`."""

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layers: the BN-statistics loss needs them")
        self.terms: list[torch.Tensor] = []
        self.active = False
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.active:
            self.terms.append(bn_distance(inputs[0].float(), module.running_mean, module.running_var))

    @contextmanager
    def capture(self) -> Iterator["BNStatsLoss"]:
        self.terms, self.active = [], True
        try:
            yield self
        finally:
            self.active = False

    def loss(self) -> torch.Tensor:
        return torch.stack(self.terms).sum()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
