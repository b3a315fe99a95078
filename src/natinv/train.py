"""Supervised training on in-memory tensors: SGD with momentum, cosine schedule, crop+flip; evaluation.

The loop is shared by teacher training (cross-entropy on real labels) and the students (KD, scratch): the
caller gives the per-batch loss.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from natinv.data import crop_flip, normalize
from natinv.errors import NatinvError
from natinv import tracking
from natinv.runtime import eta, log


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last for training on GPUs. Not on CPU: it was 20-25 % faster there, but a 1x1 stride-2 convolution with
    4 input channels crashes in the backward to its weights on one thread (torch 2.14.1, benchmarks/README.md), and a
    crash is worse than speed. Synthesis is not affected (its teacher is frozen: no weight gradients), so its
    engine uses channels_last on CPU too (EngineConfig)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format

def inference_batch(device: torch.device) -> int:
    """Batch size of forward-only passes (evaluation, features). 128 on CPU, where large batches fall out of cache:
    10,000 images through ResNet-8 width 16 on one thread took 12.2 s in batches of 1,000 and 4.9 s in batches of 128
    (2.5x; width 8 and VGG-11 width 8: 1.6x and 1.2x). Large on GPUs, where it is a launch-count question."""
    return 1024 if device.type == "cuda" else 128


BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # a data set's per-channel (mean, std) of pixels in [0, 1]


def widened(x: torch.Tensor) -> torch.Tensor:
    """x in float32 when autocast made it a 16-bit float, else itself (float32, or float64 in a numerics test)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def model_input(batch: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """A batch as a model takes it, float32 and normalized: uint8 pixels (real images, stored as read) normalized with
    the data set's `normalization`; stored float16 or float32 tensors (synthesized images: normalized already) widened."""
    if batch.dtype == torch.uint8:
        if normalization is None:
            raise ValueError("uint8 pixels need their data set's mean and std to become a model's input")
        return normalize(batch, *normalization)
    return batch.float()


def resident(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t where a training loop reads it from: on a GPU when it takes at most a quarter of the GPU's free memory (every
    step then indexes it there: no copy from the host), else on the host, pinned so its batches copy asynchronously.
    On the CPU, t itself."""
    if device.type != "cuda" or t.device == device:
        return t
    free, _ = torch.cuda.mem_get_info(device)
    return t.to(device) if t.numel() * t.element_size() <= free // 4 else t.pin_memory()


def autocast(device: torch.device, precision: str | None, cache: bool = True):
    """bfloat16 autocast on `device` when `precision` is "bf16" (weights and losses stay float32), else a no-op.
    cache=False: no cache of weights cast once per context (what a CUDA graph capture needs)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=cache)


@dataclass
class SGDSchedule:
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             normalization: Normalization | None = None) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy of `model` on `x`: normalized images, or uint8 pixels and their
    data set's `normalization` (model_input)."""
    batch_size = inference_batch(device)
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        xb = model_input(x[i:i + batch_size].to(device), normalization).contiguous(memory_format=memory_format(device))
        yb = y[i:i + batch_size].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return {"acc": 100.0 * correct / len(x), "loss": loss / len(x)}


EPOCH_EVAL_IMAGES = 1000  # the per-epoch curve uses the first 1,000 test images (+-1.5 points); the final accuracy all of them
EPOCH_ACC = f"test_acc_first_{EPOCH_EVAL_IMAGES}"  # its name in the epoch records and in MLflow (`epoch/...`)


def epoch_eval(model: nn.Module, xt: torch.Tensor, yt: torch.Tensor, device: torch.device,
               normalization: Normalization | None = None) -> Callable[[int], dict[str, float]]:
    """`on_epoch` for fit: accuracy on the first EPOCH_EVAL_IMAGES test images (a cheap learning curve)."""
    return lambda _: {EPOCH_ACC: evaluate(model, xt[:EPOCH_EVAL_IMAGES], yt[:EPOCH_EVAL_IMAGES], device,
                                                  normalization)["acc"]}


def adam(params, lr: float | None = None, capturable: bool = False) -> torch.optim.Adam:
    """Adam with its fused kernel: one operator updates every parameter of every group (the per-parameter loop
    dispatches about ten each and reads each step count back to the host); the same update up to float rounding.
    `capturable`: the bias correction computed on the device too, so a CUDA graph can replay the step."""
    return torch.optim.Adam(params, fused=True, capturable=capturable, **({} if lr is None else {"lr": lr}))


def sgd_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """Nesterov SGD with weight decay on the weights only (not on biases and BN parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=True)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    batch_loss: BatchLoss,
    schedule: SGDSchedule,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[int], dict[str, float]] | None = None,
    desc: str = "train",
    normalization: Normalization | None = None,
    precision: str | None = None,
) -> list[dict[str, float]]:
    """Train `model` on (x, targets) with crop+flip; returns one record per epoch (train loss, seconds, on_epoch's).

    x: uint8 pixels with their `normalization`, or normalized float16/float32 images (model_input). The data stay
    on the GPU when they fit (`resident`): the shuffle, the batches and the crop and flip draws are made there, and a
    step waits for nothing from the host. precision "bf16": the forward passes and losses under bfloat16 autocast
    (the weights, their gradients and the optimizer stay float32)."""
    x, targets = resident(x, device), resident(targets, device)
    gen = torch.Generator(device=x.device).manual_seed(seed)  # the shuffle is drawn where the data are
    draws = gen if x.device == device else torch.Generator(device=device).manual_seed(seed)  # crop and flip: on the device
    layout = memory_format(device)
    model.to(device, memory_format=layout).train()
    opt = sgd_optimizer(model, schedule.lr, schedule.momentum, schedule.weight_decay)
    steps_per_epoch = max(1, len(x) // schedule.batch_size)  # drop the ragged last batch: stable BN statistics
    sched = cosine_with_warmup(opt, schedule.epochs * steps_per_epoch, int(schedule.warmup_epochs * steps_per_epoch))
    history = []
    for epoch in range(schedule.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=gen, device=x.device)
        total = torch.zeros((), device=device)
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{schedule.epochs}", leave=False, mininterval=2,
                   disable=None)  # a bar on a terminal; in logs only the per-epoch lines
        for step in bar:
            idx = order[step * schedule.batch_size:(step + 1) * schedule.batch_size]
            xb = model_input(x[idx].to(device, non_blocking=True), normalization)
            xb = crop_flip(xb, generator=draws).contiguous(memory_format=layout)
            with autocast(device, precision):
                loss = batch_loss(model, xb, targets[idx].to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        record = {"epoch": epoch + 1, "train_loss": total.item() / steps_per_epoch, "seconds": time.perf_counter() - start}
        if not math.isfinite(record["train_loss"]):
            raise NatinvError(f"{desc} epoch {epoch + 1}/{schedule.epochs}: the training loss is {record['train_loss']} "
                              f"(diverged at lr {schedule.lr:g}); nothing was written. Lower the learning rate")
        if on_epoch is not None:
            record.update(on_epoch(epoch))
        history.append(record)
        tracking.emit_epoch(record)
        left = schedule.epochs - epoch - 1
        log(f"{desc} epoch {epoch + 1}/{schedule.epochs}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
            + (f"; {eta(sum(r['seconds'] for r in history) / len(history), left)}" if left else ""))
    return history


def cross_entropy_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(widened(model(xb)), yb)
