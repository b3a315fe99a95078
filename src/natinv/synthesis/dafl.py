"""DAFL (Chen et al. 2019, "Data-Free Learning of Student Networks"): a generator trained against the frozen teacher
so that its outputs look like those of real data, while the co-trained student is distilled on every generated batch.

generator loss = oh * CE(t(G(z)), argmax t(G(z)))      one-hot: confident predictions
               + a * -mean |f_T(G(z))|                  activation: strong penultimate features
               + ie * sum_c p_c log10 p_c, p = mean softmax over the batch   information entropy: balanced classes
student loss   = KL(softmax t || softmax s) at cfg.cotrain.temperature (DAFL: 1), on the generated batch (detached).
DAFL's code takes the entropy with log10; we keep it (it only rescales ie by 1/ln 10).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from natinv.config import DAFLConfig
from natinv.distill import soft_kl
from natinv.models import StagedNet
from natinv.synthesis.cotrain import CoStudent
from natinv.synthesis.generative import Steps
from natinv.synthesis.generator import Generator
from natinv.train import adam, autocast, widened

TERMS = ("total", "onehot", "activation", "entropy", "student_kd")


def generator_loss(logits: torch.Tensor, features: torch.Tensor, cfg: DAFLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted total, the three terms unweighted) for the teacher's logits and penultimate features of a batch."""
    onehot = F.cross_entropy(logits, logits.argmax(1))
    activation = -features.abs().mean()
    p = F.softmax(logits, dim=1).mean(0)
    entropy = (p * torch.log10(p)).sum()
    total = cfg.lambda_onehot * onehot + cfg.lambda_activation * activation + cfg.lambda_entropy * entropy
    return total, torch.stack([onehot, activation, entropy])


def train(teacher: StagedNet, student: CoStudent, cfg: DAFLConfig, shape: tuple[int, int, int], device: torch.device,
          gen: torch.Generator, steps: Steps = Steps(), precision: str | None = None) -> tuple[Generator, torch.Tensor]:
    """Train the generator and the student for cfg.iterations steps; returns (generator, curve (iterations, TERMS)).
    precision "bf16": the forward passes under bfloat16 autocast, the losses in float32."""
    generator = Generator.unconditional(shape, cfg.latent_dim, cfg.generator_width, device)
    optimizer = adam(generator.parameters(), lr=cfg.lr_generator)
    curve = torch.empty(cfg.iterations, len(TERMS), device=device)
    for it in range(steps.resume(generator, optimizer, curve), cfg.iterations):
        with autocast(device, precision):
            images = generator.sample(cfg.batch_size, gen)
            features = teacher.embed(images)
            logits = teacher.fc(features)
        total, terms = generator_loss(widened(logits), widened(features), cfg)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        with autocast(device, precision):
            student_logits = student.model(images.detach())
        kd = soft_kl(student_logits, logits.detach(), student.cfg.temperature)
        student.update(kd)
        curve[it] = torch.cat([total.detach()[None], terms.detach(), kd.detach()[None]])
        steps.after(it, generator, optimizer, curve)
    return generator, curve.cpu()


def run_shard(job):
    """One shard (the method's only one) of DAFL (natinv.synthesis.shard.ShardJob -> ShardImages)."""
    from natinv.synthesis.generative import run_generator

    return run_generator(job, train, TERMS)
