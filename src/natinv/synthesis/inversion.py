"""The shard of an inversion method (NI, DI): every batch optimized on its own with its own seed and labels; with a
co-trained student (ADI), the student takes cotrain.steps KD steps on the images so far after every batch, and the
competition term plays against it."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from natinv.errors import NatinvError
from natinv import tracking
from natinv.plan import batch_plan
from natinv.runtime import IterationProgress, derive_seed, eta
from natinv.synthesis.competition import Competitor
from natinv.synthesis.labels import batch_labels
from natinv.synthesis.objective import TERMS, BatchResult, Carry, InversionObjective, LossWeights
from natinv.synthesis.shard import ShardImages, ShardJob, first_fault

# (objective, [(labels, seed) per batch], carry) -> each batch's result, in order
Optimizer = Callable[[InversionObjective, list[tuple[torch.Tensor, int]], "Carry"], Iterator[BatchResult]]


def run_batches(job: ShardJob, optimize: Optimizer) -> ShardImages:
    """Every batch of the shard in order, its images kept in one float16 pool (on the device when a co-trained student
    reads them, else on the host); the shard's progress saved at group boundaries and resumed from (natinv.synthesis.progress)."""
    method, meta = job.method, job.meta
    plan = batch_plan(job.syn.num_images, job.syn.batch_size, job.syn.shards_for(method))[job.shard]
    seeds = [derive_seed(job.seed, job.teacher_key, job.method_key, index) for index, _ in plan]
    batches = labelled_batches(seeds, [size for _, size in plan], meta.num_classes)
    co = job.co
    competitor = Competitor(co.model, method.competition) if co is not None and method.competition > 0 else None
    objective = InversionObjective(job.teacher, LossWeights.of(method), competitor, job.engine)

    pool = torch.empty((sum(size for _, size in plan), *job.shape), dtype=torch.float16,
                       device=job.device if co is not None else "cpu")
    labels = torch.empty(len(pool), dtype=torch.int64)
    curves = torch.empty(len(plan), method.iterations, len(TERMS))
    best_iters, retries = [], []
    student_gen = torch.Generator(device=pool.device).manual_seed(derive_seed(job.seed, job.teacher_key, job.method_key,
                                                                              "cotrain"))  # where the pool is
    name = f"{job.teacher_key}/{job.method_key} shard {job.shard}"
    carry, done, filled = Carry(), 0, 0
    if (state := job.progress.load()) is not None:
        done, filled, seeds[:state["batches"]] = state["batches"], state["images"], state["seeds"]
        pool[:filled], labels[:filled], curves[:done] = state["pool"], state["labels"], state["curves"]
        best_iters, retries, carry.saved = state["best_iterations"], state["retries"], state["carry"]
        student_gen.set_state(state["student_gen"])
        if co is not None:
            co.load_state(state["student"])
        job.log(f"{name}: resuming after batch {done}/{len(plan)} ({filled} images) from {job.progress.path}")
    job.on_step = progress = IterationProgress(name, method.iterations, len(plan), objective.engine.batches_per_step)
    start = time.perf_counter()
    for k, res in enumerate(optimize(objective, batches[done:], carry), start=done):
        res, tries = _until_finite(job, objective, optimize, res, plan[k][0])
        _emit_batch(job, k, res, progress.times if len(progress.times) == len(res.curve) else None)
        seeds[k] = res.seed
        retries.append(tries)
        n = len(res.labels)
        pool[filled:filled + n] = res.images
        labels[filled:filled + n] = res.labels
        filled += n
        curves[k] = res.curve
        best_iters.append(res.best_iteration)
        if co is not None:
            co.distill_on(job.teacher, pool[:filled], method.cotrain.steps, student_gen)
        final = dict(zip(TERMS, res.curve[res.best_iteration].tolist()))
        elapsed = time.perf_counter() - start
        left = len(plan) - k - 1
        job.log(f"{name} batch {k + 1}/{len(plan)}: best iteration "
                f"{res.best_iteration + 1}, loss {final['total']:.3f} (CE {final['ce']:.3f}, BN {final['bn']:.3f}"
                + (f", competition {final['competition']:.3f}; student KD loss {co.losses[-1].item():.3f}" if co else "")
                + f"), {elapsed / ((k + 1 - done) * method.iterations):.3f} s/iteration"
                + (f"; {eta(elapsed / (k + 1 - done), left)} for the shard" if left else ""))
        if (k + 1) % objective.engine.batches_per_step == 0 and job.progress.due(last=not left):
            job.progress.save({"batches": k + 1, "images": filled, "seeds": seeds[:k + 1], "pool": pool[:filled],
                               "labels": labels[:filled], "curves": curves[:k + 1], "best_iterations": best_iters,
                               "retries": retries, "carry": carry.state(), "student_gen": student_gen.get_state(),
                               "student": None if co is None else co.state()}, f"after batch {k + 1}")
    objective.close()
    curve = curves.numpy()  # (batches, iterations, terms)
    best = np.asarray(best_iters, dtype=np.int64)
    batch_index = np.asarray([i for i, _ in plan], dtype=np.int64)
    at_best = curve[np.arange(len(best)), best]  # (batches, terms)
    series = {f"loss/{t}": curve[:, :, i].mean(0) for i, t in enumerate(TERMS)}
    if job.live_curves:
        series |= {f"batch-{k}/{t}": curve[k, :, TERMS.index(t)] for k in range(len(plan)) for t in ("ce", "bn")}
    else:
        series = {name: tracking.thin(values) for name, values in series.items()}
    return ShardImages(
        pool, labels,
        {"loss_curves": curve, "loss_terms": np.asarray(TERMS), "seeds": np.asarray(seeds, dtype=np.int64),
         "batch_index": batch_index, "best_iteration": best, "retries": np.asarray(retries, dtype=np.int64)},
        {t: float(at_best[:, i].mean()) for i, t in enumerate(TERMS)},
        {"batches": len(plan), "batch_size": job.syn.batch_size, "steps": (len(plan) + sum(retries)) * method.iterations,
         "retries": sum(retries)},
        series)


def _emit_batch(job: ShardJob, index: int, res: BatchResult, times: list[float] | None) -> None:
    """A finished batch's losses to MLflow (`index`: the batch's place in its shard, so every shard's run has the same
    metric names): every iteration's CE and BN (stamped with when each was reached), or, when the method's curves are
    too many for metric rows (job.live_curves false), its losses at the best iteration as one point of `batch/{term}`
    at step index + 1."""
    if job.live_curves:
        for t in ("ce", "bn"):
            tracking.emit(f"batch-{index}/{t}", res.curve[:, TERMS.index(t)].tolist(), range(1, len(res.curve) + 1), times)
        return
    for i, t in enumerate(TERMS):
        tracking.emit(f"batch/{t}", [float(res.curve[res.best_iteration, i])], [index + 1])


def labelled_batches(seeds: list[int], sizes: list[int], num_classes: int) -> list[tuple[torch.Tensor, int]]:
    """(labels, seed) of each batch: its labels drawn from a seed derived from its own."""
    return [(batch_labels(size, num_classes, torch.Generator().manual_seed(derive_seed(s, "labels"))), s)
            for size, s in zip(sizes, seeds)]


def _until_finite(job: ShardJob, objective: InversionObjective, optimize: Optimizer, res: BatchResult,
                  index: int) -> tuple[BatchResult, int]:
    """`res`, or when its loss or images are not finite the batch optimized again from a new seed (derived from the
    last one: a re-run gives the same bytes), at most synthesis.retries times; then one error naming where it failed."""
    name = f"{job.teacher_key}/{job.method_key} batch {index} (shard {job.shard})"
    for attempt in range(job.syn.retries + 1):
        fault = first_fault(res.curve, res.images, res.best_iteration)
        if fault is None:
            return res, attempt
        if attempt == job.syn.retries:
            break
        seed = derive_seed(res.seed, "retry")
        job.log(f"{name}: loss not finite from iteration {fault + 1}; optimizing it again from seed {seed} "
                f"(retry {attempt + 1} of {job.syn.retries})")
        (res,) = list(optimize(objective, [(res.labels, seed)], Carry()))
    cause = ("at the first iteration, before any step, so not a learning rate: a loss weight (lambda_*) too large for "
             "float32, or the teacher" if fault == 0 else "lower the method's learning rates, or check the teacher")
    raise NatinvError(f"{name}: loss or images not finite from iteration {fault + 1} of {job.method.iterations}, in "
                      f"{job.syn.retries + 1} tries from different seeds; nothing was written. Cause: {cause}")
