"""Seed replicas. With `seeds: [0, 1, 2]` (and `seed: 0`) every synthesis method and every application job (kd,
scratch, prune, metrics; the `real` reference rows of kd, scratch and prune too) also runs once for each other seed,
as a job of its own whose method name carries the seed: `ni-seed1`, `real-seed2`. Data, teachers, evaluators and
t-SNE are made once, with `seed`. A replica job runs with `seed` set to its own, so its images, student
initializations and data orders differ, and the report gives mean ± std over the seeds.

Importing this module does not import torch.
"""
from __future__ import annotations

import re

SUFFIX = re.compile(r"(?P<base>.+)-seed(?P<seed>\d+)")


def replica(key: str, seed: int) -> str:
    """The job name of `key` (a method, or `real`) at `seed`."""
    return f"{key}-seed{seed}"


def split(key: str) -> tuple[str, int | None]:
    """A job's method name -> (the method or reference row it repeats, its seed); (key, None) for a plain name."""
    m = SUFFIX.fullmatch(key)
    return (m["base"], int(m["seed"])) if m else (key, None)


def replicated(keys: list[str], extra: list[int]) -> list[str]:
    """`keys`, then each of them at every seed of `extra`."""
    return [*keys, *(replica(k, s) for s in extra for k in keys)]
