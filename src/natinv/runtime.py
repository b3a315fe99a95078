"""Device, threads and seeding shared by every stage."""
from __future__ import annotations

import hashlib

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from natinv.errors import ConfigError

        raise ConfigError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of names and numbers (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def log(message: str) -> None:
    """A progress line on stderr that does not break an active progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
