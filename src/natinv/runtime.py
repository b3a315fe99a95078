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


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of names and numbers (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def log(message: str) -> None:
    """A progress line on stderr that does not break an active progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
