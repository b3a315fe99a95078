"""`python -m natinv bench synth|train`: speed of the pipeline's own synthesis and training code at given settings.

synth: builds a teacher of the requested architecture with random weights (timing does not depend on them), runs one
batch of NI or DI through the pipeline's own synthesis code for warm-up + timed iterations, and prints one JSON
line: s_per_iter (the median of the timed iterations), images_per_s, peak memory, device and every setting.
train: a student trained by the pipeline's own loop (natinv.train.fit: the KD stage's with --teacher, else
cross-entropy) on random images stored as the pipeline stores them; one untimed epoch, then a timed one.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from natinv.config import EngineConfig
from natinv.errors import ConfigError

if TYPE_CHECKING:
    import torch

METHODS = {"ni": "naturalinversion", "di": "deepinversion"}  # --method -> its kind (natinv.synthesis.registry)
PAPER_IMAGE_ITERATIONS = 50_000 * 2_000


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Waste:
    """What the official NaturalInversion loop does on top of ours, to measure what leaving it out saves."""

    teacher_grads: bool = False  # the teacher's weight gradients are computed (and never used)
    recompute: bool = False  # an extra teacher forward per iteration (the official code re-runs the kept batch)


ALLOCATIONS = {"empty", "empty_strided", "new_empty", "new_empty_strided", "empty_like"}  # memory only, no kernel


def count_ops(run) -> tuple[int, int]:
    """(operators, kernels) `run()` dispatches: every ATen call below autograd (its backward's included), and those
    that launch a kernel on a GPU (not views such as detach, view or select, nor bare allocations)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            Count.kernels += not func.is_view and func.overloadpacket.__name__ not in ALLOCATIONS
            return func(*args, **(kwargs or {}))

    with Count():
        run()
    return Count.ops, Count.kernels


def ops_per_batch_iteration(module, objective, plan, cfg, num_classes: int, shape, device) -> tuple[float, float]:
    """(operators, kernels) one batch's iteration dispatches: a run of two iterations less a run of one (what a run
    does once, its set-up and results, cancels), over the batches one step advances."""
    def run(iterations: int):
        return lambda: [None for _ in module.synthesize(objective, plan, replace(cfg, iterations=iterations), num_classes,
                                                        shape, device)]
    (ops2, k2), (ops1, k1) = count_ops(run(2)), count_ops(run(1))
    return (ops2 - ops1) / len(plan), (k2 - k1) / len(plan)


def bench_synth(method: str, arch: str, num_classes: int, batch_size: int, iterations: int, warmup: int = 2,
                device: str = "cpu", threads: int | None = None, image_size: int = 32, channels: int = 3,
                seed: int = 0, engine: EngineConfig = EngineConfig(), batches: int | None = None,
                reuse_host_memory: bool = True, waste: Waste = Waste(), deterministic: bool = False) -> dict:
    """Time `iterations` synthesis steps after `warmup` untimed ones, for every group of engine.batches_per_step
    batches of `batch_size` (`batches` in all; default one group); the paper's settings of the method (NIConfig /
    DIConfig defaults) apart from the iteration count. s_per_iter is the median step; images_per_s counts every
    batch of a step. `deterministic`: as the params' key (False: cuDNN autotuning and TF32, as the pipeline's default).
    With engine.capture the untimed iterations include the eager warm-up and the capture: every timed one is a replay;
    the operator counts are those of the iteration a graph captures (what it launches at once)."""
    import torch

    from natinv.synthesis.capture import WARMUP

    from natinv import runtime
    from natinv.models import build_model  # torch and the synthesis engine: imported when a benchmark runs, not by the CLI parser
    from natinv.synthesis import registry
    from natinv.synthesis.labels import batch_labels
    from natinv.synthesis.objective import InversionObjective, LossWeights

    entry = registry.METHODS[METHODS[method]]
    module, config_cls = importlib.import_module(f"natinv.synthesis.{entry.module}"), entry.config
    runtime.set_threads(threads)
    dev = runtime.pick_device(device)
    runtime.configure_device(dev, deterministic)  # the GPU settings a pipeline job runs with
    host_memory = reuse_host_memory and dev.type == "cpu" and runtime.reuse_host_memory()
    torch.manual_seed(seed)
    teacher = build_model(arch, num_classes, channels, None).to(dev)  # the objective freezes it
    if engine.capture:
        warmup = max(warmup, WARMUP + 1)
    cfg = replace(config_cls(), iterations=warmup + iterations)
    objective = InversionObjective(teacher, LossWeights.of(cfg), engine=engine)
    teacher.requires_grad_(waste.teacher_grads)
    batches = batches or engine.batches_per_step
    plan = [(batch_labels(batch_size, num_classes, torch.Generator().manual_seed(seed + i)), seed + i) for i in range(batches)]
    extra = torch.randn(batch_size, channels, image_size, image_size, device=dev) if waste.recompute else None
    stamps: list[float] = []

    def on_step(_: int) -> None:
        if extra is not None:
            with torch.no_grad():
                objective.teacher(extra.contiguous(memory_format=objective.layout))
        _sync(dev)
        stamps.append(time.perf_counter())

    ops, kernels = ops_per_batch_iteration(module, objective, plan, cfg, num_classes, (channels, image_size, image_size), dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    start = time.perf_counter()
    for _ in module.synthesize(objective, plan, cfg, num_classes, (channels, image_size, image_size), dev, on_step=on_step):
        pass
    total = time.perf_counter() - start
    objective.close()
    peak = runtime.peak_memory_mb(dev)  # the device's when on a GPU, else the process's
    steps = [b - a for a, b in zip([start, *stamps[:-1]], stamps)]
    per_group = warmup + iterations
    timed = [t for i, t in enumerate(steps) if i % per_group >= warmup]
    s_per_iter = statistics.median(timed)
    per_step = min(engine.batches_per_step, batches)
    return {
        "bench": "synth", "method": method, "arch": arch, "num_classes": num_classes, "batch_size": batch_size,
        "image_size": image_size, "iterations": iterations, "warmup": warmup, "batches": batches,
        "s_per_iter": s_per_iter, "s_per_iter_mean": statistics.fmean(timed),
        "images_per_s": per_step * batch_size / s_per_iter, "total_s": total, "ops_per_batch_iteration": ops,
        "kernels_per_batch_iteration": kernels,
        # the paper's CIFAR-10 set: 50k images x 2k iterations, on one such device at this rate
        "hours_50k_images_2k_iterations": PAPER_IMAGE_ITERATIONS * s_per_iter / (per_step * batch_size) / 3600,
        "peak_memory_mb": peak.get("device_mb", peak["host_mb"]), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else runtime.cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "engine": asdict(engine) | {"reuse_host_memory": host_memory}, "deterministic": deterministic, "waste": asdict(waste),
        "hardware": runtime.device_record(dev),
        "settings": asdict(cfg),
    }


def bench_train(arch: str, num_classes: int, batch_size: int, steps: int, device: str = "cpu", threads: int | None = None,
                teacher: str | None = None, image_size: int = 32, channels: int = 3, stored: str = "float16",
                precision: str | None = None, deterministic: bool = False, seed: int = 0) -> dict:
    """Images per second of a training step: `steps` steps of `batch_size` per epoch, one epoch to warm up (cuDNN
    autotuning, allocator), the second timed. stored: how the images are kept, as the pipeline keeps them (float16:
    synthesized; uint8: real pixels, normalized batch by batch). teacher: an architecture whose soft targets the student
    learns (KD at T = 4, the teacher's forward pass in every step), else cross-entropy on random labels."""
    import torch

    from natinv import runtime
    from natinv.distill import kd_loss
    from natinv.models import build_model
    from natinv.train import SGDSchedule, cross_entropy_loss, fit

    runtime.set_threads(threads)
    dev = runtime.pick_device(device)
    runtime.configure_device(dev, deterministic)
    torch.manual_seed(seed)
    n = batch_size * steps
    if stored == "uint8":
        x = torch.randint(0, 256, (n, channels, image_size, image_size), dtype=torch.uint8)
    else:
        x = torch.randn(n, channels, image_size, image_size).to(torch.float16)
    y = torch.randint(0, num_classes, (n,))
    model = build_model(arch, num_classes, channels)
    loss = cross_entropy_loss
    if teacher is not None:
        loss = kd_loss(build_model(teacher, num_classes, channels).to(dev, memory_format=torch.channels_last
                                                                        if dev.type == "cuda" else torch.contiguous_format), 4.0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    history = fit(model, x, y, loss, SGDSchedule(2, batch_size, 0.05), dev, seed, desc="bench",
                  normalization=((0.5,) * channels, (0.25,) * channels), precision=precision)
    seconds = history[-1]["seconds"]
    peak = runtime.peak_memory_mb(dev)
    return {
        "bench": "train", "arch": arch, "teacher": teacher, "num_classes": num_classes, "batch_size": batch_size,
        "image_size": image_size, "steps": steps, "stored": stored, "precision": precision,
        "s_per_step": seconds / steps, "images_per_s": n / seconds, "warmup_epoch_s": history[0]["seconds"],
        "peak_memory_mb": peak.get("device_mb", peak["host_mb"]), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else runtime.cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "deterministic": deterministic,
        "hardware": runtime.device_record(dev),
    }


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="speed benchmarks (prints one JSON line)")
    which = bench.add_subparsers(dest="bench", required=True)
    s = which.add_parser("synth", help="seconds per synthesis iteration of one batch, random-weight teacher")
    s.add_argument("--method", choices=sorted(METHODS), required=True)
    s.add_argument("--arch", default="resnet34", help="a teacher architecture of natinv.models (resnet34, vgg11, ...)")
    s.add_argument("--num-classes", type=int, default=10)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--iterations", type=int, default=5, help="timed iterations (after --warmup untimed ones)")
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    s.add_argument("--image-size", type=int, default=32)
    s.add_argument("--batches", type=int, help="batches in all (default: one step's worth, --batches-per-step)")
    s.add_argument("--params", action="append", metavar="YAML",
                   help="take the engine options and `deterministic` from this params stack (repeatable, as a stage's "
                        "--params), the engine a pipeline job of it runs; the engine flags below are then ignored")
    e = s.add_argument_group("engine options (natinv.config.EngineConfig; defaults as the pipeline's)")
    e.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=EngineConfig.channels_last)
    e.add_argument("--autocast", choices=["bf16"], default=EngineConfig.autocast, help="synthesis under bfloat16 autocast (generator, FTP, ACS, teacher passes; losses in float32)")
    e.add_argument("--compile", action=argparse.BooleanOptionalAction, default=EngineConfig.compile)
    e.add_argument("--batches-per-step", type=int, default=EngineConfig.batches_per_step)
    e.add_argument("--capture", action=argparse.BooleanOptionalAction, default=EngineConfig.capture,
                   help="a CUDA graph of the whole iteration, replayed (on a CPU: the same static iteration, uncaptured)")
    e.add_argument("--deterministic", action="store_true",
                   help="as the params' `deterministic: true` (GPU: no cuDNN autotuning, no TF32)")
    e.add_argument("--reuse-host-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="keep freed host memory in the heap (natinv.runtime.reuse_host_memory; CPU)")
    w = s.add_argument_group("the official loop's extra work, to measure what leaving it out saves")
    t = which.add_parser("train", help="images per second of the pipeline's training loop (KD with --teacher)")
    t.add_argument("--arch", default="resnet18", help="the student's architecture (resnet18, vgg11, mobilenetv2, ...)")
    t.add_argument("--teacher", help="the teacher's architecture: KD steps (its forward pass in each); none: cross-entropy")
    t.add_argument("--num-classes", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--steps", type=int, default=10, help="steps per epoch (one untimed epoch, then one timed)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    t.add_argument("--image-size", type=int, default=32)
    t.add_argument("--stored", choices=["float16", "uint8"], default="float16",
                   help="how the images are kept: float16 (synthesized) or uint8 (real pixels)")
    t.add_argument("--train-autocast", choices=["bf16"], help="as engine.train_autocast")
    t.add_argument("--deterministic", action="store_true", help="as the params' `deterministic: true`")
    t.add_argument("--params", action="append", metavar="YAML",
                   help="take engine.train_autocast and `deterministic` from this params stack (repeatable)")
    w.add_argument("--teacher-grads", action="store_true", help="compute the teacher's weight gradients")
    w.add_argument("--recompute", action="store_true", help="one extra teacher forward per iteration")


def run(args) -> None:
    from natinv.models import ARCHS

    names = ("num_classes", "batch_size", "iterations", "image_size", "batches_per_step", "batches", "steps")
    for name in names:
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} = {getattr(args, name)}: expected an integer >= 1")
    for flag in ("arch", "teacher"):
        if getattr(args, flag, None) is not None and getattr(args, flag) not in ARCHS:
            raise ConfigError(f"--{flag} = {getattr(args, flag)!r}: expected one of {', '.join(ARCHS)}")
    if args.params:  # the settings a pipeline job of this params stack runs with
        from natinv.config import load_config

        cfg = load_config(args.params)
        args.deterministic = cfg.deterministic
        if args.bench == "train":
            args.train_autocast = cfg.engine.train_autocast
    if args.bench == "train":
        result = bench_train(args.arch, args.num_classes, args.batch_size, args.steps, args.device, args.threads,
                             args.teacher, args.image_size, stored=args.stored, precision=args.train_autocast,
                             deterministic=args.deterministic)
        print(json.dumps(result), flush=True)
        return
    if args.warmup < 0:
        raise ConfigError(f"--warmup = {args.warmup}: expected an integer >= 0")
    engine = (cfg.engine if args.params else
              EngineConfig(channels_last=args.channels_last, autocast=args.autocast, compile=args.compile,
                           batches_per_step=args.batches_per_step, capture=args.capture))
    result = bench_synth(args.method, args.arch, args.num_classes, args.batch_size, args.iterations, args.warmup,
                         args.device, args.threads, args.image_size, engine=engine, batches=args.batches,
                         reuse_host_memory=args.reuse_host_memory, waste=Waste(args.teacher_grads, args.recompute),
                         deterministic=args.deterministic)
    print(json.dumps(result), flush=True)
