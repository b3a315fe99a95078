"""Meta-learned initialization of NaturalInversion (the `ni-fast` variant, `synthesis.methods.<m>.meta`).

NaturalInversion re-initializes its generator, FTP and output head for every batch and optimizes them for thousands of
iterations. Here every batch starts from shared meta-parameters theta instead: the batch gets its own copy of theta
(one-to-one stays one-to-one: its own adapted generator, its own z and alpha), adapts it for the method's few
`iterations`, and theta then moves toward what the batch learned:

- reptile (Nichol et al. 2018): theta += lr * (theta_batch - theta), the adapted parameters at the batch's last step;
- fomaml (first-order MAML, Finn et al. 2017): theta -= lr * eta * g, g the gradient at the adapted parameters (the
  batch's last iteration), eta the inner learning rate of the parameter's group.

With ACS, theta also holds the mean of alpha per channel, and a batch draws its alpha around it (alpha_std as before):
the head learns together with the batch's alpha, so a head adapted where alpha settled below or above alpha_mean is a
poor start for a batch drawn at alpha_mean. Its update is the same rule on the batch's alpha, averaged over its images.

Shards stay independent jobs: the warm-up stage (`python -m natinv meta`) learns theta on batches of its own (their
images are discarded) and writes it; every shard of the method starts from that file and carries its meta-updates over
its own batches in order, so a shard re-run gives the same bytes and no shard reads another's.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from natinv.config import MetaConfig


class MetaInit(nn.Module):
    """The meta-parameters theta: `model` (a NaturalInversionImage: generator, FTP, head) and, with ACS, `alpha_mean`
    (one value per channel), with their update after each batch. Its state_dict is what the warm-up stage writes."""

    def __init__(self, model: nn.Module, cfg: MetaConfig, alpha_mean: torch.Tensor | None = None, alpha_rate: float = 0.0):
        super().__init__()
        self.model, self.cfg, self.alpha_rate = model, cfg, alpha_rate
        self.register_buffer("alpha_mean", alpha_mean)
        self.updates = 0

    def start(self) -> nn.Module:
        """A batch's own copy of theta's modules, to adapt."""
        return copy.deepcopy(self.model)

    def alpha_start(self, alpha_mean: float, channels: int) -> torch.Tensor:
        """The mean a batch's alpha is drawn around, (1, C, 1, 1) on the host: theta's, or `alpha_mean` without ACS."""
        mean = torch.full((channels,), alpha_mean) if self.alpha_mean is None else self.alpha_mean.cpu()
        return mean.view(1, channels, 1, 1)

    @torch.no_grad()
    def update(self, adapted: nn.Module, rates: dict[int, float], alpha: torch.Tensor | None = None) -> None:
        """Move theta toward a batch's adapted copy (reptile) or along its last gradient (fomaml). `rates`: the inner
        learning rate of each of the copy's parameters (by id), which scales fomaml's step. `alpha`: the batch's
        learned alpha (N, C, 1, 1) with its gradient, when theta holds alpha's mean."""
        for (name, theta), (_, p) in zip(self.model.named_parameters(), adapted.named_parameters()):
            if self.cfg.algorithm == "reptile":
                theta.lerp_(p.to(theta.device), self.cfg.lr)
            elif p.grad is not None:
                theta.sub_(p.grad.to(theta.device), alpha=self.cfg.lr * rates[id(p)])
        if self.alpha_mean is not None and alpha is not None:
            if self.cfg.algorithm == "reptile":
                self.alpha_mean.lerp_(alpha.mean(dim=(0, 2, 3)).to(self.alpha_mean.device), self.cfg.lr)
            elif alpha.grad is not None:
                self.alpha_mean.sub_(alpha.grad.mean(dim=(0, 2, 3)).to(self.alpha_mean.device),
                                     alpha=self.cfg.lr * self.alpha_rate)
        self.updates += 1
