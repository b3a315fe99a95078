"""The GPU check: what a lent GPU must tell us, in at most 8 minutes, one JSON line per check (a run cut off by a time
limit still reports what it finished). Run it first whenever a session is lent a GPU, before any other GPU work:

    .venv/bin/python benchmarks/gpu_check.py --out benchmarks/gpu-check-$(date +%F).jsonl

and commit its output; its synthesis rates feed `natinv cost` (benchmarks/README.md, "GPU check"). The official
NaturalInversion code is timed beside ours when its files (kdst-team/NaturalInversion: NaturalInversion.py,
network.py, resnet.py, vgg.py) are in --official (default benchmarks/official/, git-ignored); otherwise that line
says it was skipped. `--toy` runs every check at toy sizes on the CPU (the test suite does; its numbers mean nothing;
engine.capture for one setting per method).

Checks, in order (each line: {"check", "status": ok|failed|skipped, "seconds", ...}):
  env          driver, torch, CUDA, cuDNN, TF32 and autotuning flags, the device and its memory
  synth        s/iteration, peak memory and operators per batch-iteration at the paper's shape (batch 256): NI and DI
               from ResNet-34 and VGG-11 for each engine setting (float32 and bf16 autocast, 1 and 4 batches per
               step; from ResNet-34 also with engine.capture, the iteration as one CUDA graph); ADI from ResNet-34 (per iteration, and its student's KD steps per batch)
  official     the official code's s/iteration at the same shape on the same device
  same_batch   one NI batch synthesized by two fresh processes: equal bytes? (pipeline settings, then deterministic)
  sharing      NI shards from ResNet-34 run side by side on the one GPU (1, 2, 4 processes): each one's s/iteration, so
               how many shards share a GPU before the rate per shard drops
  train        training images/s of the paper's students (ResNet-18, VGG-11, MobileNetV2) in the pipeline's own loop
               (KD from ResNet-34, synthesized float16 images on the device), float32 and bf16 autocast
  gpu_tier     `pytest -m gpu` (every stage and method kind on cuda against the CPU)
  smoke_gpu    paper-cifar10 + smoke + smoke-gpu end to end with Snakemake on this machine (every GPU stage on cuda)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class Report:
    """Prints (and appends to --out) one JSON line per check, as soon as the check ends; keeps the time budget."""

    def __init__(self, out: Path | None, budget_s: float):
        self.out, self.deadline = out, time.monotonic() + budget_s

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, needs_s: float, check: Callable[[], dict]) -> None:
        start = time.monotonic()
        if self.left < needs_s:
            line = {"check": name, "status": "skipped", "why": f"time budget: {self.left:.0f} s left, needs about {needs_s:.0f}"}
        else:
            try:
                line = {"check": name, "status": "ok", **check()}
            except Skip as why:
                line = {"check": name, "status": "skipped", "why": str(why)}
            except Exception as exc:  # one failed check must not hide the others
                line = {"check": name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
        line["seconds"] = round(time.monotonic() - start, 2)
        text = json.dumps(line)
        print(text, flush=True)
        if self.out is not None:
            with self.out.open("a") as fh:
                fh.write(text + "\n")


class Skip(Exception):
    pass


def env_check(device: str) -> dict:
    import torch

    from natinv.runtime import _driver_cuda, _driver_version, device_record, no_gpu_reason

    dev = torch.device(device)
    record = device_record(dev)
    out = {"date": time.strftime("%Y-%m-%d"), "driver": _driver_version(), "driver_cuda": _driver_cuda(), **record}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        out |= {"memory_gb": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
                "bf16": torch.cuda.is_bf16_supported()}
    elif torch.version.cuda is not None:
        out["no_gpu"] = no_gpu_reason()
    return out


# At toy sizes on the CPU a captured step is a torch.compile of its own (most of the toy run's time): each method
# compiles once, the two together cover both values of autocast and of batches_per_step.
TOY_CAPTURE = {("ni", None, 1), ("di", "bf16", 4)}


def synth_check(device: str, toy: bool) -> dict:
    """NI and DI from each teacher, float32 and bf16, at the paper's batch (the pipeline's own engine settings)."""
    from natinv.bench import bench_synth
    from natinv.config import EngineConfig
    from natinv.runtime import configure_device

    import torch

    configure_device(torch.device(device), deterministic=False)  # what a pipeline job runs with
    # toy batch 2 of 16x16 images: bf16 convolutions on a CPU without bf16 instructions take seconds per 32x32 image
    # (NI's generators at bf16 and 4 batches per step: 32 s of the toy run at 32x32, 5 s at 16x16)
    archs, batch, iters, size = (["resnet8"], 2, 2, 16) if toy else (["resnet34", "vgg11"], 256, 10, 32)
    rows = []
    for arch in archs:
        for method in ("ni", "di"):
            for autocast in (None, "bf16"):
                for per_step in (1, 4):
                    # engine.capture (CUDA graphs) from the first teacher only: the launch overhead it removes
                    captured = arch == archs[0] and (not toy or (method, autocast, per_step) in TOY_CAPTURE)
                    for capture in ((False, True) if captured else (False,)):
                        r = bench_synth(method, arch, 10, batch, iters, warmup=3 if not toy else 1, device=device,
                                        image_size=size, engine=EngineConfig(autocast=autocast, batches_per_step=per_step,
                                                                             capture=capture))
                        rows.append({k: r[k] for k in ("method", "arch", "batch_size", "s_per_iter", "images_per_s",
                                                       "peak_memory_mb", "hours_50k_images_2k_iterations",
                                                       "ops_per_batch_iteration", "kernels_per_batch_iteration")}
                                    | {"autocast": autocast, "batches_per_step": per_step, "capture": capture})
    return {"device": device, "rows": rows, "adi": adi_rates(device, toy)}


def adi_rates(device: str, toy: bool) -> dict:
    """ADI from ResNet-34 at batch 256: one batch at two iteration counts (the slope is s/iteration, the rest is the
    student's KD steps after the batch and the shard's own work)."""
    import torch

    from natinv.checkpoint import ModelMeta
    from natinv.config import CoTrainConfig, DIConfig, SynthesisConfig
    from natinv.models import build_model
    from natinv.synthesis.shard import synthesize_shard

    arch, student_arch, batch, steps = ("resnet8", "resnet8", 8, 2) if toy else ("resnet34", "resnet18", 256, 50)
    counts = (2, 4) if toy else (10, 30)
    dev = torch.device(device)
    seconds = []
    for iterations in counts:
        torch.manual_seed(0)
        teacher = build_model(arch, 10, 3, 4 if toy else None)
        meta = ModelMeta(arch, 10, 3, 32, 4 if toy else None, [0.5] * 3, [0.25] * 3)
        method = DIConfig(iterations=iterations, competition=1.0,
                          cotrain=CoTrainConfig(student="s", steps=steps, batch_size=batch, temperature=4.0))
        syn = SynthesisConfig(num_images=batch, batch_size=batch, shards=1, methods={"adi": method}, run=["adi"])
        student = build_model(student_arch, 10, 3, 4 if toy else None)
        _, summary, _ = synthesize_shard(teacher, meta, "t", "adi", method, syn, 0, 0, dev, student, log=lambda _: None)
        seconds.append(summary["seconds"])
    slope = (seconds[1] - seconds[0]) / (counts[1] - counts[0])
    return {"s_per_iter": slope, "s_per_batch_besides_iterations": seconds[0] - counts[0] * slope, "kd_steps_per_batch": steps,
            "batch_size": batch}


def official_check(device: str, folder: Path, toy: bool) -> dict:
    """The official loop (its get_images) at batch 256 from a random-weight ResNet-34: (time for 3 + n) - (time for 3)."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        raise Skip("the official code runs on CUDA only")
    if not (folder / "NaturalInversion.py").is_file():
        raise Skip(f"no official code in {folder} (copy NaturalInversion.py, network.py, resnet.py, vgg.py there)")
    sys.path.insert(0, str(folder))
    cwd = os.getcwd()
    os.chdir(folder)  # it writes its debug images under its prefix
    try:
        import NaturalInversion as official  # noqa: N813

        official.debug_output = False
        net = official.ResNet34().to("cuda").eval()
        torch.backends.cudnn.benchmark = True  # as its main() sets
        times = {}
        for epochs in (3, 3 + (2 if toy else 20)):
            torch.cuda.synchronize()
            start = time.perf_counter()
            official.get_images(net, num_classes=10, bs=256, epochs=epochs, prefix="gpu-check")
            torch.cuda.synchronize()
            times[epochs] = time.perf_counter() - start
        (a, ta), (b, tb) = sorted(times.items())
        return {"s_per_iter": (tb - ta) / (b - a), "batch_size": 256, "arch": "resnet34",
                "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20}
    finally:
        os.chdir(cwd)


def one_batch(out: Path, device: str, deterministic: bool, toy: bool) -> None:
    """Synthesize one NI batch (random-weight, seeded teacher) and write its npz (for same_batch, in a fresh process)."""
    import torch

    from natinv.checkpoint import ModelMeta
    from natinv.config import NIConfig, SynthesisConfig
    from natinv.io import write_npz
    from natinv.models import build_model
    from natinv.runtime import configure_device
    from natinv.synthesis.shard import synthesize_shard

    dev = torch.device(device)
    configure_device(dev, deterministic)
    arch, batch, width = ("resnet8", 8, 4) if toy else ("resnet34", 256, None)
    torch.manual_seed(0)
    teacher = build_model(arch, 10, 3, width)
    teacher.train()
    with torch.no_grad():  # BN statistics of some data, not the 0/1 init
        teacher(torch.randn(64, 3, 32, 32))
    meta = ModelMeta(arch, 10, 3, 32, width, [0.5] * 3, [0.25] * 3)
    method = NIConfig(iterations=3 if toy else 20)
    syn = SynthesisConfig(num_images=batch, batch_size=batch, shards=1, methods={"ni": method}, run=["ni"])
    arrays, _, _ = synthesize_shard(teacher.eval(), meta, "t", "ni", method, syn, 0, 0, dev, log=lambda _: None)
    write_npz(out, arrays)


def same_batch_check(device: str, toy: bool, tmp: Path) -> dict:
    import numpy as np

    out = {}
    for deterministic in (False, True):
        files = []
        for k in range(2):
            f = tmp / f"{deterministic}-{k}" / "batch.npz"  # one name: a file's seal covers its name
            f.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "--one-batch", str(f), "--device", device] + (["--deterministic"] if deterministic else []) + (["--toy"] if toy else [])
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
            files.append(f)
        a, b = (np.load(f)["images"].astype(np.float32) for f in files)
        out["deterministic" if deterministic else "pipeline"] = {
            "same_bytes": hashlib.sha256(files[0].read_bytes()).digest() == hashlib.sha256(files[1].read_bytes()).digest(),
            "max_abs_diff": float(np.abs(a - b).max())}
    return out


def train_check(device: str, toy: bool) -> dict:
    """Images/s of the pipeline's KD loop (natinv bench train: fit with crop/flip, the teacher's forward in every step)
    for each paper student from ResNet-34, at the paper profile's KD batch (256), float32 and bf16 autocast."""
    from natinv.bench import bench_train

    teacher, batch, steps = ("resnet8", 8, 2) if toy else ("resnet34", 256, 30)
    rows = []
    for arch in (("resnet8",) if toy else ("resnet18", "vgg11", "mobilenetv2")):
        for precision in (None, "bf16"):
            r = bench_train(arch, 10, batch, steps, device, teacher=teacher, precision=precision)
            rows.append({k: r[k] for k in ("arch", "teacher", "batch_size", "precision", "images_per_s", "s_per_step",
                                           "peak_memory_mb")})
    return {"rows": rows, "what": "natinv bench train: the pipeline's fit, KD at T = 4, float16 images on the device"}


def sharing_check(device: str, toy: bool, timeout: float) -> dict:
    """N NI shards (natinv bench synth processes) side by side on one device: each one's s/iteration, for N = 1, 2, 4."""
    arch, batch, iters = ("resnet8", 8, 2) if toy else ("resnet34", 256, 20)
    cmd = [sys.executable, "-m", "natinv", "bench", "synth", "--method", "ni", "--arch", arch, "--batch-size", str(batch),
           "--iterations", str(iters), "--warmup", "3", "--device", device] + (["--threads", "1"] if toy else [])
    rows = {}
    for n in (1, 2) if toy else (1, 2, 4):
        start = time.monotonic()
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")}) for _ in range(n)]
        outs = [p.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))[0] for p in procs]
        rates = [json.loads(o.strip().splitlines()[-1])["s_per_iter"] for o in outs]
        rows[str(n)] = {"s_per_iter_each": rates, "images_per_s_all": n * batch / max(rates)}
    return {"arch": arch, "batch_size": batch, "processes": rows}


def pytest_check(timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "NATINV_DEVICE": "cpu"})
    return {"returncode": proc.returncode, "tail": proc.stdout.strip().splitlines()[-1:] + proc.stderr.strip().splitlines()[-3:]}


def smoke_check(timeout: float, toy: bool) -> dict:
    if toy:
        raise Skip("toy run: the smoke profile end to end is the paper tier's (pytest -m paper)")
    import tempfile

    repo = Path(tempfile.mkdtemp(prefix="gpu-check-smoke-"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            (repo / f).write_bytes((ROOT / f).read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "NATINV_DEVICE"} | {"NATINV_TRACKING": "off"}
    start = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", str(os.cpu_count() or 2),
                           "--resources", "gpu=8", "--configfile", "params/default.yaml", "params/paper-cifar10.yaml",
                           "params/smoke.yaml", "params/smoke-gpu.yaml"], cwd=repo, capture_output=True, text=True,
                          timeout=timeout, env=env)
    shards = list((repo / "results/smoke/paper-cifar10/synth").rglob("shard-*.json"))
    on_gpu = sum(json.loads(f.read_text()).get("hardware", {}).get("type") == "cuda" for f in shards)
    return {"returncode": proc.returncode, "wall_s": round(time.monotonic() - start, 1), "shards": len(shards),
            "shards_on_cuda": on_gpu, "tail": proc.stderr.strip().splitlines()[-3:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="also append every line to this file")
    p.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for all checks (default 480 = 8 min; with --toy a day: a toy run's time is the "
                        "machine's load, not a lent GPU's minutes)")
    p.add_argument("--official", type=Path, default=ROOT / "benchmarks/official")
    p.add_argument("--toy", action="store_true", help="toy sizes, every check on the CPU (the test suite)")
    p.add_argument("--one-batch", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    if args.toy:  # the test suite's run, beside other work: one thread (two spin at their barriers when a core is busy)
        torch.set_num_threads(1)
    device = args.device or ("cuda" if torch.cuda.is_available() and not args.toy else "cpu")
    if args.one_batch is not None:
        one_batch(args.one_batch, device, args.deterministic, args.toy)
        return 0
    import tempfile

    budget = args.budget if args.budget is not None else (86400 if args.toy else 480)
    report = Report(args.out, budget)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report.run("env", 0, lambda: env_check(device))
    report.run("synth", 30, lambda: synth_check(device, args.toy))
    report.run("official", 20, lambda: official_check(device, args.official, args.toy))
    report.run("same_batch", 20, lambda: same_batch_check(device, args.toy, tmp))
    report.run("sharing", 30, lambda: sharing_check(device, args.toy, max(1.0, report.left - 200)))
    report.run("train", 10, lambda: train_check(device, args.toy))
    if args.toy:
        report.run("gpu_tier", 0, lambda: (_ for _ in ()).throw(Skip("toy run: the gpu tier is pytest -m gpu")))
    else:
        report.run("gpu_tier", 60, lambda: pytest_check(max(1.0, report.left - 150)))
    report.run("smoke_gpu", 60, lambda: smoke_check(max(1.0, report.left - 5), args.toy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
