"""One synthesis shard: the job (teacher, method, shard, seeds), the method's own synthesis (natinv.synthesis.registry
picks its `run_shard`), then what every shard stores: float16 tensors, uint8 renderings, labels, the teacher's
agreement with the labels, and a summary.

The seed of a batch is derived from (global seed, teacher, method, global batch index), so a shard can be
re-run alone and gives the same bytes on the same hardware, and no two batches share z, labels or jitter.
A method that trains a student while it synthesizes (ADI, DAFL, DFAD) is one shard: the student sees every batch.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from natinv.checkpoint import ModelMeta
from natinv.config import EngineConfig, MethodConfig, SynthesisConfig
from natinv.data import normalize, render_uint8
from natinv.errors import NatinvError
from natinv.io import Chunked
from natinv.models import StagedNet
from natinv.runtime import device_record
from natinv.synthesis import registry
from natinv.synthesis.cotrain import CoStudent
from natinv.synthesis.progress import Progress
from natinv.train import evaluate


RENDER_CHUNK = 4096  # images rendered, checked and scored at a time: the post-processing's memory beside the images


def first_fault(curve: torch.Tensor, images: torch.Tensor, images_at: int) -> int | None:
    """Where an optimization went wrong: the first step (0-based) of `curve` (steps, terms) whose terms are not all
    finite, `images_at` when only the images are not, or None when both are sound."""
    bad = ~torch.isfinite(curve).all(dim=-1)
    if bool(bad.any()):
        return int(bad.nonzero()[0])
    return None if bool(torch.isfinite(images).all()) else images_at


@dataclass
class ShardJob:
    """Everything a method's run_shard needs."""

    teacher: StagedNet  # on `device`, eval mode, no weight gradients
    meta: ModelMeta
    teacher_key: str
    method_key: str
    method: MethodConfig
    syn: SynthesisConfig
    seed: int
    shard: int
    device: torch.device
    co: CoStudent | None  # the student a co-trained method distils while it synthesizes
    log: object = print
    engine: EngineConfig = field(default_factory=EngineConfig)
    on_step: object = None  # called after every optimizer step (natinv.runtime.IterationProgress, set by run_batches)
    meta_path: Path | None = None  # a method with `meta`: the warm-up stage's meta-parameters every batch starts from
    progress: Progress = field(default_factory=Progress)  # where the shard saves its progress and resumes from
    # every batch's losses per iteration to MLflow as it runs (tracking.live_curves); False: one point per batch, the
    # mean curves thinned, and the per-batch curves left to the shard's arrays
    live_curves: bool = True

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.meta.in_channels, self.meta.image_size, self.meta.image_size)


@dataclass
class ShardImages:
    """What a method's run_shard returns."""

    images: torch.Tensor  # normalized, float16 (the shard stores it so), on any device
    labels: torch.Tensor
    arrays: dict[str, np.ndarray]  # the method's own records (loss curves, seeds, ...), stored in the shard
    final: dict[str, float]  # the losses the summary reports (at each batch's best iteration, or the run's end)
    summary: dict  # the method's own summary entries (batches, batch size, optimization steps)
    series: dict[str, np.ndarray]  # curves for MLflow


def synthesize_shard(
    teacher: StagedNet, meta: ModelMeta, teacher_key: str, method_key: str, method: MethodConfig,
    syn: SynthesisConfig, seed: int, shard: int, device: torch.device, student: nn.Module | None = None, log=print,
    engine: EngineConfig = EngineConfig(), meta_path: Path | None = None, progress: Progress | None = None,
    live_curves: bool = True,
) -> tuple[dict[str, np.ndarray | Chunked], dict, dict[str, np.ndarray]]:
    """Synthesize one shard of (teacher, method): its arrays, its summary and its curves for MLflow. `student`: the
    freshly initialised network a co-trained method (method.cotrain) distils while it synthesizes; its final weights go
    into the arrays as `student/*`. `engine`: how the teacher passes run (NI / DI; a co-trained student must see the
    batches one after another, so they never share a step). `meta_path`: a method with `meta` starts every batch from
    the meta-parameters in this file (the warm-up stage's output). `progress`: where the shard saves its progress and
    resumes from (None: nothing saved). `live_curves`: see ShardJob. `images_uint8` is rendered chunk by chunk as it is written (io.Chunked)."""
    teacher = teacher.to(device).eval().requires_grad_(False)
    co = None
    if method.cotrain is not None:
        if student is None:
            raise ValueError(f"{method_key} trains a student while it synthesizes: pass one")
        co = CoStudent(student, method.cotrain, _student_steps(method, syn), device, engine.autocast)
        engine = replace(engine, batches_per_step=1)
    entry = registry.of(method)
    if registry.meta_of(method) is not None and meta_path is None:
        raise ValueError(f"{method_key} starts from meta-parameters: pass the warm-up stage's file")
    job = ShardJob(teacher, meta, teacher_key, method_key, method, syn, seed, shard, device, co, log, engine,
                   meta_path=meta_path, progress=progress or Progress(), live_curves=live_curves)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = entry.synthesizer()(job)
    # a resumed shard's seconds include the runs before (its CPU seconds are this process's)
    seconds, cpu_seconds = time.perf_counter() - start + job.progress.earlier_s, time.process_time() - cpu_start

    x16, y = out.images.to("cpu", torch.float16), out.labels.cpu()  # the one host copy of the shard's images
    _check_finite(f"{teacher_key}/{method_key} shard {shard}", {"images": x16, **out.arrays})
    agree_f16 = evaluate(teacher, x16, y, device)["acc"]  # teacher top-1 agreement (%) with the synthesis labels
    render = functools.partial(render_uint8, mean=meta.mean, std=meta.std, scaling=syn.save_scaling)
    agree_u8 = 100.0 * sum(round(evaluate(teacher, normalize(render(xb), meta.mean, meta.std), yb, device)["acc"] * len(yb) / 100)
                           for xb, yb in zip(x16.split(RENDER_CHUNK), y.split(RENDER_CHUNK))) / len(y)
    arrays = {
        "images": x16.numpy(), "labels": y.numpy().astype(np.int64), **out.arrays,
        "images_uint8": Chunked(tuple(x16.shape), np.dtype(np.uint8),
                                lambda: (render(xb).numpy() for xb in x16.split(RENDER_CHUNK))),
        "agreement_float16": np.float64(agree_f16), "agreement_uint8": np.float64(agree_u8),
        "mean": np.asarray(meta.mean, dtype=np.float32), "std": np.asarray(meta.std, dtype=np.float32),
    }
    summary = {
        "teacher": teacher_key, "method": method_key, "shard": shard, "images": len(y), **out.summary,
        "iterations": method.iterations, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "s_per_iter": seconds / out.summary["steps"], "device": str(device), "hardware": device_record(device), "final": out.final,
        "agreement_float16": agree_f16, "agreement_uint8": agree_u8, "save_scaling": syn.save_scaling,
        "settings": asdict(method),
    }
    if not entry.generative:
        # how it ran (not when it saved, nor how training runs)
        summary["engine"] = {k: v for k, v in asdict(engine).items() if k not in ("save_every_minutes", "train_autocast")}
    series = dict(out.series)
    if co is not None:
        _check_finite(f"{teacher_key}/{method_key} shard {shard} co-trained student", co.arrays() | {"student_loss": co.loss_curve()})
        arrays |= co.arrays() | {"student_loss": co.loss_curve()}
        summary["cotrain"] = {"student": method.cotrain.student, "steps": len(co.losses),
                              "final_loss": float(co.loss_curve()[-max(1, len(co.losses) // 20):].mean())}
        series["student/loss"] = arrays["student_loss"]
    return arrays, summary, series


def _check_finite(name: str, arrays: dict) -> None:
    """Nothing non-finite is stored or scored (the teacher's argmax of NaN 'agrees' with every label)."""
    for key, value in arrays.items():
        if isinstance(value, np.ndarray) and value.dtype.kind != "f":
            continue
        t = torch.as_tensor(value)
        if not t.is_floating_point():
            continue
        finite = [torch.isfinite(c).reshape(len(c), -1).all(1) for c in t.split(RENDER_CHUNK)] if t.dim() else [torch.isfinite(t)]
        if not all(bool(f.all()) for f in finite):
            bad = int(sum(int((~f).sum()) for f in finite))
            raise NatinvError(f"{name}: {bad} of {len(t) if t.dim() else 1} {key} hold NaN or infinite values (float16 "
                              f"holds at most 65504); nothing was written. Lower the method's learning rates, or check the teacher")


def _student_steps(method: MethodConfig, syn: SynthesisConfig) -> int:
    """All SGD steps of a co-trained student (its cosine schedule spans them)."""
    if registry.of(method).generative:
        return method.iterations * method.cotrain.steps
    return -(-syn.num_images // syn.batch_size) * method.cotrain.steps  # one shard: every batch
