"""The shard of a generative method (DAFL, DFAD): train the generator with the co-trained student, then sample
synthesis.num_images images from it (train-mode BatchNorm, as the student saw them during training), labelled with
the teacher's prediction. The shard stores the generator's training curve, one row per step."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from natinv.errors import NatinvError
from natinv.runtime import derive_seed
from natinv.synthesis.shard import ShardImages, ShardJob, first_fault

LAST = 20  # the summary's losses: the mean over the last 1/LAST of the steps


def run_generator(job: ShardJob, train: Callable, terms: tuple[str, ...]) -> ShardImages:
    """`train(teacher, co, cfg, shape, device, generator)` -> (the trained generator, its curve (steps, terms)). A run
    whose losses or images are not finite starts again (generator and student) from a new seed derived from the last,
    at most synthesis.retries times; then one error naming the step."""
    method, syn = job.method, job.syn
    seed = derive_seed(job.seed, job.teacher_key, job.method_key, 0)
    start_state = job.co.snapshot() if job.co is not None else None
    for attempt in range(syn.retries + 1):
        start = time.perf_counter()
        curve, images, labels = _train_and_sample(job, train, seed)
        fault = first_fault(curve, images, len(curve) - 1)
        if fault is None:
            break
        where = f"{job.teacher_key}/{job.method_key}: loss or images not finite from step {fault + 1} of {method.iterations}"
        if attempt == syn.retries:
            raise NatinvError(f"{where}, in {syn.retries + 1} tries from different seeds; nothing was written. Lower the "
                              f"method's learning rates or check the teacher")
        seed = derive_seed(seed, "retry")
        job.log(f"{where}; training again from seed {seed} (retry {attempt + 1} of {syn.retries})")
        if job.co is not None:
            job.co.restore(start_state)
    last = curve[-max(1, len(curve) // LAST):].mean(0)
    job.log(f"{job.teacher_key}/{job.method_key}: generator trained for {method.iterations} steps in "
            f"{time.perf_counter() - start:.0f} s; last 5 %: " + ", ".join(f"{t} {v:.3f}" for t, v in zip(terms, last.tolist())))
    curve_np = curve.numpy().astype(np.float32)
    return ShardImages(
        images, labels,
        {"generator_curve": curve_np, "loss_terms": np.asarray(terms), "seeds": np.asarray([seed], dtype=np.int64)},
        {t: float(v) for t, v in zip(terms, last.tolist())},
        {"batch_size": method.batch_size, "steps": (attempt + 1) * method.iterations, "retries": attempt},
        {f"loss/{t}": curve_np[:, i] for i, t in enumerate(terms)})


def _train_and_sample(job: ShardJob, train: Callable, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the generator's curve, synthesis.num_images images sampled from it, the teacher's labels for them)."""
    syn = job.syn
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator, curve = train(job.teacher, job.co, job.method, job.shape, job.device, gen)
    images, labels = [], []
    with torch.no_grad():
        for i in range(0, syn.num_images, syn.batch_size):
            x = generator.sample(min(syn.batch_size, syn.num_images - i), gen)
            images.append(x.float().cpu())
            labels.append(job.teacher(x).argmax(1).cpu())
    return curve, torch.cat(images), torch.cat(labels)

