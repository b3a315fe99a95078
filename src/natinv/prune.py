"""L1-norm filter pruning (paper Fig. 6) with Torch-Pruning: the same fraction of filters removed from every layer
(local, not global), channels physically removed, residual-coupled channels pruned together as one group; the
classifier keeps its outputs."""
from __future__ import annotations

import torch
from torch import nn


def count(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Parameters and multiply-accumulates of one forward pass of `example` (Torch-Pruning's counter)."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return {"params": int(params), "macs": int(macs)}


def conv_filters(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def l1_pruner(model: nn.Module, ratio: float, example: torch.Tensor):
    """Torch-Pruning's pruner for local L1 filter pruning at `ratio`: the group's root layer's filter norms decide
    (Li et al.'s criterion, "first"), the classifier keeps its outputs."""
    import torch_pruning as tp

    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    return tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1, group_reduction="first"),
                                     pruning_ratio=ratio, global_pruning=False, ignored_layers=classifier)


def l1_filter_prune(model: nn.Module, ratio: float, example: torch.Tensor) -> dict:
    """Remove `ratio` of the filters of every convolution, those with the smallest L1 norm of their own weights (Li et
    al.'s criterion: the group's root layer decides, "first"), in place. Returns parameter and MAC counts before and after, and filters per layer."""
    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio {ratio}: expected 0 < ratio < 1")
    was_training = model.training
    model.eval()
    before, filters = count(model, example), conv_filters(model)
    l1_pruner(model, ratio, example).step()
    after, kept = count(model, example), conv_filters(model)
    model.train(was_training)
    return {"ratio": ratio, "params_before": before["params"], "params_after": after["params"],
            "macs_before": before["macs"], "macs_after": after["macs"],
            "filters": {name: [n, kept[name]] for name, n in filters.items()}}
