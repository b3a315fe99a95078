"""Meta-learned initialization of NaturalInversion (the `ni-fast` variant, `synthesis.methods.<m>.meta`).

NaturalInversion re-initializes its generator, FTP and output head for every batch and optimizes them for thousands of
iterations. Here every batch starts from shared meta-parameters theta instead: the batch gets its own copy of theta
(one-to-one stays one-to-one: its own adapted generator, its own z and alpha), adapts it for the method's few
`iterations`, and theta then moves toward what the batch learned:

- reptile (Nichol et al. 2018): theta += lr * (theta_batch - theta), the adapted parameters at the batch's last step;
- fomaml (first-order MAML, Finn et al. 2017): theta -= lr * eta * g, g the gradient at the adapted parameters (the
  batch's last iteration), eta the inner learning rate of the parameter's group.

Shards stay independent jobs: the warm-up stage (`python -m natinv meta`) learns theta on batches of its own (their
images are discarded) and writes it; every shard of the method starts from that file and carries its meta-updates over
its own batches in order, so a shard re-run gives the same bytes and no shard reads another's.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from natinv.config import MetaConfig


class MetaInit:
    """The meta-parameters theta (a NaturalInversionImage: generator, FTP, head) and their update after each batch."""

    def __init__(self, model: nn.Module, cfg: MetaConfig):
        self.model, self.cfg = model, cfg
        self.updates = 0

    def start(self) -> nn.Module:
        """A batch's own copy of theta, to adapt."""
        return copy.deepcopy(self.model)

    @torch.no_grad()
    def update(self, adapted: nn.Module, rates: dict[int, float]) -> None:
        """Move theta toward a batch's adapted copy (reptile) or along its last gradient (fomaml). `rates`: the inner
        learning rate of each of the copy's parameters (by id), which scales fomaml's step."""
        for (name, theta), (_, p) in zip(self.model.named_parameters(), adapted.named_parameters()):
            if self.cfg.algorithm == "reptile":
                theta.lerp_(p.to(theta.device), self.cfg.lr)
            elif p.grad is not None:
                theta.sub_(p.grad.to(theta.device), alpha=self.cfg.lr * rates[id(p)])
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()
