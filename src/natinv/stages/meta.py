"""Stage `meta`: the warm-up of a method with meta-learned initialization (ni-fast, `synthesis.methods.<m>.meta`). It
learns the meta-parameters every shard of (teacher, method) starts from on `meta.warmup_batches` batches of its own
(labels and seeds derived from "meta", so they are none of the shards' batches; their images are discarded) and writes
them (safetensors) with a summary (json)."""
from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch

from natinv import paths
from natinv.checkpoint import load_model, save_state
from natinv.config import Config
from natinv.errors import ConfigError
from natinv.runtime import IterationProgress, derive_seed, log
from natinv.stages.common import choose, finish
from natinv.synthesis import registry
from natinv.synthesis.inversion import labelled_batches
from natinv.synthesis.objective import TERMS, InversionObjective, LossWeights
from natinv.synthesis.shard import first_fault
from natinv.tracking import Outcome


def meta_methods(cfg: Config) -> dict:
    """The methods of this run that start from meta-parameters."""
    return {k: m for k, m in cfg.job_methods.items() if registry.meta_of(m) is not None}


def run(cfg: Config, device: torch.device, teacher: str, method: str) -> Outcome:
    from natinv.data import pixel_range
    from natinv.synthesis.naturalinversion import new_meta, synthesize

    choose(method, meta_methods(cfg), "method (one with `meta`)")
    choose(teacher, cfg.teacher.models, "teacher")
    m = cfg.job_methods[method]
    warm = replace(m, iterations=m.meta.warmup_iterations or m.iterations)
    model, mm = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    model = model.to(device).eval().requires_grad_(False)
    shape = (mm.in_channels, mm.image_size, mm.image_size)
    batch = cfg.synthesis.batch_size
    seeds = [derive_seed(cfg.seed, teacher, method, "meta", i) for i in range(m.meta.warmup_batches)]
    batches = labelled_batches(seeds, [batch] * len(seeds), mm.num_classes)
    objective = InversionObjective(model, LossWeights.of(m), None, replace(cfg.engine, batches_per_step=1))
    meta = new_meta(objective, m, mm.num_classes, shape, derive_seed(cfg.seed, teacher, method, "meta-init"), device)
    name = f"{teacher}/{method} warm-up"
    progress = IterationProgress(name, warm.iterations, len(batches), 1)
    start, cpu_start = time.perf_counter(), time.process_time()
    finals = []
    valid = pixel_range(mm.mean, mm.std, device)
    for k, res in enumerate(synthesize(objective, batches, warm, mm.num_classes, shape, device, progress, meta,
                                       pixel_range=valid)):
        final = dict(zip(TERMS, res.curve[res.best_iteration].tolist()))
        if first_fault(res.curve, res.images, res.best_iteration) is not None:
            raise ConfigError(f"{name} batch {k + 1}: the loss is not finite; lower synthesis.methods.{method}'s learning "
                              f"rates or meta.lr ({m.meta.lr:g})")
        finals.append(final)
        log(f"{name} batch {k + 1}/{len(batches)}: loss {final['total']:.3f} (CE {final['ce']:.3f}, BN {final['bn']:.3f})")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    objective.close()
    out = paths.meta_weights(cfg.exp_dir, teacher, method)
    save_state(out, meta.state_dict())
    result = {"teacher": teacher, "method": method, "batches": len(batches), "batch_size": batch,
              "iterations": warm.iterations, "updates": meta.updates, "seconds": seconds, "cpu_seconds": cpu_seconds,
              "final": {t: [f[t] for f in finals] for t in ("ce", "bn")}, "settings": asdict(m.meta), "device": str(device),
              "alpha_mean": None if meta.alpha_mean is None else meta.alpha_mean.tolist()}
    return finish(paths.meta_json(cfg.exp_dir, teacher, method), result,
                  f"{name}: {len(batches)} batches x {warm.iterations} iterations in {seconds:.0f} s; last batch CE "
                  f"{finals[-1]['ce']:.3f}, BN {finals[-1]['bn']:.3f}{_alpha_text(result['alpha_mean'], m.alpha_mean)}", [out])


def _alpha_text(learned: list[float] | None, drawn: float) -> str:
    """The learned mean of alpha beside alpha_mean, for the warm-up's last log line (nothing without ACS)."""
    return "" if learned is None else f"; alpha's mean {', '.join(f'{a:.2f}' for a in learned)} (alpha_mean {drawn:g})"

