"""Knowledge distillation: a student trained only on synthesized images (the stored float16 tensors, i.e.
what the teacher saw) with the teacher's soft targets, KL at temperature T; or on real images (method=real)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from natinv.train import BatchLoss, widened


def kd_loss(teacher: nn.Module, temperature: float) -> BatchLoss:
    """T^2 * KL(softmax(t/T) || softmax(s/T)); teacher logits on the same augmented batch."""
    teacher.eval().requires_grad_(False)

    def loss(student: nn.Module, xb: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(xb)
        return soft_kl(student(xb), t, temperature)

    return loss


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean (T = 1: DAFL's kdloss)."""
    student_logits, teacher_logits = widened(student_logits), widened(teacher_logits)  # bfloat16 under autocast
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits.detach() / temperature, 1),
                    log_target=True, reduction="batchmean") * temperature**2
