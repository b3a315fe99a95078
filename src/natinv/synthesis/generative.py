"""The shard of a generative method (DAFL, DFAD): train the generator with the co-trained student, then sample
synthesis.num_images images from it (train-mode BatchNorm, as the student saw them during training), labelled with
the teacher's prediction. The shard stores the generator's training curve, one row per step."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from natinv.runtime import derive_seed
from natinv.synthesis.shard import ShardImages, ShardJob

LAST = 20  # the summary's losses: the mean over the last 1/LAST of the steps


def run_generator(job: ShardJob, train: Callable, terms: tuple[str, ...]) -> ShardImages:
    """`train(teacher, co, cfg, shape, device, generator)` -> (the trained generator, its curve (steps, terms))."""
    method, syn = job.method, job.syn
    seed = derive_seed(job.seed, job.teacher_key, job.method_key, 0)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        start = time.perf_counter()
        generator, curve = train(job.teacher, job.co, method, job.shape, job.device, gen)
    last = curve[-max(1, len(curve) // LAST):].mean(0)
    job.log(f"{job.teacher_key}/{job.method_key}: generator trained for {method.iterations} steps in "
            f"{time.perf_counter() - start:.0f} s; last 5 %: " + ", ".join(f"{t} {v:.3f}" for t, v in zip(terms, last.tolist())))
    images, labels = [], []
    with torch.no_grad():
        for i in range(0, syn.num_images, syn.batch_size):
            n = min(syn.batch_size, syn.num_images - i)
            x = generator.sample(n, gen)
            images.append(x.float().cpu())
            labels.append(job.teacher(x).argmax(1).cpu())
    curve_np = curve.numpy().astype(np.float32)
    return ShardImages(
        torch.cat(images), torch.cat(labels),
        {"generator_curve": curve_np, "loss_terms": np.asarray(terms), "seeds": np.asarray([seed], dtype=np.int64)},
        {t: float(v) for t, v in zip(terms, last.tolist())},
        {"batch_size": method.batch_size, "steps": method.iterations},
        {f"loss/{t}": curve_np[:, i] for i, t in enumerate(terms)})
