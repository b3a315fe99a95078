"""ADI's competition term: 0 disagreement when student and teacher agree, growing as they disagree; the gradient
reaches the images and never the student's weights."""
import torch

from conftest import tiny_teacher
from natinv.synthesis.competition import Competitor, competition_loss, disagreement


def test_disagreement_is_zero_when_they_agree_and_grows_as_they_disagree():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 10, generator=gen) * 3
    assert disagreement(teacher, teacher).abs() < 1e-6
    assert competition_loss(teacher, teacher) == 1.0
    noise = torch.randn(64, 10, generator=gen) * 3
    values = [disagreement(teacher + a * (noise - teacher), teacher) for a in (0.0, 0.25, 0.5, 1.0)]
    assert all(a < b for a, b in zip(values, values[1:]))  # a student drifting away from the teacher
    assert competition_loss(noise, teacher) < 1.0


def test_competitor_sends_gradient_to_the_images_only():
    student, teacher_logits = tiny_teacher(width=4).train(), torch.randn(8, 10)
    images = torch.randn(8, 3, 32, 32, requires_grad=True)
    term = Competitor(student, scale=2.0)(images, teacher_logits)
    term.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in student.parameters())
    assert student.training  # its mode is restored
