"""`python -m natinv bench synth`: seconds per synthesis iteration at given settings (issue: synthesis speed).

Builds a teacher of the requested architecture with random weights (timing does not depend on them), runs one
batch of NI or DI through the pipeline's own synthesis code for warm-up + timed iterations, and prints one JSON
line: s_per_iter (the median of the timed iterations), images_per_s, peak memory, device and every setting.
"""
from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from natinv.config import DIConfig, NIConfig
from natinv.errors import ConfigError

if TYPE_CHECKING:
    import torch

METHODS = {"ni": NIConfig, "di": DIConfig}


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: KiB -> MiB (process peak RSS)


def bench_synth(method: str, arch: str, num_classes: int, batch_size: int, iterations: int, warmup: int = 2,
                device: str = "cpu", threads: int | None = None, image_size: int = 32, channels: int = 3,
                seed: int = 0, channels_last: bool = False) -> dict:
    """Time `iterations` synthesis iterations of one batch after `warmup` untimed ones; the paper's settings of the
    method (NIConfig / DIConfig defaults) apart from the iteration count."""
    import torch

    from natinv.models import build_model  # torch and the synthesis engine: imported when a benchmark runs, not by the CLI parser
    from natinv.runtime import pick_device, set_threads
    from natinv.synthesis import deepinversion, naturalinversion
    from natinv.synthesis.labels import batch_labels
    from natinv.synthesis.objective import InversionObjective, LossWeights

    module, config_cls = {"ni": naturalinversion, "di": deepinversion}[method], METHODS[method]
    set_threads(threads)
    dev = pick_device(device)
    torch.manual_seed(seed)
    teacher = build_model(arch, num_classes, channels, None).to(dev).eval().requires_grad_(False)
    cfg = replace(config_cls(), iterations=warmup + iterations)
    objective = InversionObjective(teacher, LossWeights.of(cfg), channels_last=channels_last)
    labels = batch_labels(batch_size, num_classes, torch.Generator().manual_seed(seed))
    stamps: list[float] = []

    def on_step(_: int) -> None:
        _sync(dev)
        stamps.append(time.perf_counter())

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    start = time.perf_counter()
    for _ in module.synthesize(objective, [(labels, seed)], cfg, num_classes, (channels, image_size, image_size), dev,
                               on_step=on_step):
        pass
    objective.close()
    steps = [b - a for a, b in zip([start, *stamps[:-1]], stamps)][warmup:]
    s_per_iter = statistics.median(steps)
    return {
        "bench": "synth", "method": method, "arch": arch, "num_classes": num_classes, "batch_size": batch_size,
        "image_size": image_size, "iterations": iterations, "warmup": warmup,
        "s_per_iter": s_per_iter, "s_per_iter_mean": statistics.fmean(steps), "images_per_s": batch_size / s_per_iter,
        "peak_memory_mb": _peak_memory_mb(dev), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "engine": {"channels_last": channels_last},
        "settings": asdict(cfg),
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
    s.add_argument("--channels-last", action="store_true", help="engine option: the teacher passes in channels_last")


def run(args) -> None:
    from natinv.models import ARCHS

    if args.arch not in ARCHS:
        raise ConfigError(f"--arch = {args.arch!r}: expected one of {', '.join(ARCHS)}")
    for name in ("num_classes", "batch_size", "iterations", "image_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} = {getattr(args, name)}: expected an integer >= 1")
    if args.warmup < 0:
        raise ConfigError(f"--warmup = {args.warmup}: expected an integer >= 0")
    result = bench_synth(args.method, args.arch, args.num_classes, args.batch_size, args.iterations, args.warmup,
                         args.device, args.threads, args.image_size, channels_last=args.channels_last)
    print(json.dumps(result), flush=True)
