"""Image priors (paper Eq. 4) and the random jitter/flip applied before the teacher sees an image."""
from __future__ import annotations

import torch


def tv_prior(x: torch.Tensor, groups: int | None = None) -> torch.Tensor:
    """Total variation: sum of the L2 norms of the differences to 4 neighbours (as DeepInversion's code); with
    `groups` = K, of each of K equal batches stacked along axis 0 (shape (K,))."""
    x, dims = _grouped(x, groups)
    n = torch.linalg.vector_norm
    return (n(x[..., :, :-1] - x[..., :, 1:], dim=dims) + n(x[..., :-1, :] - x[..., 1:, :], dim=dims)
            + n(x[..., 1:, :-1] - x[..., :-1, 1:], dim=dims) + n(x[..., :-1, :-1] - x[..., 1:, 1:], dim=dims))


def l2_prior(x: torch.Tensor, groups: int | None = None) -> torch.Tensor:
    x, dims = _grouped(x, groups)
    return torch.linalg.vector_norm(x, dim=dims)


def _grouped(x: torch.Tensor, groups: int | None) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """x as (K, B, ...) and the axes a per-batch norm reduces; (x, None: every axis) without groups."""
    if groups is None:
        return x, None
    return x.reshape(groups, len(x) // groups, *x.shape[1:]), tuple(range(1, x.dim() + 1))


def jitter_flip(x: torch.Tensor, gen: torch.Generator, jitter: int, flip: bool) -> torch.Tensor:
    """Roll the batch by a random (dy, dx) in [-jitter, jitter] and flip it horizontally with p = 0.5.

    Randomness comes from a CPU generator, so the draw never syncs with an accelerator.
    """
    if jitter:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and torch.rand((), generator=gen).item() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x
