"""One synthesis shard: its batches (each an independent run with its own seed), the stored arrays, a summary.

The seed of a batch is derived from (global seed, teacher, method, global batch index), so a shard can be
re-run alone and gives the same bytes on the same hardware, and no two batches share z, labels or jitter.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from natinv import paths
from natinv.checkpoint import ModelMeta
from natinv.config import MethodConfig, NIConfig, SynthesisConfig
from natinv.data import normalize, normalizer, render_uint8
from natinv.io import read_npz
from natinv.models import StagedNet
from natinv.runtime import derive_seed
from natinv.synthesis import deepinversion, naturalinversion
from natinv.synthesis.labels import batch_labels
from natinv.synthesis.objective import TERMS, InversionObjective, LossWeights
from natinv.train import evaluate


def read_shards(exp: Path, teacher: str, method: str, shards: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of every shard of (teacher, method), concatenated in shard order (other members unread)."""
    parts = [read_npz(paths.shard_npz(exp, teacher, method, shard), keys) for shard in range(shards)]
    return {k: np.concatenate([part[k] for part in parts]) for k in keys}


def batch_plan(num_images: int, batch_size: int, shards: int) -> list[list[tuple[int, int]]]:
    """For every shard, its batches as (global batch index, batch size); the last batch may be smaller."""
    n_batches = -(-num_images // batch_size)
    sizes = [min(batch_size, num_images - i * batch_size) for i in range(n_batches)]
    bounds = [s * n_batches // shards for s in range(shards + 1)]
    return [[(i, sizes[i]) for i in range(bounds[s], bounds[s + 1])] for s in range(shards)]


def synthesize_shard(
    teacher: StagedNet, meta: ModelMeta, teacher_key: str, method_key: str, method: MethodConfig,
    syn: SynthesisConfig, seed: int, shard: int, device: torch.device, log=print,
) -> tuple[dict[str, np.ndarray], dict]:
    plan = batch_plan(syn.num_images, syn.batch_size, syn.shards)[shard]
    shape = (meta.in_channels, meta.image_size, meta.image_size)
    seeds = [derive_seed(seed, teacher_key, method_key, index) for index, _ in plan]
    batches = [(batch_labels(size, meta.num_classes, torch.Generator().manual_seed(derive_seed(s, "labels"))), s)
               for (_, size), s in zip(plan, seeds)]
    teacher = teacher.to(device).eval().requires_grad_(False)
    objective = InversionObjective(teacher, LossWeights.of(method))
    if isinstance(method, NIConfig):
        results = naturalinversion.synthesize(objective, batches, method, meta.num_classes, shape, device)
    else:
        lo, hi = normalizer(meta.mean, meta.std, device)
        pixel_range = ((0 - lo) / hi, (1 - lo) / hi)
        results = deepinversion.synthesize(objective, batches, method, meta.num_classes, shape, device, pixel_range)

    images, labels, curves, best_iters = [], [], [], []
    start = time.perf_counter()
    for k, res in enumerate(results):
        images.append(res.images.float().cpu())
        labels.append(res.labels)
        curves.append(res.curve)
        best_iters.append(res.best_iteration)
        final = dict(zip(TERMS, res.curve[res.best_iteration].tolist()))
        elapsed = time.perf_counter() - start
        log(f"{teacher_key}/{method_key} shard {shard} batch {k + 1}/{len(plan)}: best iteration {res.best_iteration + 1}, "
            f"loss {final['total']:.3f} (CE {final['ce']:.3f}, BN {final['bn']:.3f}), "
            f"{elapsed / ((k + 1) * method.iterations):.3f} s/iteration")
    seconds = time.perf_counter() - start
    objective.close()

    x = torch.cat(images)
    y = torch.cat(labels)
    x16 = x.half()
    rendered = render_uint8(x, meta.mean, meta.std, syn.save_scaling)
    agree_f16 = evaluate(teacher, x16, y, device)["acc"]  # teacher top-1 agreement (%) with the synthesis labels
    agree_u8 = evaluate(teacher, normalize(rendered, meta.mean, meta.std), y, device)["acc"]
    curve = torch.stack(curves).numpy().astype(np.float32)
    best = np.asarray(best_iters, dtype=np.int64)
    at_best = curve[np.arange(len(best)), best]  # (batches, terms)
    arrays = {
        "images": x16.numpy(), "images_uint8": rendered.numpy(), "labels": y.numpy().astype(np.int64),
        "loss_curves": curve, "loss_terms": np.asarray(TERMS), "seeds": np.asarray(seeds, dtype=np.int64),
        "batch_index": np.asarray([i for i, _ in plan], dtype=np.int64), "best_iteration": best,
        "agreement_float16": np.float64(agree_f16), "agreement_uint8": np.float64(agree_u8),
        "mean": np.asarray(meta.mean, dtype=np.float32), "std": np.asarray(meta.std, dtype=np.float32),
    }
    summary = {
        "teacher": teacher_key, "method": method_key, "shard": shard, "images": len(y), "batches": len(plan),
        "batch_size": syn.batch_size, "iterations": method.iterations, "seconds": seconds,
        "s_per_iter": seconds / (len(plan) * method.iterations), "device": str(device),
        "final": {t: float(at_best[:, i].mean()) for i, t in enumerate(TERMS)},
        "agreement_float16": agree_f16, "agreement_uint8": agree_u8, "save_scaling": syn.save_scaling,
        "settings": asdict(method),
    }
    return arrays, summary



