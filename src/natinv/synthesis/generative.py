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


class Steps:
    """The generator steps of one training run, saved and resumed (natinv.synthesis.progress): `resume` loads a saved
    run's generator, optimizer, curve, student and random state and says where to go on from; `after(it)` saves them at
    most every engine.save_every_minutes. What the loop of a method's `train` calls, so DAFL and DFAD share it."""

    def __init__(self, job: ShardJob | None = None, seed: int = 0, attempt: int = 0, gen: torch.Generator | None = None,
                 saved: dict | None = None):
        """job None: a training run outside a shard (a test), which neither resumes nor saves."""
        self.job, self.seed, self.attempt, self.gen, self.saved = job, seed, attempt, gen, saved

    def resume(self, generator: torch.nn.Module, optimizer: torch.optim.Optimizer, curve: torch.Tensor) -> int:
        """The first step to run: 0, or the step after the saved one (its state loaded into these)."""
        state, self.saved = self.saved, None
        if state is None:
            return 0
        generator.load_state_dict(state["generator"])
        optimizer.load_state_dict(state["optimizer"])
        curve[:state["steps"]] = state["curve"]
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        if self.job.co is not None:
            self.job.co.load_state(state["student"])
        return state["steps"]

    def after(self, it: int, generator: torch.nn.Module, optimizer: torch.optim.Optimizer, curve: torch.Tensor) -> None:
        """After step `it` (0-based): save when it is time (never after the last step)."""
        if self.job is None:
            return
        progress = self.job.progress
        if progress.due(last=it + 1 == self.job.method.iterations):
            progress.save({"seed": self.seed, "attempt": self.attempt, "steps": it + 1, "curve": curve[:it + 1],
                           "generator": generator.state_dict(), "optimizer": optimizer.state_dict(),
                           "gen": self.gen.get_state(), "rng": torch.get_rng_state(),
                           "student": None if self.job.co is None else self.job.co.state()}, f"after step {it + 1}")


def run_generator(job: ShardJob, train: Callable, terms: tuple[str, ...]) -> ShardImages:
    """`train(teacher, co, cfg, shape, device, generator, steps, precision)` -> (the trained generator, its curve
    (steps, terms)); `steps` (a Steps) resumes and saves its loop; `precision`: engine.autocast. A run whose losses or images are not finite starts again (generator and
    student) from a new seed derived from the last, at most synthesis.retries times; then one error naming the step."""
    method, syn = job.method, job.syn
    seed = derive_seed(job.seed, job.teacher_key, job.method_key, 0)
    start_state = job.co.state() if job.co is not None else None
    first, saved = 0, job.progress.load()
    if saved is not None:
        first, seed = saved["attempt"], saved["seed"]
        job.log(f"{job.teacher_key}/{job.method_key}: resuming after step {saved['steps']}/{method.iterations} "
                f"from {job.progress.path}")
    for attempt in range(first, syn.retries + 1):
        start = time.perf_counter()
        curve, images, labels = _train_and_sample(job, train, seed, attempt, saved)
        saved = None
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
            job.co.load_state(start_state)
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


def _train_and_sample(job: ShardJob, train: Callable, seed: int, attempt: int,
                      saved: dict | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the generator's curve, synthesis.num_images images sampled from it in float16, the teacher's labels for them)."""
    syn = job.syn
    gen = torch.Generator(device=job.device).manual_seed(seed)  # z is drawn on the device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator, curve = train(job.teacher, job.co, job.method, job.shape, job.device, gen,
                                 Steps(job, seed, attempt, gen, saved), job.engine.autocast)
    images = torch.empty((syn.num_images, *job.shape), dtype=torch.float16)
    labels = torch.empty(syn.num_images, dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, syn.num_images, syn.batch_size):
            x = generator.sample(min(syn.batch_size, syn.num_images - i), gen)
            images[i:i + len(x)] = x
            labels[i:i + len(x)] = job.teacher(x).argmax(1)
    return curve, images, labels
