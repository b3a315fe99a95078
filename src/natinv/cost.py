"""What a run will cost before it runs: per job its arithmetic (FLOPs), its peak host and device memory and its hours on
a named device; `python -m natinv cost --params ...` prints them per stage, and the Snakefile asks a cluster for each
job's memory (`mem_mb`) and time (`runtime`) from the same numbers.

FLOPs are counted, not written by hand: torch's FlopCounterMode runs the package's own code (a synthesis shard, a
training step, a forward pass) once at batch 2 on random weights, and a job's count is that figure per image times its
sizes (images, iterations, epochs, student steps). Iteration-level figures come from the difference of two runs (1 and
2 iterations, or 1 and 2 student steps), so start-up work is not counted as iterations. Activation memory is counted
the same way: the bytes autograd saves for the backward pass per image.

Memory (MB) of a job = the process (torch and the package) + what it holds by design: a method's images once in
float16 (2 bytes per value) or uint8, the real data set in uint8, one batch's activations, a bounded chunk for
rendering, metrics and writing. Hours = start-up + FLOPs / the device's measured rate for that kind of work (RATES;
GPU rates are marked estimated until benchmarks/gpu_check.py has measured them). A cluster request adds a margin.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from natinv import datasets, plan
from natinv.config import Config

MB = 2**20


@dataclass(frozen=True)
class Rate:
    """A device's effective arithmetic rate (FLOP/s, as counted by FlopCounterMode) per kind of work."""

    name: str
    synthesis: float
    training: float
    inference: float
    startup_s: float  # a job's fixed cost: the interpreter, torch, the package, MLflow, reading its inputs
    step_s: float  # the fixed cost of one optimizer step or forward batch (operator dispatch, Python)
    measured: str | None  # where the figures come from; None: an estimate


RATES: dict[str, Rate] = {
    # fitted to one default run and one paper-cifar10 + smoke run on this project's 2-core machine, two jobs at a time
    # (benchmarks/cost_calibration.py --fit; docs/cost.md)
    "cpu": Rate("2-core AMD EPYC (this project's machine)", synthesis=6.5e10, training=1.5e11, inference=8.0e10,
                startup_s=2.9, step_s=0.049, measured="docs/cost.md"),
    # not measured yet: fp32 eager with TF32 convolutions, about a tenth of the tensor-core peak
    "h100": Rate("NVIDIA H100", synthesis=6.0e13, training=5.0e13, inference=1.0e14, startup_s=20.0, step_s=0.015,
                 measured=None),
    "h200": Rate("NVIDIA H200", synthesis=6.5e13, training=5.5e13, inference=1.1e14, startup_s=20.0, step_s=0.015,
                 measured=None),
}
PROCESS_MB = 700  # a stage process: Python, torch, numpy, the package, MLflow (the default run's report job: 764 MB RSS)
TRAIN_PROCESS_MB = 1000  # one that trains a network (autograd, optimizer, oneDNN's caches: KD and scratch of the
# default run, 1.1 GB RSS with 2.4 MB of images)
CHUNK_MB = 256  # the bounded chunks: rendering, precision/recall distance blocks, npz writing
COUNTING = 2  # the counting functions' own version: raise it when they change (kept counts are then made again)
MARGIN = 1.5  # what a cluster request adds to an estimate (memory and time)
DATA_STEPS_PER_MB = 0.5  # the data stage: steps per MB of the data set (the default's 70 MB of Fashion-MNIST: 4.7 s)
REPORT_STEPS = 50  # the report: its figures and pages (3-6 s in the default and smoke runs)
TSNE_STEPS = 0.01  # t-SNE's work in steps per point x log2(points) x layer (the default run: 2 layers of 1,500 points, 13 s)


@dataclass(frozen=True)
class Shapes:
    channels: int
    size: int
    classes: int
    train: int
    test: int
    source: str = dataclasses.field(default="", compare=False, repr=False)  # where the figures come from (not in a probe key)

    @property
    def values(self) -> int:
        return self.channels * self.size * self.size


@dataclass
class JobCost:
    stage: str
    job: dict[str, str]
    flop: float
    kind: str  # synthesis | training | inference
    host_mb: float
    device_mb: float
    steps: float = 0.0  # optimizer steps and forward batches, one after another (each has a fixed dispatch cost)

    def seconds(self, rate: Rate) -> float:
        return rate.startup_s + self.steps * rate.step_s + self.flop / getattr(rate, self.kind)


def shapes(cfg: Config) -> Shapes:
    """The data set's shape: from the data stage's manifest when it ran, else the data set's known shape."""
    from natinv.io import read_json

    manifest = cfg.exp_dir / "data/manifest.json"
    if manifest.is_file():
        m = read_json(manifest)
        return Shapes(m["in_channels"], m["image_size"], m["num_classes"], m["train_images"], m["test_images"],
                      "the data stage's manifest")
    d = cfg.data
    if d.dataset == "custom":
        c, s, k, train, test, source = _custom_shapes(d)
    else:
        c, s, k = datasets.SHAPES[d.dataset]
        train, test = datasets.STANDIN_SIZES if d.standin else datasets.SIZES[d.dataset]
        source = f"{d.dataset}{' stand-in' if d.standin else ''}'s known shape"
    return Shapes(c, s, k, min(train, d.train_limit or train), min(test, d.test_limit or test), source)


def _custom_shapes(d) -> tuple[int, int, int, int, int, str]:
    """data.path's shape as its files describe it; where they cannot be read, CIFAR-10's (the data stage then says
    why in one line)."""
    from natinv.errors import DataNotFound
    from natinv.user_data import describe

    try:
        return *describe(d), "data.path's files"
    except DataNotFound as exc:
        (c, _, k), (train, test) = datasets.SHAPES["cifar10"], datasets.SIZES["cifar10"]
        return c, d.image_size or 32, k, train, test, f"CIFAR-10's shape, as data.path cannot be read: {exc}"


# ------------------------------------------------------------------------------------------------ counting


@dataclass(frozen=True)
class Probe:
    flop: float  # per image
    saved_bytes: float  # activations autograd saves, per image


def _counted(fn) -> tuple[float, float]:
    """(FLOPs, bytes saved for backward) of running fn()."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    saved: dict[int, int] = {}
    held: list = []  # every saved tensor stays alive while counting: a freed one's address is not taken for another's

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):  # weights are not activations: they do not grow with the batch
            saved.setdefault(t.data_ptr(), t.numel() * t.element_size())
            held.append(t)
        return t

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return float(counter.get_total_flops()), float(sum(saved.values()))


def _model(arch: str, width: int | None, sh: Shapes):
    """A fresh network for the data's images (random weights: counts do not depend on them); a probe may freeze or
    move its copy. Images the architecture cannot take are the stages' one line, before anything is counted."""
    import copy

    from natinv.models import check_input_size

    check_input_size(arch, sh.size)
    return copy.deepcopy(_built(arch, width, sh.classes, sh.channels))


@functools.cache
def _built(arch: str, width: int | None, classes: int, channels: int):
    import torch

    from natinv.models import build_model

    torch.manual_seed(0)
    return build_model(arch, classes, channels, width)


class Probes:
    """The counts of the package's own code, each made once and kept in `path` (JSON, keyed by what was counted, torch's
    version and a digest of the package's synthesis and model code), so that planning a run counts nothing twice."""

    def __init__(self, path: Path | None):
        from importlib.metadata import version

        from natinv.pipeline import source_modules, SRC

        self.path = path
        files = source_modules("natinv.synthesis.shard", "natinv.models")
        code = hashlib.sha256(b"".join((SRC.parent / f).read_bytes() for f in files)).hexdigest()[:12]
        self.version = f"{version('torch')}:{code}:{COUNTING}"  # torch's installed version: a cached plan imports no torch
        from natinv.errors import NatinvError
        from natinv.io import read_json

        try:  # a cache: one that is damaged or not natinv's is counted again
            self.known = read_json(path) if path is not None and path.exists() else {}
        except NatinvError:
            self.known = {}

    def _get(self, key: str, count) -> list[float]:
        key = f"{self.version} {key}"
        if key not in self.known:
            from natinv.runtime import log

            log(f"natinv cost: counting {key.split(' ', 1)[1][:100]} (once; kept in {self.path})")
            self.known[key] = list(count())
            if self.path is not None:
                from natinv.io import atomic_write_json

                atomic_write_json(self.path, self.known)
        return self.known[key]

    def train(self, arch: str, width: int | None, sh: Shapes) -> Probe:
        """One training step (forward, loss, backward) per image."""
        return Probe(*self._get(f"train {arch} {width} {sh}", lambda: _train_count(arch, width, sh)))

    def forward(self, arch: str, width: int | None, sh: Shapes) -> Probe:
        return Probe(*self._get(f"forward {arch} {width} {sh}", lambda: _forward_count(arch, width, sh)))

    def synth(self, cfg: Config, teacher: str, method_key: str, sh: Shapes) -> tuple[Probe, float]:
        """(one iteration (inversion) or generator step (generative) per image, one co-trained student KD step per
        image of its batch, 0 without one)."""
        method = cfg.job_methods[method_key]
        student = cfg.models[method.cotrain.student] if method.cotrain is not None else None
        key = f"synth {cfg.models[teacher]!r} {dataclasses.replace(method, iterations=1)!r} {student!r} {sh}"
        flop, saved, kd = self._get(key, lambda: _synth_count(cfg, teacher, method, sh))
        return Probe(flop, saved), kd

    def embedding_dim(self, arch: str, width: int | None, sh: Shapes) -> int:
        return int(self._get(f"embedding {arch} {width} {sh}",
                             lambda: [_model(arch, width, sh).fc.in_features])[0])


def _train_count(arch: str, width: int | None, sh: Shapes) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    model = _model(arch, width, sh).train()
    x, y = torch.randn(2, sh.channels, sh.size, sh.size), torch.zeros(2, dtype=torch.long)
    flop, saved = _counted(lambda: F.cross_entropy(model(x), y).backward())
    return flop / 2, saved / 2


def _forward_count(arch: str, width: int | None, sh: Shapes) -> tuple[float, float]:
    import torch

    model = _model(arch, width, sh).eval()
    with torch.no_grad():
        flop, _ = _counted(lambda: model(torch.randn(2, sh.channels, sh.size, sh.size)))
    return flop / 2, 0.0


def _shard_flop(cfg: Config, teacher: str, method, sh: Shapes, **changes) -> tuple[float, float]:
    """(FLOPs, saved bytes) of one synthesis shard of 2 images at batch 2 with `changes` to the method."""
    import torch

    from natinv.checkpoint import ModelMeta
    from natinv.config import SynthesisConfig
    from natinv.synthesis.shard import synthesize_shard

    spec = cfg.models[teacher]
    model = _model(spec.arch, spec.width, sh).eval()
    meta = ModelMeta(spec.arch, sh.classes, sh.channels, sh.size, spec.width, [0.5] * sh.channels, [0.25] * sh.channels)
    method = dataclasses.replace(method, **changes)
    if getattr(method, "meta", None) is not None:  # ni-fast: a batch costs what NI's does from a fresh start
        method = dataclasses.replace(method, meta=None)
    student = None
    if method.cotrain is not None:
        s = cfg.models[method.cotrain.student]
        student = _model(s.arch, s.width, sh)
        method = dataclasses.replace(method, cotrain=dataclasses.replace(method.cotrain, batch_size=2))
    syn = SynthesisConfig(num_images=2, batch_size=2, shards=1, methods={"m": method}, run=["m"])
    with torch.random.fork_rng(devices=[]):
        return _counted(lambda: synthesize_shard(model, meta, teacher, "m", method, syn, 0, 0, torch.device("cpu"),
                                                 student, log=lambda _: None))


def _synth_count(cfg: Config, teacher: str, method, sh: Shapes) -> tuple[float, float, float]:
    """Per image: an iteration (the difference of 1 and 2 iterations), its saved activations, and one co-trained
    student KD step (the difference of 1 and 2 steps after the batch)."""
    from natinv.synthesis import registry

    generative = registry.of(method).generative
    size = {"batch_size": 2} if generative else {}
    # a generator step includes its student steps as configured; an inversion batch's KD steps are counted apart
    steps = (lambda n: {"cotrain": dataclasses.replace(method.cotrain, steps=n)}) if method.cotrain is not None and not generative else (lambda n: {})
    one, saved = _shard_flop(cfg, teacher, method, sh, iterations=1, **size, **steps(1))
    two, _ = _shard_flop(cfg, teacher, method, sh, iterations=2, **size, **steps(1))
    kd = 0.0
    if method.cotrain is not None and not generative:
        kd = (_shard_flop(cfg, teacher, method, sh, iterations=1, **steps(2))[0] - one) / 2
    return (two - one) / 2, saved / 2, kd


# ------------------------------------------------------------------------------------------------ per job


def _images_mb(n: int, sh: Shapes, bytes_per_value: float = 2) -> float:
    return n * sh.values * bytes_per_value / MB


def _data_mb(sh: Shapes) -> float:
    return (sh.train + sh.test) * sh.values / MB  # uint8


ACTIVATION_FACTOR = 1.6  # peak / saved activations: measured NI 1.58, DI 1.50 (ResNet-34, batch 256, CPU peak RSS less
# the process: 4.9 and 3.7 GB, benchmarks/README.md; saved per image 10.4 and 7.8 MB)


def _activations_mb(probe: Probe, batch: int) -> float:
    return ACTIVATION_FACTOR * probe.saved_bytes * batch / MB  # saved activations, their gradients, temporaries


def job_cost(cfg: Config, stage: str, w: dict[str, str], sh: Shapes, probes: Probes) -> JobCost:
    """FLOPs, kind, sequential steps and peak memory of one job of the plan."""
    from natinv.config import seeds

    method = seeds.split(w.get("method", ""))[0]
    if stage == "synthesize":
        return _synthesize(cfg, w, sh, probes)
    if stage == "meta":
        return _meta(cfg, w, sh, probes)
    if stage in ("kd", "scratch", "prune"):
        return _application(cfg, stage, w, method, sh, probes)
    if stage in ("teacher", "evaluator"):
        spec, tc = cfg.models[w[stage]], cfg.teacher
        p = probes.train(spec.arch, spec.width, sh)
        flop = tc.epochs * (sh.train * p.flop + sh.test * probes.forward(spec.arch, spec.width, sh).flop)
        steps = tc.epochs * (sh.train // tc.batch_size + _batches(sh.test))
        held = _data_mb(sh) + _normalized_mb(sh.test, sh)  # the training set stays uint8 (normalized per batch)
        return JobCost(stage, w, flop, "training", *_split(cfg, held, _activations_mb(p, tc.batch_size), TRAIN_PROCESS_MB), steps)
    if stage == "metrics":
        n = cfg.metrics.reference_images if method == "real" else cfg.synthesis.num_images
        nets = [cfg.models[w["teacher"]], *(cfg.models[e] for e in cfg.metrics.evaluators)]
        images = n + cfg.metrics.reference_images
        flop = sum(images * probes.forward(s.arch, s.width, sh).flop for s in nets)
        dims = max(probes.embedding_dim(s.arch, s.width, sh) for s in nets)
        held = (_images_mb(n, sh, 3) + _data_mb(sh) + _normalized_mb(cfg.metrics.reference_images, sh)
                + 8 * dims * images / MB)  # the images (float16 + uint8), the normalized reference, float64 features
        return JobCost(stage, w, flop, "inference", *_split(cfg, held + CHUNK_MB, CHUNK_MB), len(nets) * _batches(images))
    if stage == "tsne":
        sets = 1 + len(plan.tsne_methods(cfg, w["teacher"]))
        n = min(cfg.metrics.tsne.images, cfg.synthesis.num_images)
        spec = cfg.models[w["teacher"]]
        flop = sets * n * probes.forward(spec.arch, spec.width, sh).flop
        points = sets * n  # embedded together, once per layer: Barnes-Hut t-SNE's work grows as n log n
        embedding = TSNE_STEPS * len(cfg.metrics.tsne.layers) * points * math.log2(max(points, 2))
        return JobCost(stage, w, flop, "inference", PROCESS_MB + _data_mb(sh) + sets * _images_mb(n, sh, 4), 0.0,
                       _batches(points) + embedding)
    if stage == "data":  # reads the data set and writes it as arrays: its time goes with its size; it holds the
        # data and one copy (an NHWC .npz or CIFAR made NCHW, Fashion-MNIST padded); the split and the normalization
        # are made in place and from blocks
        return JobCost(stage, w, 0.0, "inference", PROCESS_MB + 2 * _data_mb(sh), 0.0, DATA_STEPS_PER_MB * _data_mb(sh))
    return JobCost(stage, w, 0.0, "inference", PROCESS_MB, 0.0, REPORT_STEPS)  # report: tables and figures


def _batches(images: int, batch: int = 128) -> int:
    """Forward batches of evaluation and embedding on the CPU (natinv.train.inference_batch)."""
    return -(-images // batch)


def _normalized_mb(images: int, sh: Shapes) -> float:
    """Real images normalized to float32 at once (the test set a training job watches, the metrics' reference), with
    the temporaries of the conversion (uint8 -> float, - mean, / std)."""
    return 3 * _images_mb(images, sh, 4)


def _synthesize(cfg: Config, w: dict[str, str], sh: Shapes, probes: Probes) -> JobCost:
    from natinv.synthesis import registry

    method = cfg.job_methods[w["method"]]
    per_iter, kd = probes.synth(cfg, w["teacher"], w["method"], sh)
    teacher = cfg.models[w["teacher"]]
    forward = probes.forward(teacher.arch, teacher.width, sh).flop
    if registry.of(method).generative:
        images = cfg.synthesis.num_images
        flop = method.iterations * method.batch_size * per_iter.flop + images * forward  # training, then labelling
        batch = method.batch_size
        steps = method.iterations * (1 + method.cotrain.steps)
    else:
        shards = plan.batch_plan(cfg.synthesis.num_images, cfg.synthesis.batch_size, cfg.shards_of(w["method"]))
        batches = shards[int(w["shard"])]
        images = sum(n for _, n in batches)
        flop = images * method.iterations * per_iter.flop
        per_step = cfg.engine.batches_per_step if method.cotrain is None else 1
        steps = -(-len(batches) // per_step) * method.iterations
        if method.cotrain is not None:
            flop += len(batches) * method.cotrain.steps * method.cotrain.batch_size * kd
            steps += len(batches) * method.cotrain.steps
        batch = cfg.synthesis.batch_size * per_step
    flop += 2 * images * forward  # the teacher's agreement with the labels, on the float16 tensors and on the uint8 rendering
    activations = _activations_mb(per_iter, batch)
    pool = _images_mb(images, sh)  # float16, on the device where a co-trained student reads it, and once on the host
    steps += 2 * _batches(images)
    if not _on_gpu(cfg):
        return JobCost("synthesize", w, flop, "synthesis", PROCESS_MB + pool + CHUNK_MB + activations, 0.0, steps)
    return JobCost("synthesize", w, flop, "synthesis", PROCESS_MB + pool + CHUNK_MB,
                   activations + (pool if method.cotrain is not None else 0), steps)


def _on_gpu(cfg: Config) -> bool:
    """Whether a GPU stage's activations live on a GPU (device cuda, or auto with GPUs asked for), not in host memory."""
    return cfg.device == "cuda" or (cfg.device == "auto" and cfg.job_gpus > 0)


def _split(cfg: Config, held_mb: float, activations_mb: float, process_mb: float = PROCESS_MB) -> tuple[float, float]:
    """(host, device) peak of a GPU stage's job holding `held_mb` on the host and one batch's activations."""
    return (process_mb + held_mb, activations_mb) if _on_gpu(cfg) else (process_mb + held_mb + activations_mb, 0.0)


def _meta(cfg: Config, w: dict[str, str], sh: Shapes, probes: Probes) -> JobCost:
    method = cfg.job_methods[w["method"]]
    per_iter, _ = probes.synth(cfg, w["teacher"], w["method"], sh)
    iterations = method.meta.warmup_iterations or method.iterations
    flop = method.meta.warmup_batches * cfg.synthesis.batch_size * iterations * per_iter.flop
    return JobCost("meta", w, flop, "synthesis", *_split(cfg, 0.0, _activations_mb(per_iter, cfg.synthesis.batch_size)),
                   method.meta.warmup_batches * iterations)


def _application(cfg: Config, stage: str, w: dict[str, str], method: str, sh: Shapes, probes: Probes) -> JobCost:
    """kd, scratch, prune: a student (or the pruned teacher) trained on a method's images (or real ones)."""
    section = getattr(cfg, stage)
    net = cfg.models[w["teacher"] if stage == "prune" else w["student"]]
    keep = (1 - float(w["ratio"])) ** 2 if stage == "prune" else 1.0  # a pruned conv keeps (1-r)^2 of its work
    forward = probes.forward(net.arch, net.width, sh).flop * keep
    tested = _normalized_mb(sh.test, sh)
    if stage == "prune" and method == "none":
        return JobCost(stage, w, sh.test * forward, "inference", PROCESS_MB + _data_mb(sh) + tested, 0.0, _batches(sh.test))
    # real: as many real training images as asked for, at most the training set (data.real_subset)
    images = min(section.real_images or cfg.synthesis.num_images, sh.train) if method == "real" else cfg.synthesis.num_images
    p = probes.train(net.arch, net.width, sh)
    step = p.flop * keep
    teacher = cfg.models[w["teacher"]]
    if stage == "kd" or (stage == "prune" and section.targets == "teacher"):
        step += probes.forward(teacher.arch, teacher.width, sh).flop
    watched = min(sh.test, 1000)  # the per-epoch accuracy on a test subset
    flop = section.epochs * (images * step + watched * forward) + sh.test * forward
    steps = section.epochs * (max(1, images // min(section.batch_size, images)) + _batches(watched)) + _batches(sh.test)
    # real: a uint8 copy of the images (normalized per batch); a method's: its float16 tensors
    held = _images_mb(images, sh, 1 if method == "real" else 2) + _data_mb(sh) + tested
    return JobCost(stage, w, flop, "training", *_split(cfg, held, _activations_mb(p, section.batch_size), TRAIN_PROCESS_MB),
                   steps)


# ------------------------------------------------------------------------------------------------ the plan


def probes_of(cfg: Config) -> Probes:
    return Probes(Path(cfg.results) / "cost-probes.json")


def plan_costs(cfg: Config, sh: Shapes | None = None) -> list[JobCost]:
    """Every job of the plan, costed (at `sh`, default the data's shapes)."""
    from natinv.pipeline import STAGES

    sh, probes = sh or shapes(cfg), probes_of(cfg)
    return [job_cost(cfg, name, job, sh, probes) for name, stage in STAGES.items() for job in stage.jobs(cfg)]


def request(cost: JobCost, rate: Rate) -> tuple[int, int]:
    """What a cluster job asks for: (mem_mb, runtime in minutes), the estimates with a margin."""
    return int(MARGIN * cost.host_mb) + 1, max(10, int(MARGIN * cost.seconds(rate) / 60) + 1)


_PLANNED: dict[int, tuple[Config, Shapes, Probes]] = {}


def cluster_request(cfg: Config, stage: str, w: dict[str, str]) -> tuple[int, int]:
    """request() of one job at the rates of the params' `cluster_device` (the Snakefile's mem_mb and runtime)."""
    if id(cfg) not in _PLANNED:  # the shapes and the counts, once per loaded params (cfg kept: its id stays its own)
        _PLANNED[id(cfg)] = (cfg, shapes(cfg), probes_of(cfg))
    _, sh, probes = _PLANNED[id(cfg)]
    mem, minutes = request(job_cost(cfg, stage, w, sh, probes), RATES[cfg.cluster_device])
    return mem, min(minutes, cfg.job_max_minutes)


def table(cfg: Config, device: str) -> str:
    """The cost of a params stack, per stage and in total, on `device` (a key of RATES)."""
    rate = RATES[device]
    rows: dict[str, list[JobCost]] = {}
    sh = shapes(cfg)  # once: custom data is described from its files
    for c in plan_costs(cfg, sh):
        rows.setdefault(c.stage, []).append(c)
    note = "measured" if rate.measured else "estimated (not measured yet: run benchmarks/gpu_check.py on one)"
    lines = [f"natinv cost: {cfg.experiment} on {rate.name}, rates {note}",
             f"data: {sh.channels}x{sh.size}x{sh.size}, {sh.classes} classes, {sh.train} training and {sh.test} test "
             f"images (from {sh.source})",
             f"{'stage':<11}{'jobs':>6}{'PFLOP':>12}{'peak host GB':>14}{'peak device GB':>16}{'hours':>12}{'longest job h':>15}"]
    total_flop = total_h = 0.0
    for stage, costs in rows.items():
        flop = sum(c.flop for c in costs)
        hours = sum(c.seconds(rate) for c in costs) / 3600
        total_flop, total_h = total_flop + flop, total_h + hours
        lines.append(f"{stage:<11}{len(costs):>6}{flop / 1e15:>12.3f}{max(c.host_mb for c in costs) / 1024:>14.1f}"
                     f"{max(c.device_mb for c in costs) / 1024:>16.1f}{hours:>12.2f}{max(c.seconds(rate) for c in costs) / 3600:>15.2f}")
    lines.append(f"{'total':<11}{sum(map(len, rows.values())):>6}{total_flop / 1e15:>12.3f}{'':>14}{'':>16}{total_h:>12.1f}")
    limit = cfg.job_max_minutes * 60
    long = [c for costs in rows.values() for c in costs if MARGIN * c.seconds(rate) > limit]
    if long:
        parts = max(math.ceil(MARGIN * c.seconds(rate) / limit) for c in long)
        lines.append(f"{len(long)} job(s) may outlast job_max_minutes = {cfg.job_max_minutes} with the margin of {MARGIN}: a "
                     f"synthesis shard continues from its saved progress when resubmitted; the longest needs up to "
                     f"{parts} submissions (the SLURM profile's `retries` must be at least {parts - 1})")
    return "\n".join(lines)


def run(args) -> None:
    from natinv.config import load_config
    from natinv.errors import ConfigError

    cfg = load_config(args.params)
    device = args.device or cfg.cluster_device
    if device not in RATES:
        raise ConfigError(f"--device = {device!r}: expected one of {', '.join(RATES)}")
    print(table(cfg, device), flush=True)
