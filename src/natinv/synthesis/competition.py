"""Adaptive DeepInversion's teacher-student competition (Yin et al. 2020), as NVlabs' CIFAR-10 script computes it.

disagreement = 0.5 * KL(M || P_s) + 0.5 * KL(M || P_t), with P_s, P_t the student's and teacher's softmax at
temperature T (3), M their mean, and all three clamped to [0.01, 0.99] before the logarithms (batch mean). This is
NVlabs' form: KL from the mixture to each distribution, the reverse of the textbook Jensen-Shannon divergence, which
is KL from each distribution to the mixture; both are 0 when the two agree and grow as they disagree.
The synthesis loss adds scale * (1 - clamp(disagreement, 0, 1)): minimizing it looks for images the student
does not yet classify like the teacher.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE = 3.0


def disagreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    p = F.softmax(student_logits.float() / temperature, dim=1)
    q = F.softmax(teacher_logits.float() / temperature, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    log_m = m.log()
    return 0.5 * ((m * (log_m - p.log())).sum(1).mean() + (m * (log_m - q.log())).sum(1).mean())


def competition_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """1 - disagreement (clamped to [0, 1]): 1 when the student agrees with the teacher, lower as it disagrees."""
    return 1.0 - disagreement(student_logits, teacher_logits, temperature).clamp(0.0, 1.0)


@dataclass
class Competitor:
    """The student the images compete against, and the term's weight. The student is read, never updated, here."""

    student: nn.Module
    scale: float
    temperature: float = TEMPERATURE

    def __call__(self, images: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The term for `images` (gradient to the images only: the student's weights are not part of the graph)."""
        was_training, params = self.student.training, [p for p in self.student.parameters() if p.requires_grad]
        self.student.eval().requires_grad_(False)
        logits = self.student(images)
        self.student.train(was_training)
        for p in params:
            p.requires_grad_(True)
        return self.scale * competition_loss(logits, teacher_logits, self.temperature)
