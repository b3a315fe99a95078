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


class JitterDraws:
    """A batch's random rolls (dy, dx in [-jitter, jitter]) and horizontal flips (p = 0.5), from its own CPU generator,
    drawn BLOCK at a time: a synthesis iteration reads no tensor back to the host (on a GPU it never waits for one), and
    the draws never sync with an accelerator."""

    BLOCK = 256

    def __init__(self, gen: torch.Generator, jitter: int, flip: bool):
        self.gen, self.jitter, self.flip = gen, jitter, flip
        self.left: list[tuple[int, int, bool]] = []

    def next(self) -> tuple[int, int, bool]:
        if not self.left:
            n = self.BLOCK
            shifts = (torch.randint(-self.jitter, self.jitter + 1, (n, 2), generator=self.gen).tolist() if self.jitter
                      else [[0, 0]] * n)
            flips = (torch.rand(n, generator=self.gen) < 0.5).tolist() if self.flip else [False] * n
            self.left = [(dy, dx, f) for (dy, dx), f in zip(shifts, flips)][::-1]
        return self.left.pop()


def jitter_flip(x: torch.Tensor, draws: JitterDraws) -> torch.Tensor:
    """x rolled by the next (dy, dx) of `draws` and, when its draw says so, flipped horizontally."""
    dy, dx, flipped = draws.next()
    if draws.jitter:
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flipped:
        x = torch.flip(x, dims=(3,))
    return x
