"""The meta-learned start of NaturalInversion (ni-fast): what the meta-update does to the shared parameters."""
from dataclasses import replace

import pytest
import torch

from natinv.config import MetaConfig, NIConfig
from natinv.models import build_model
from natinv.synthesis import naturalinversion as ni
from natinv.synthesis.meta import MetaInit
from natinv.synthesis.objective import InversionObjective, LossWeights

SHAPE = (1, 32, 32)


def _setup(algorithm: str = "reptile", lr: float = 0.5):
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, 1, 4).eval().requires_grad_(False)
    cfg = NIConfig(iterations=3, generator_width=8, latent_dim=16, alpha_mean=1.0, alpha_std=0.1,
                   meta=MetaConfig(algorithm=algorithm, lr=lr, warmup_batches=1))
    objective = InversionObjective(teacher, LossWeights.of(cfg))
    return objective, cfg


def _batches(n: int) -> list[tuple[torch.Tensor, int]]:
    return [(torch.arange(8) % 10, 100 + k) for k in range(n)]


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_reptile_moves_the_meta_parameters_part_of_the_way_to_the_adapted_ones():
    objective, cfg = _setup(lr=0.25)
    meta = ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu"))
    theta = _params(meta.model)
    adapted = meta.start()
    with torch.no_grad():
        for p in adapted.parameters():
            p.add_(1.0)
    meta.update(adapted, {})
    assert all(torch.allclose(p, t + 0.25) for p, t in zip(meta.model.parameters(), theta))
    assert meta.updates == 1


def test_fomaml_steps_along_the_adapted_gradient_scaled_by_the_inner_rate():
    objective, cfg = _setup("fomaml", lr=2.0)
    meta = ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu"))
    theta = _params(meta.model)
    adapted = meta.start()
    for p in adapted.parameters():
        p.grad = torch.ones_like(p)
    meta.update(adapted, {id(p): 0.1 for p in adapted.parameters()})
    assert all(torch.allclose(p, t - 0.2) for p, t in zip(meta.model.parameters(), theta))


def test_alphas_mean_moves_by_the_same_rule_toward_the_batchs_learned_alpha():
    """With ACS, theta holds alpha's mean per channel: reptile moves it part of the way to the mean of the batch's
    learned alpha, fomaml along the mean of alpha's last gradient at lr_alpha; without ACS there is none."""
    objective, cfg = _setup(lr=0.25)
    meta = ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu"))
    assert meta.alpha_mean.tolist() == [1.0]
    learned = torch.tensor([2.0, 4.0, 4.0, 6.0]).view(4, 1, 1, 1)  # mean 4
    meta.update(meta.start(), {}, learned)
    assert meta.alpha_mean.tolist() == [1.75]
    objective, cfg = _setup("fomaml", lr=2.0)
    meta = ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu"))
    learned.grad = torch.full_like(learned, 3.0)
    meta.update(meta.start(), {id(p): 0.0 for p in meta.model.parameters()}, learned)
    assert meta.alpha_mean.tolist() == [pytest.approx(1.0 - 2.0 * cfg.lr_alpha * 3.0)]
    assert ni.new_meta(objective, replace(cfg, acs=False), 10, SHAPE, 1, torch.device("cpu")).alpha_mean is None


def test_a_batch_draws_its_alpha_around_the_meta_parameters_mean_and_the_file_holds_it(monkeypatch, tmp_path):
    """The same batch from two meta-starts whose alpha means differ by 3 starts from alphas that differ by 3 in every
    image (the same draw, shifted); the saved meta-parameters load back with their alpha mean."""
    from natinv.checkpoint import load_state, save_state

    objective, cfg = _setup()
    starts = []

    class Recording(ni.Separate):
        def __init__(self, models, alpha0s, *args):
            starts.append(torch.stack(alpha0s))
            super().__init__(models, alpha0s, *args)

    monkeypatch.setattr(ni, "Separate", Recording)
    metas = [ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu")) for _ in range(2)]
    metas[1].alpha_mean.fill_(4.0)
    for meta in metas:
        list(ni.synthesize(objective, _batches(1), cfg, 10, SHAPE, torch.device("cpu"), meta=meta))
    assert torch.allclose(starts[1] - starts[0], torch.tensor(3.0)) and starts[0].std() > 0
    save_state(tmp_path / "meta.safetensors", metas[1].state_dict())
    loaded = load_state(tmp_path / "meta.safetensors", ni.new_meta(objective, cfg, 10, SHAPE, 2, torch.device("cpu")), "meta")
    assert torch.equal(loaded.alpha_mean, metas[1].alpha_mean) and loaded.alpha_mean.item() != 4.0  # the update moved it


def test_each_batch_changes_the_start_of_the_next_and_a_batch_never_trains_the_meta_parameters_directly():
    objective, cfg = _setup()
    device = torch.device("cpu")
    meta = ni.new_meta(objective, cfg, 10, SHAPE, 1, device)
    theta0 = _params(meta.model)
    first, second = list(ni.synthesize(objective, _batches(2), cfg, 10, SHAPE, device, meta=meta))
    assert meta.updates == 2
    assert any(not torch.equal(p, t) for p, t in zip(meta.model.parameters(), theta0))  # the meta-update moved theta
    # the second batch alone from the untouched start differs from the second batch after the first's update
    fresh = MetaInit(ni.new_meta(objective, cfg, 10, SHAPE, 1, device).model, cfg.meta)
    (alone,) = list(ni.synthesize(objective, _batches(2)[1:], cfg, 10, SHAPE, device, meta=fresh))
    assert not torch.equal(alone.images, second.images)
    # the same batches from the same start: the same images (a shard re-run gives the same bytes)
    again = ni.new_meta(objective, cfg, 10, SHAPE, 1, device)
    assert all(torch.equal(a.images, b.images) for a, b in
               zip(list(ni.synthesize(objective, _batches(2), cfg, 10, SHAPE, device, meta=again)), [first, second]))


def test_without_meta_every_batch_starts_fresh_as_before():
    objective, cfg = _setup()
    plain = replace(cfg, meta=None)
    device = torch.device("cpu")
    a = list(ni.synthesize(objective, _batches(2), plain, 10, SHAPE, device))
    (b,) = list(ni.synthesize(objective, _batches(2)[1:], plain, 10, SHAPE, device))
    assert torch.equal(a[1].images, b.images)


def test_a_shards_run_in_mlflow_names_the_warm_up_file_among_its_inputs(tmp_path):
    from natinv.tracking import datasets_of

    warm = tmp_path / "meta/resnet8-w16/ni-fast.safetensors"
    assert datasets_of(tmp_path, [tmp_path / "teachers/resnet8-w16.safetensors", warm], "fashion-mnist") == [
        ("teacher resnet8-w16", "teacher", [tmp_path / "teachers/resnet8-w16.safetensors"]),
        ("ni-fast/resnet8-w16 meta-parameters", "meta-learned start", [warm])]


def test_grouped_batches_give_the_meta_update_their_separate_modules_give(monkeypatch):
    """engine.batches_per_step = 2: the two batches' modules run as one of stacked parameters, and what the meta-update
    reads back from them (parameters for reptile, gradients for fomaml) is what the two modules run on their own give
    (float64: see the vectorized-step test of test_synthesis.py for why)."""
    from natinv.config import EngineConfig

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for algorithm in ("reptile", "fomaml"):
            objective, cfg = _setup(algorithm)
            objective = InversionObjective(objective.teacher.double(), LossWeights.of(cfg), engine=EngineConfig(batches_per_step=2))
            thetas = []
            for render in (ni.Grouped, ni.Separate):
                monkeypatch.setattr(ni, "Grouped", render)
                meta = ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu"))
                list(ni.synthesize(objective, _batches(2), cfg, 10, SHAPE, torch.device("cpu"), meta=meta))
                thetas.append([*_params(meta.model), meta.alpha_mean.clone()])
            monkeypatch.undo()
            # atol: the conv biases before a BatchNorm have a zero gradient in exact arithmetic (see above), 1e-10 here
            assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-8) for a, b in zip(*thetas))
            assert not all(torch.equal(a, b) for a, b in zip(thetas[0], _params(ni.new_meta(objective, cfg, 10, SHAPE, 1, torch.device("cpu")).model)))
    finally:
        torch.set_default_dtype(default)
