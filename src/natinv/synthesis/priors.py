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


class GroupJitter:
    """The rolls and flips of a group of batches, one JitterDraws stream each, applied to all of them in one gather on
    their device; every call takes each batch's next draw (the draws a batch gets alone, whatever its group).

    The draws become spatial permutations (forward and inverse, (K, H*W) per call) a block of calls at a time, on the
    host, and travel to the device in one asynchronous copy per block: an iteration neither reads from the host nor
    waits for it, and rolling and flipping is one gather forward and one backward for the whole group (not a roll and
    a flip per batch), with the same values and gradients as roll-then-flip."""

    BUFFER = 2**20  # indices held per block at most (8 MB of int64 each way): 256 calls for 4 batches of 32x32 images

    def __init__(self, draws: list[JitterDraws]):
        self.draws = draws
        self.identity = all(not d.jitter and not d.flip for d in draws)
        self.block: tuple[torch.Tensor, torch.Tensor] | None = None
        self.used = 0
        self.shape: tuple[int, int] | None = None
        self.calls: list[tuple[int, int, torch.device]] = []  # the calls since `trace` (shape, device), while tracing
        self.tracing = False
        self.held: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # `hold`: the buffers each call of an iteration reads
        self.at = 0

    def __call__(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """x: the group's batches (sizes) stacked along axis 0, (N, C, H, W); each batch rolled and flipped by its next
        draw."""
        if self.identity:
            return x
        h, w = x.shape[-2:]
        if self.held is not None:  # a static iteration: this call's draws were loaded by `advance`
            perm, inverse = self.held[self.at]
            self.at += 1
        else:
            perm, inverse = self._next(h, w, x.device)
            if self.tracing:
                self.calls.append((h, w, x.device))
        if len(set(sizes)) == 1:
            return SpatialPermutation.apply(x, perm, inverse, len(sizes))
        parts = torch.split(x, sizes)
        return torch.cat([SpatialPermutation.apply(part, perm[k:k + 1], inverse[k:k + 1], 1) for k, part in enumerate(parts)])

    def trace(self) -> None:
        """Record the calls from now on (their shapes): what `hold` makes static."""
        self.calls, self.tracing = [], True

    def hold(self) -> None:
        """Make an iteration static (for a CUDA graph): every call traced since `trace` (one iteration's) gets a buffer
        of its own, the calls from now on read their buffers in that order, and `advance` loads each iteration's next
        draws into them (device copies, outside the iteration)."""
        self.held = [tuple(torch.empty(len(self.draws), h * w, dtype=torch.long, device=device) for _ in range(2))
                     for h, w, device in self.calls]
        self.tracing, self.at = False, 0

    def advance(self) -> None:
        """Before a static iteration: each batch's next draws into the held buffers (the draws it gets unheld)."""
        for (perm, inverse), (h, w, device) in zip(self.held, self.calls):
            new_perm, new_inverse = self._next(h, w, device)
            perm.copy_(new_perm, non_blocking=True)
            inverse.copy_(new_inverse, non_blocking=True)
        self.at = 0

    def _next(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The group's next permutation and its inverse, (K, H*W) each, on `device`."""
        if self.block is None or self.used == self.block[0].shape[1] or self.shape != (h, w):
            self._refill(h, w, device)
        self.used += 1
        return self.block[0][:, self.used - 1], self.block[1][:, self.used - 1]

    def _refill(self, h: int, w: int, device: torch.device) -> None:
        calls = max(1, min(JitterDraws.BLOCK, self.BUFFER // (len(self.draws) * h * w)))
        shifts = torch.tensor([[d.next() for _ in range(calls)] for d in self.draws], dtype=torch.long)  # (K, calls, 3)
        dy, dx, flipped = shifts.unbind(-1)
        rows = (torch.arange(h) - dy[..., None]) % h  # (K, calls, H): the source row of each output row
        cols = torch.arange(w).expand(*dx.shape, w)
        cols = (torch.where(flipped[..., None].bool(), w - 1 - cols, cols) - dx[..., None]) % w
        perm = (rows[..., :, None] * w + cols[..., None, :]).flatten(-2)  # (K, calls, H*W)
        inverse = torch.argsort(perm, dim=-1)
        if device.type == "cuda":  # pinned, so the copy does not wait for the device's queue
            perm, inverse = perm.pin_memory(), inverse.pin_memory()
        self.block = (perm.to(device, non_blocking=True), inverse.to(device, non_blocking=True))
        self.used, self.shape = 0, (h, w)


class SpatialPermutation(torch.autograd.Function):
    """y[k, ..., j] = x[k, ..., perm[k, j]] over the flattened spatial axes of `groups` equal batches; the gradient is
    the same gather with the inverse permutation (a gather's own backward is a scatter-add: atomic, hence not
    reproducible, on a GPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.groups = groups
        return _gather(x, perm, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return _gather(grad, inverse, ctx.groups), None, None, None


def _gather(x: torch.Tensor, perm: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    flat = x.reshape(groups, n // groups * c, h * w)
    return flat.gather(2, perm.view(groups, 1, h * w).expand(-1, flat.shape[1], -1)).view(n, c, h, w)
