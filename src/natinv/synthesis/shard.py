"""One synthesis shard: its batches (each an independent run with its own seed), the stored arrays, a summary.

The seed of a batch is derived from (global seed, teacher, method, global batch index), so a shard can be
re-run alone and gives the same bytes on the same hardware, and no two batches share z, labels or jitter.
A method that trains a student while it synthesizes (ADI, DAFL, DFAD) is one shard: the student sees every batch.
DAFL and DFAD train a generator instead of optimizing batches, then sample their images from it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from natinv import paths
from natinv.checkpoint import ModelMeta
from natinv.config import GENERATIVE_KINDS, EngineConfig, MethodConfig, NIConfig, SynthesisConfig, method_shards
from natinv.data import normalize, normalizer, render_uint8
from natinv.io import read_npz
from natinv.models import StagedNet
from natinv.runtime import derive_seed
from natinv.synthesis import dafl, deepinversion, dfad, naturalinversion
from natinv.synthesis.competition import Competitor
from natinv.synthesis.cotrain import CoStudent
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
    syn: SynthesisConfig, seed: int, shard: int, device: torch.device, student: nn.Module | None = None, log=print,
    engine: EngineConfig = EngineConfig(),
) -> tuple[dict[str, np.ndarray], dict]:
    """Synthesize one shard of (teacher, method). `student`: the freshly initialised network a co-trained method
    (method.cotrain) distils while it synthesizes; its final weights go into the arrays as `student/*`. `engine`: how
    the teacher passes run (NI / DI; a co-trained student must see the batches one after another, so they never
    share a step)."""
    teacher = teacher.to(device).eval().requires_grad_(False)
    co = None
    if method.cotrain is not None:
        if student is None:
            raise ValueError(f"{method_key} trains a student while it synthesizes: pass one")
        co = CoStudent(student, method.cotrain, _student_steps(method, syn), device)
        engine = replace(engine, batches_per_step=1)
    start = time.perf_counter()
    if method.kind in GENERATIVE_KINDS:
        x, y, parts = _generate(teacher, meta, teacher_key, method_key, method, syn, seed, co, device, log)
    else:
        x, y, parts = _invert(teacher, meta, teacher_key, method_key, method, syn, seed, shard, co, device, log, engine)
    seconds = time.perf_counter() - start

    x16 = x.half()
    rendered = render_uint8(x, meta.mean, meta.std, syn.save_scaling)
    agree_f16 = evaluate(teacher, x16, y, device)["acc"]  # teacher top-1 agreement (%) with the synthesis labels
    agree_u8 = evaluate(teacher, normalize(rendered, meta.mean, meta.std), y, device)["acc"]
    curve, best, terms = parts["loss_curves"], parts["best_iteration"], parts["loss_terms"]
    at_best = curve[np.arange(len(best)), best]  # (batches, terms)
    arrays = {
        "images": x16.numpy(), "images_uint8": rendered.numpy(), "labels": y.numpy().astype(np.int64),
        **parts, "loss_terms": np.asarray(terms),
        "agreement_float16": np.float64(agree_f16), "agreement_uint8": np.float64(agree_u8),
        "mean": np.asarray(meta.mean, dtype=np.float32), "std": np.asarray(meta.std, dtype=np.float32),
    }
    batches = curve.shape[0]
    summary = {
        "teacher": teacher_key, "method": method_key, "shard": shard, "images": len(y), "batches": batches,
        "batch_size": method.batch_size if method.kind in GENERATIVE_KINDS else syn.batch_size,
        "iterations": method.iterations, "seconds": seconds,
        "s_per_iter": seconds / (batches * method.iterations), "device": str(device),
        "final": {t: float(at_best[:, i].mean()) for i, t in enumerate(terms)},
        "agreement_float16": agree_f16, "agreement_uint8": agree_u8, "save_scaling": syn.save_scaling,
        "settings": asdict(method),
    }
    if method.kind not in GENERATIVE_KINDS:
        summary["engine"] = asdict(engine)
    if co is not None:
        arrays |= co.arrays() | {"student_loss": co.loss_curve()}
        summary["cotrain"] = {"student": method.cotrain.student, "steps": len(co.losses),
                              "final_loss": float(co.loss_curve()[-max(1, len(co.losses) // 20):].mean())}
    return arrays, summary


def _student_steps(method: MethodConfig, syn: SynthesisConfig) -> int:
    """All SGD steps of a co-trained student (its cosine schedule spans them)."""
    if method.kind in GENERATIVE_KINDS:
        return method.iterations * method.cotrain.steps
    return -(-syn.num_images // syn.batch_size) * method.cotrain.steps  # one shard: every batch


def _invert(teacher: StagedNet, meta: ModelMeta, teacher_key: str, method_key: str, method: MethodConfig,
            syn: SynthesisConfig, seed: int, shard: int, co: CoStudent | None, device: torch.device, log,
            engine: EngineConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """NI / DI: every batch of the shard optimized on its own; with a co-trained student (ADI), the student takes
    cotrain.steps KD steps on the images so far after every batch, and the competition term plays against it."""
    plan = batch_plan(syn.num_images, syn.batch_size, method_shards(method, syn))[shard]
    shape = (meta.in_channels, meta.image_size, meta.image_size)
    seeds = [derive_seed(seed, teacher_key, method_key, index) for index, _ in plan]
    batches = [(batch_labels(size, meta.num_classes, torch.Generator().manual_seed(derive_seed(s, "labels"))), s)
               for (_, size), s in zip(plan, seeds)]
    competitor = Competitor(co.model, method.competition) if co is not None and method.competition > 0 else None
    objective = InversionObjective(teacher, LossWeights.of(method), competitor, engine)
    if isinstance(method, NIConfig):
        results = naturalinversion.synthesize(objective, batches, method, meta.num_classes, shape, device)
    else:
        lo, hi = normalizer(meta.mean, meta.std, device)
        pixel_range = ((0 - lo) / hi, (1 - lo) / hi)
        results = deepinversion.synthesize(objective, batches, method, meta.num_classes, shape, device, pixel_range)

    images, labels, curves, best_iters = [], [], [], []
    student_gen = torch.Generator().manual_seed(derive_seed(seed, teacher_key, method_key, "cotrain"))
    start = time.perf_counter()
    for k, res in enumerate(results):
        images.append(res.images.float().cpu())
        labels.append(res.labels)
        curves.append(res.curve)
        best_iters.append(res.best_iteration)
        if co is not None:
            co.distill_on(teacher, torch.cat(images), method.cotrain.steps, student_gen)
        final = dict(zip(TERMS, res.curve[res.best_iteration].tolist()))
        elapsed = time.perf_counter() - start
        log(f"{teacher_key}/{method_key} shard {shard} batch {k + 1}/{len(plan)}: best iteration {res.best_iteration + 1}, "
            f"loss {final['total']:.3f} (CE {final['ce']:.3f}, BN {final['bn']:.3f}"
            + (f", competition {final['competition']:.3f}; student KD loss {co.losses[-1].item():.3f}" if co else "")
            + f"), {elapsed / ((k + 1) * method.iterations):.3f} s/iteration")
    objective.close()
    parts = {"loss_curves": torch.stack(curves).numpy().astype(np.float32), "loss_terms": TERMS,
             "seeds": np.asarray(seeds, dtype=np.int64), "batch_index": np.asarray([i for i, _ in plan], dtype=np.int64),
             "best_iteration": np.asarray(best_iters, dtype=np.int64)}
    return torch.cat(images), torch.cat(labels), parts


GENERATIVE = {"dafl": dafl, "dfad": dfad}


def _generate(teacher: StagedNet, meta: ModelMeta, teacher_key: str, method_key: str, method: MethodConfig,
              syn: SynthesisConfig, seed: int, co: CoStudent, device: torch.device, log
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """DAFL / DFAD: train the generator with the student, then sample synthesis.num_images images from it (train-mode
    BatchNorm, as the student saw them during training), labelled with the teacher's prediction."""
    module = GENERATIVE[method.kind]
    shape = (meta.in_channels, meta.image_size, meta.image_size)
    batch_seed = derive_seed(seed, teacher_key, method_key, 0)
    gen = torch.Generator().manual_seed(batch_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(batch_seed)
        start = time.perf_counter()
        generator, curve = module.train(teacher, co, method, shape, device, gen)
    last = curve[-max(1, len(curve) // 20):].mean(0)
    log(f"{teacher_key}/{method_key}: generator trained for {method.iterations} steps in {time.perf_counter() - start:.0f} s; "
        "last 5 %: " + ", ".join(f"{t} {v:.3f}" for t, v in zip(module.TERMS, last.tolist())))
    images, labels = [], []
    with torch.no_grad():
        for i in range(0, syn.num_images, syn.batch_size):
            n = min(syn.batch_size, syn.num_images - i)
            x = generator.sample(n, gen)
            images.append(x.float().cpu())
            labels.append(teacher(x).argmax(1).cpu())
    parts = {"loss_curves": curve.numpy().astype(np.float32)[None], "loss_terms": module.TERMS,
             "seeds": np.asarray([batch_seed], dtype=np.int64), "batch_index": np.zeros(1, dtype=np.int64),
             "best_iteration": np.asarray([method.iterations - 1], dtype=np.int64)}
    return torch.cat(images), torch.cat(labels), parts
