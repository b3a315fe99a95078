"""DFAD (Fang et al. 2019, "Data-Free Adversarial Distillation"): the student imitates the frozen teacher on generated
images (L1 between logits) while the generator is trained to make them disagree (the same L1, maximized).

Per generator step: cfg.cotrain.steps student steps (DFAD: 5) on fresh generated batches (detached), then one
generator step on -L1(student, teacher) with gradients through both networks to the generator only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from natinv.config import DFADConfig
from natinv.models import StagedNet
from natinv.synthesis.cotrain import CoStudent
from natinv.synthesis.generative import Steps
from natinv.synthesis.generator import Generator
from natinv.train import adam, autocast, widened

TERMS = ("total", "generator_l1", "student_l1")  # total: the generator's loss (-L1)


def train(teacher: StagedNet, student: CoStudent, cfg: DFADConfig, shape: tuple[int, int, int], device: torch.device,
          gen: torch.Generator, steps: Steps = Steps(), precision: str | None = None) -> tuple[Generator, torch.Tensor]:
    """Train the generator and the student for cfg.iterations generator steps; returns (generator, curve (iterations,
    TERMS)). precision "bf16": the forward passes under bfloat16 autocast, the losses in float32."""
    generator = Generator.unconditional(shape, cfg.latent_dim, cfg.generator_width, device)
    optimizer = adam(generator.parameters(), lr=cfg.lr_generator)
    gen_params = list(generator.parameters())

    curve = torch.empty(cfg.iterations, len(TERMS), device=device)
    for it in range(steps.resume(generator, optimizer, curve), cfg.iterations):
        student.model.train()
        for _ in range(student.cfg.steps):
            with torch.no_grad(), autocast(device, precision):
                images = generator.sample(cfg.batch_size, gen)
                t = teacher(images)
            with autocast(device, precision):
                s = student.model(images)
            student_l1 = F.l1_loss(widened(s), widened(t))
            student.update(student_l1)
        with autocast(device, precision):
            images = generator.sample(cfg.batch_size, gen)
            s, t = student.model(images), teacher(images)
        generator_l1 = F.l1_loss(widened(s), widened(t))
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(-generator_l1, inputs=gen_params)  # the student's weights stay out of this step
        optimizer.step()
        curve[it] = torch.stack([-generator_l1.detach(), generator_l1.detach(), student_l1.detach()])
        steps.after(it, generator, optimizer, curve)
    return generator, curve.cpu()


def run_shard(job):
    """One shard (the method's only one) of DFAD (natinv.synthesis.shard.ShardJob -> ShardImages)."""
    from natinv.synthesis.generative import run_generator

    return run_generator(job, train, TERMS)
