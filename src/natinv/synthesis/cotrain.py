"""The student a method distils while it synthesizes (ADI and NI+ADI, DAFL, DFAD): its optimizer, its KD steps on the
images made so far (ADI), and its weights, stored in the shard as `student/<name>` arrays for the `kd` stage to adopt."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from natinv.config import CoTrainConfig
from natinv.data import crop_flip
from natinv.distill import soft_kl
from natinv.train import autocast, cosine_with_warmup, sgd_optimizer

PREFIX = "student/"


class CoStudent:
    """SGD as in `train.fit` (Nesterov, weight decay on weights only), the cosine decay spread over `total_steps`."""

    def __init__(self, model: nn.Module, cfg: CoTrainConfig, total_steps: int, device: torch.device,
                 precision: str | None = None):
        self.model = model.to(device).train()
        self.cfg, self.precision = cfg, precision  # precision "bf16": its KD steps' forward passes under autocast
        self.optimizer = sgd_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.scheduler = cosine_with_warmup(self.optimizer, total_steps, 0)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.losses: list[torch.Tensor] = []  # one per step, kept on the device

    def update(self, loss: torch.Tensor) -> None:
        """One SGD step on `loss` (only the student's parameters receive gradients)."""
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss, inputs=self.params)
        self.optimizer.step()
        self.scheduler.step()
        self.losses.append(loss.detach())

    def distill_on(self, teacher: nn.Module, pool: torch.Tensor, steps: int, gen: torch.Generator) -> None:
        """`steps` KD steps (KL at cfg.temperature, crop+flip) on random batches of the images so far (`pool`, any float
        dtype, on any device; ADI: the student
        takes a number of KD iterations after every new batch, Yin et al. 2020, section 4.1)."""
        device = next(self.model.parameters()).device
        self.model.train()
        for _ in range(steps):  # drawn with gen, on gen's device
            idx = torch.randperm(len(pool), generator=gen, device=gen.device)[: self.cfg.batch_size]
            xb = crop_flip(pool[idx.to(pool.device)].to(device).float(), generator=gen)
            with autocast(device, self.precision):
                with torch.no_grad():
                    t = teacher(xb)
                s = self.model(xb)
            self.update(soft_kl(s, t, self.cfg.temperature))

    def state(self) -> dict:
        """A copy of everything a step changes (weights, optimizer, schedule, losses so far): what a retried synthesis
        starts again from and what a shard's saved progress holds."""
        import copy

        losses = torch.stack(self.losses) if self.losses else torch.zeros(0, device=self.losses_device)
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "scheduler": self.scheduler.state_dict(), "losses": losses})

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.losses[:] = list(state["losses"].to(self.losses_device).unbind())

    @property
    def losses_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def loss_curve(self) -> np.ndarray:
        return torch.stack(self.losses).cpu().numpy().astype(np.float32) if self.losses else np.zeros(0, np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {PREFIX + k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}


def student_state(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The state dict stored by `CoStudent.arrays` (empty when the shard has no student)."""
    return {k[len(PREFIX):]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k.startswith(PREFIX)}
