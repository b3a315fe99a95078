"""Target labels of a synthesis batch: balanced round-robin over classes, the remainder drawn at random."""
from __future__ import annotations

import torch


def batch_labels(batch_size: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """`batch_size // num_classes` images of every class, then `batch_size % num_classes` distinct random
    classes; sorted by class (so an image grid has one row per class)."""
    full = torch.arange(num_classes).repeat(batch_size // num_classes)
    rest = torch.randperm(num_classes, generator=gen)[: batch_size % num_classes]
    return torch.cat([full, rest]).sort().values
