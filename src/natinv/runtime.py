"""Device, threads and seeding shared by every stage. torch is imported where it is used, so that tracking (and the
Snakefile, which imports it) starts without it."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str) -> torch.device:
    """`auto`: the GPU when torch sees one, else the CPU. `cuda`: the GPU, or one error line saying why there is none
    (a job that asked for a GPU never runs on a CPU thread until its time limit). With several GPUs visible, the first
    one no other stage process of this node holds (claim_gpu)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from natinv.errors import ConfigError

        raise ConfigError(f"device = 'cuda' but {no_gpu_reason()}")
    if name == "cuda" and torch.cuda.device_count() > 1:
        index = _claimed_gpu()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


_CLAIMS: list = []  # the open lock file of the GPU this process claimed: held until the process exits


def claim_gpu(ids: list[str], lock_dir: Path) -> int | None:
    """The index of the first of `ids` (GPUs by UUID, the same on every process of a node whatever CUDA_VISIBLE_DEVICES
    numbers them) that no other process holds, claimed for the rest of this process's life by a lock file under
    `lock_dir`; None when every one is held."""
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, gpu in enumerate(ids):
        fh = open(lock_dir / f"{hashlib.sha256(gpu.encode()).hexdigest()[:16]}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        _CLAIMS.append(fh)
        return index
    return None


def _claimed_gpu() -> int:
    """A job given several GPUs (a group of shards) runs one stage process per shard: each takes a GPU of its own."""
    import os
    import tempfile

    import torch

    ids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    index = claim_gpu(ids, Path(tempfile.gettempdir()) / f"natinv-gpus-{os.getuid()}")
    if index is None:
        index = os.getpid() % len(ids)
        log(f"every GPU this job was given is held by another stage process; sharing cuda:{index}")
    return index


def no_gpu_reason() -> str:
    """Why torch sees no GPU here, in words a cluster user can act on."""
    import os

    import torch

    driver = _driver_cuda()
    return cuda_unavailable_reason(torch.__version__, torch.version.cuda, driver, _driver_version(),
                                   os.environ.get("CUDA_VISIBLE_DEVICES"))


def cuda_unavailable_reason(torch_version: str, torch_cuda: str | None, driver_cuda: int, driver: str | None,
                            visible: str | None) -> str:
    """The reason for no GPU from what can be read without one: torch's CUDA build, the CUDA version the installed
    NVIDIA driver supports (cudaDriverGetVersion's 1000 * major + 10 * minor; 0 = no driver) and its version, and
    CUDA_VISIBLE_DEVICES."""
    if torch_cuda is None:
        return f"torch {torch_version} is a CPU-only build; install a CUDA build of torch (README: GPU clusters)"
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU (did the job ask for one? job_gpus in the params)"
    if driver_cuda == 0:
        return ("no NVIDIA driver is loaded on this host (not a GPU node, or the job was given no GPU: job_gpus in the "
                "params; on SLURM, --gpus)")
    have = f"{driver_cuda // 1000}.{driver_cuda % 1000 // 10}"
    if _version(have) < _version(torch_cuda):
        return (f"the NVIDIA driver{f' {driver}' if driver else ''} supports CUDA {have}, and torch {torch_version} is "
                f"built for CUDA {torch_cuda}, which needs a newer driver; install the torch build for CUDA {have} "
                f"(README: GPU clusters) or update the driver")
    return f"torch {torch_version} (CUDA {torch_cuda}) finds no usable GPU with driver{f' {driver}' if driver else ''} (CUDA {have})"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def _driver_cuda() -> int:
    """The CUDA version the NVIDIA driver supports (1000 * major + 10 * minor), 0 when there is no driver."""
    import torch

    try:
        return int(torch._C._cuda_getDriverVersion())
    except (AttributeError, RuntimeError):
        return 0


def _driver_version() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as fh:
            return next((w for w in fh.readline().split() if w[:1].isdigit() and "." in w), None)
    except OSError:
        return None


def device_record(device: torch.device) -> dict:
    """What a result was computed on: the device's name, torch, CUDA and cuDNN versions and the flags that change
    GPU numerics (cuDNN autotuning and determinism, TF32)."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"name": name, "type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}


def cpu_name() -> str:
    """The CPU's model name and count (Linux /proc/cpuinfo), else what platform knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} x{len(names)}" if names else platform.processor() or platform.machine()


def configure_device(device: torch.device, deterministic: bool) -> None:
    """GPU numerics for a job: cuDNN autotuning and TF32 (fast; a re-run may pick other kernels and differ in the last
    bits), or with `deterministic` the same bytes on every re-run on the same GPU (no autotuning, deterministic cuDNN
    kernels, TF32 off)."""
    import torch

    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not deterministic
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for deterministic results
        torch.use_deterministic_algorithms(True, warn_only=True)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """This process's peak memory so far: host (the kernel's high-water mark of its resident set: what a cluster's
    memory limit sees; Linux reports KiB) and, on a GPU, what torch allocated there."""
    import resource

    import torch

    out = {"host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}
    if device.type == "cuda":
        out["device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def set_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def reuse_host_memory() -> bool:
    """Keep freed host memory in the process heap instead of giving it back to the OS (glibc only).

    glibc serves every block over 32 MiB with its own mmap and unmaps it on free, so each new activation of
    that size is page-faulted in again: an elementwise op on a (256, 64, 32, 32) float tensor took 27 ms instead
    of 4 ms, and a CPU synthesis iteration at paper settings took 16.3 s instead of 14.0 s
    (benchmarks/README.md). Turning mmap off for malloc keeps those pages mapped for the next allocation; the cost
    is that the process keeps its peak memory. Returns whether the setting was applied.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def eta(seconds_per_unit: float, remaining: int) -> str:
    """The time `remaining` units still take at `seconds_per_unit`, for a progress line: 'ETA 3 min 20 s'."""
    left = max(0.0, seconds_per_unit * remaining)
    if left < 60:
        return f"ETA {left:.0f} s"
    minutes = int(left // 60)
    return f"ETA {minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"ETA {minutes} min {int(left % 60)} s"


class IterationProgress:
    """`on_step` of an optimization run in groups of batches: on a terminal, a progress bar with its ETA over each
    group's iterations (elsewhere none: the caller logs a line per batch); and when each iteration was reached (the
    MLflow curves' timestamps)."""

    def __init__(self, name: str, iterations: int, batches: int, per_group: int = 1):
        self.name, self.iterations, self.batches, self.per_group = name, iterations, batches, per_group
        self.group, self.times, self.bar = 0, [], None

    def __call__(self, it: int) -> None:
        import sys
        import time

        from tqdm import tqdm

        if it == 0:
            first, last = self.group * self.per_group + 1, min((self.group + 1) * self.per_group, self.batches)
            self.group += 1
            self.times = []
            which = f"batch {first}/{self.batches}" if first == last else f"batches {first}-{last}/{self.batches}"
            self.bar = tqdm(total=self.iterations, desc=f"{self.name} {which}", unit="it", leave=False, mininterval=1,
                            disable=None, file=sys.stderr)  # a bar on a terminal only
        self.times.append(time.time())
        self.bar.update(1)
        if it + 1 == self.iterations:
            self.bar.close()


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of names and numbers (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def log(message: str) -> None:
    """A progress line on stderr that does not break an active progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
