"""L1 filter pruning through Torch-Pruning: the expected fraction of filters goes, and the model still trains."""
import copy

import pytest
import torch
from torch import nn

from conftest import tiny_teacher
from natinv.prune import l1_filter_prune, l1_pruner


@pytest.mark.parametrize("arch", ["resnet8", "vgg11"])
@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_pruning_removes_the_fraction_of_filters_in_every_layer_and_still_runs(arch, ratio):
    model = tiny_teacher(arch, width=8)
    out = l1_filter_prune(model, ratio, torch.randn(1, 3, 32, 32))
    for name, (before, after) in out["filters"].items():
        assert after == before - int(before * ratio), (name, before, after)  # the same ratio in every layer (local)
    assert out["params_after"] < out["params_before"] * (1 - ratio) ** 2 * 1.2  # conv weights shrink in both dims
    assert out["macs_after"] < out["macs_before"] and model.fc.out_features == 10  # the classifier keeps its outputs
    model.train()
    x = torch.randn(4, 3, 32, 32)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_pruning_keeps_the_filters_with_the_largest_l1_norm():
    model = tiny_teacher("vgg11", width=8)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    norms = conv.weight.detach().abs().flatten(1).sum(1)
    keep = set(norms.argsort(descending=True)[: conv.out_channels // 2].tolist())
    kept_weights = conv.weight.detach()[sorted(keep)].clone()
    l1_filter_prune(model, 0.5, torch.randn(1, 3, 32, 32))
    assert conv.out_channels == len(keep)
    assert torch.allclose(conv.weight.detach(), kept_weights)


@pytest.mark.parametrize("arch", ["resnet8", "vgg11"])
def test_removing_channels_equals_silencing_them(arch):
    """The pruned network computes what the original computes with the removed channels' BN scale and shift set to
    zero (those channels then carry 0 everywhere): channels are removed consistently, residual groups included."""
    model = tiny_teacher(arch, width=8)
    masked = copy.deepcopy(model)
    names = {m: n for n, m in model.named_modules()}
    twins = dict(masked.named_modules())
    for group in l1_pruner(model, 0.5, torch.randn(1, 3, 32, 32)).step(interactive=True):
        for dep, idxs in group:
            if isinstance(dep.target.module, nn.BatchNorm2d):
                bn = twins[names[dep.target.module]]
                with torch.no_grad():
                    bn.weight[idxs] = 0
                    bn.bias[idxs] = 0
        group.prune()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        pruned, silenced = model.eval()(x), masked.eval()(x)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in masked.parameters()) / 2
    assert torch.allclose(pruned, silenced, atol=1e-6)


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_mobilenetv2_prunes_and_still_trains(ratio):
    """Depthwise convolutions are pruned together with the expansion that feeds them (Torch-Pruning's groups round
    their own counts), so only the totals are checked: far fewer parameters, the classifier intact, still trainable."""
    model = tiny_teacher("mobilenetv2", width=16)
    out = l1_filter_prune(model, ratio, torch.randn(1, 3, 32, 32))
    assert out["params_after"] < out["params_before"] * (1 - ratio) and model.fc.out_features == 10
    model.train()
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
