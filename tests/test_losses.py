"""The loss terms against direct computations."""
import pytest
import torch
from torch import nn

from natinv.synthesis.bn_stats import BNStatsLoss
from natinv.synthesis.priors import GroupJitter, JitterDraws, l2_prior, tv_prior
from conftest import jitter_flip, tiny_teacher


def test_bn_statistics_loss_matches_direct_computation():
    model = tiny_teacher()
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda mod, inp: inputs.__setitem__(mod, inp[0].detach().clone()))
               for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bn = BNStatsLoss(model)
    x = torch.randn(8, 3, 32, 32)
    with bn.capture():
        model(x)
    (got,) = bn.loss()
    expected = 0.0
    for mod, a in inputs.items():
        n = a.shape[0] * a.shape[2] * a.shape[3]
        mean = a.sum(dim=(0, 2, 3)) / n
        var = ((a - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3)) / n  # biased
        expected += ((mean - mod.running_mean) ** 2).sum().sqrt() + ((var - mod.running_var) ** 2).sum().sqrt()
    assert len(inputs) == len(bn.layers) == 9
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for h in handles:
        h.remove()
    # two batches in one pass: the statistics of each, as if it ran alone
    with bn.capture([3, 5]):
        model(x)
    per_batch = bn.loss()
    alone = []
    for part in (x[:3], x[3:]):
        with bn.capture():
            model(part)
        alone.append(bn.loss()[0])
    torch.testing.assert_close(per_batch, torch.stack(alone), rtol=1e-5, atol=1e-6)


def test_bn_loss_only_counts_inside_capture():
    model = tiny_teacher()
    bn = BNStatsLoss(model)
    model(torch.randn(4, 3, 32, 32))
    assert bn.stats == []
    bn.remove()
    with bn.capture():
        model(torch.randn(4, 3, 32, 32))
    assert bn.stats == []


def test_bn_loss_is_small_on_matching_statistics():
    bn_layer = nn.BatchNorm2d(3).eval()
    bn_layer.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn_layer.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    model = nn.Sequential(bn_layer)
    loss = BNStatsLoss(model)
    x = torch.randn(512, 3, 16, 16) * bn_layer.running_var.sqrt().view(1, 3, 1, 1) + bn_layer.running_mean.view(1, 3, 1, 1)
    with loss.capture():
        model(x)
    assert loss.loss() < 0.05
    with loss.capture():
        model(x * 2)
    assert loss.loss() > 1.0


def test_bn_loss_gradient_is_autograds_and_its_float32_values_stay_accurate_at_a_large_offset():
    """The hand-written backward equals the numerical one (gradcheck in float64) for equal and unequal batches in
    NCHW and channels_last; float32 statistics stay accurate at a large offset (where E[x^2] - E[x]^2 would lose
    digits); a statistic equal to its target has a zero gradient, not NaN."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.BatchNorm2d(4))
    net = net.eval().double()
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 1.5)
    loss = BNStatsLoss(net)
    for sizes, layout in (([2, 2], torch.channels_last), ([3, 1], torch.contiguous_format), ([4], torch.channels_last)):
        def distance(x, sizes=sizes):
            with loss.capture(sizes):
                net(x)
            return loss.loss()
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
        assert torch.autograd.gradcheck(distance, (x,))
    layer = nn.BatchNorm2d(8).eval()
    x = torch.randn(64, 8, 16, 16, dtype=torch.float64) * 0.5 + 300
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    with torch.no_grad():
        layer.running_mean.copy_(mean.float())
        layer.running_var.copy_(var.float() + 1)
    far = BNStatsLoss(nn.Sequential(layer))
    with far.capture():
        layer(x.float())
    (got,) = far.loss()
    assert abs(got.item() - 8 ** 0.5) < 1e-4  # the means agree to float32 rounding; each variance is off by 1
    x32 = x.float().requires_grad_()
    with far.capture():
        layer(x32)
    ((_, var32, mean32),) = far.stats  # the statistics as the loss takes them, as the targets: every norm is 0
    with torch.no_grad():
        layer.running_mean.copy_(mean32[0])
        layer.running_var.copy_(var32[0])
    with far.capture():
        layer(x32)
    (got,) = far.loss()
    (grad,) = torch.autograd.grad(got, x32)
    assert got.item() == 0 and torch.equal(grad, torch.zeros_like(grad))


def test_tv_prior():
    assert tv_prior(torch.full((2, 3, 8, 8), 3.0)) == 0
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    # right diff: (1), down: (1), diagonal up-right: (0 - 0)... check by hand:
    # d1 = x[:, :-1] - x[:, 1:] over columns -> [[1],[0]]: norm 1; d2 over rows -> [[1, 0]]: norm 1
    # d3 = x[1:, :-1] - x[:-1, 1:] = 0 - 0 = 0; d4 = x[:-1, :-1] - x[1:, 1:] = 1 - 0 = 1
    assert torch.isclose(tv_prior(x), torch.tensor(3.0))
    y = torch.randn(2, 3, 8, 8)
    assert torch.isclose(tv_prior(y + 5), tv_prior(y))  # shift invariant
    assert torch.isclose(tv_prior(2 * y), 2 * tv_prior(y))  # L2 norms: homogeneous of degree 1


def test_l2_prior():
    x = torch.randn(2, 3, 4, 4)
    assert torch.isclose(l2_prior(x), x.pow(2).sum().sqrt())


def test_jitter_flip_is_seeded_and_bounded():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).view(2, 1, 6, 6)
    a = jitter_flip(x, JitterDraws(torch.Generator().manual_seed(3), 2, True))
    b = jitter_flip(x, JitterDraws(torch.Generator().manual_seed(3), 2, True))
    assert torch.equal(a, b)
    assert sorted(a.flatten().tolist()) == sorted(x.flatten().tolist())  # a permutation of pixels
    assert torch.equal(jitter_flip(x, JitterDraws(torch.Generator(), 0, False)), x)


@pytest.mark.parametrize("sizes", [[4, 4, 4], [5, 4, 3]], ids=["equal", "unequal"])
@pytest.mark.parametrize("jitter,flip", [(2, True), (2, False), (0, True)])
def test_group_jitter_rolls_and_flips_each_batch_as_its_own_draws_say_in_value_and_gradient(sizes, jitter, flip, monkeypatch):
    """A group's batches rolled and flipped in one gather equal each batch's roll-then-flip by its own stream's next
    draw, call after call, across block refills (a small buffer forces several); the gradient is the inverse roll and
    flip of the output's."""
    monkeypatch.setattr(GroupJitter, "BUFFER", 3 * 12 * 6 * 7)  # 3 calls per block
    x = torch.randn(sum(sizes), 2, 6, 7, dtype=torch.float64).requires_grad_()
    group = GroupJitter([JitterDraws(torch.Generator().manual_seed(s), jitter, flip) for s in range(3)])
    alone = [JitterDraws(torch.Generator().manual_seed(s), jitter, flip) for s in range(3)]
    for _ in range(8):
        got = group(x, sizes)
        want = torch.cat([jitter_flip(part, d) for part, d in zip(x.split(sizes), alone)])
        assert torch.equal(got, want)
        g = torch.randn_like(got)
        assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


def test_jitter_draws_come_from_their_generator_a_block_at_a_time_and_cover_every_shift_and_flip():
    draws = JitterDraws(torch.Generator().manual_seed(0), 2, True)
    seen = [draws.next() for _ in range(2 * JitterDraws.BLOCK + 3)]
    again = JitterDraws(torch.Generator().manual_seed(0), 2, True)
    assert [again.next() for _ in seen] == seen  # the same stream from the same seed, across block boundaries
    assert {(dy, dx) for dy, dx, _ in seen} == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert 0.4 < sum(f for *_, f in seen) / len(seen) < 0.6


def test_bn_stats_loss_of_grouped_batches_is_each_batchs_own_in_value_and_gradient():
    """K batches in one teacher pass, equal or not in size: each batch's BN distance and its gradient are the ones of
    the formula on that batch alone."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 1.5)
    loss = BNStatsLoss(net)

    def formula(part):
        total, h = 0, part
        for layer in net:
            if isinstance(layer, nn.BatchNorm2d):
                mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
                total = total + torch.linalg.vector_norm(mean - layer.running_mean) + torch.linalg.vector_norm(var - layer.running_var)
            h = layer(h)
        return total

    for sizes in ([4, 4, 4], [5, 4, 3], [12]):
        x = (torch.randn(12, 3, 6, 6) * 2 + 1).requires_grad_()
        with loss.capture(sizes):
            net(x.contiguous(memory_format=torch.channels_last))
        got = loss.loss()
        expected = torch.stack([formula(p) for p in x.split(sizes)])
        torch.testing.assert_close(got, expected)
        grad, = torch.autograd.grad(got.sum(), x)
        want, = torch.autograd.grad(expected.sum(), x)
        torch.testing.assert_close(grad, want)
