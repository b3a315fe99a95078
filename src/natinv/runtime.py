"""Device, threads and seeding shared by every stage. torch is imported where it is used, so that tracking (and the
Snakefile, which imports it) starts without it."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from natinv.errors import ConfigError

        raise ConfigError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


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
