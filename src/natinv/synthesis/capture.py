"""A whole synthesis iteration as one CUDA graph (engine.capture): launched with one call instead of some 400 kernels.

An iteration is static once the shapes are fixed: every tensor it reads or writes stays at one address (the images'
parameters, Adam's state and capturable step count, the loss curve indexed by a device counter, the best images so
far updated in place, the rolls and flips read from buffers loaded before each iteration). So the first WARMUP
iterations run eagerly (cuDNN picks its algorithms, the gradients and Adam's state exist), the next one is captured,
and every later iteration replays it: the same computation, launched at once, with no Python in between.

CUDA graphs exist on CUDA devices only. On any other device the static iteration runs as it is, uncaptured: the same
numbers as a captured one (what the CPU tests check), without the speed.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from natinv.synthesis.priors import GroupJitter

WARMUP = 3  # eager iterations before the capture (PyTorch's advice for autograd and cuDNN; at least 1: the trace)


def run_captured(step: Callable[[int | torch.Tensor], None], draws: GroupJitter, iterations: int,
                 on_step: Callable[[int], None] | None, device: torch.device,
                 generators: tuple[torch.Generator, ...] = ()) -> None:
    """Iterations 0 .. iterations-1 of `step`: WARMUP eager ones (the last traced: which jitter buffers an iteration
    reads), then the static iteration, captured in a CUDA graph on a CUDA device, once per remaining iteration.
    `generators`: device generators the step draws from (the graph advances their state on every replay)."""
    graph = device.type == "cuda"
    warm = min(iterations, WARMUP)
    side = torch.cuda.Stream(device) if graph else None
    if graph:
        side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side) if graph else nullcontext():  # warm-up off the main stream, as capture requires
        for it in range(warm):
            if it == warm - 1:
                draws.trace()
            step(it)
            if on_step is not None:
                on_step(it)
    if graph:
        torch.cuda.current_stream(device).wait_stream(side)
    if warm == iterations:
        return
    draws.hold()
    counter = torch.full((1,), warm, dtype=torch.long, device=device)

    def static_step() -> None:
        step(counter)
        counter.add_(1)

    replay = static_step
    if graph:
        captured = torch.cuda.CUDAGraph()
        for gen in generators:
            captured.register_generator_state(gen)
        with torch.cuda.graph(captured):
            static_step()
        replay = captured.replay
    for it in range(warm, iterations):
        draws.advance()
        replay()
        if on_step is not None:
            on_step(it)
