"""NI and DI on a tiny net: they lower their loss, shards are reproducible byte for byte, the teacher stays frozen."""
import collections
import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from natinv.checkpoint import load_model
from natinv.config import DIConfig, EngineConfig, NIConfig, SynthesisConfig
from natinv.io import npz_bytes
from natinv.plan import batch_plan
from natinv.runtime import derive_seed
from natinv.synthesis import deepinversion, naturalinversion
from natinv.synthesis.objective import InversionObjective, LossWeights
from natinv.synthesis.shard import synthesize_shard
from conftest import tiny_teacher

NI = NIConfig(iterations=30, latent_dim=32, generator_width=16, lr_generator=1e-2, lr_ftp=1e-2, lr_alpha=5e-2, lambda_bn=1.0)
DI = DIConfig(iterations=30, lr=0.25, lambda_bn=1.0, lambda_tv=1e-4)


def _run(module, cfg, teacher, num_classes=10):
    obj = InversionObjective(teacher, LossWeights.of(cfg))
    labels = torch.arange(16) % num_classes
    (res,) = list(module.synthesize(obj, [(labels, 123)], cfg, num_classes, (3, 32, 32), torch.device("cpu")))
    obj.close()
    return res


@pytest.mark.parametrize("module,cfg", [(naturalinversion, NI), (deepinversion, DI)], ids=["ni", "di"])
def test_one_batch_reduces_its_loss(module, cfg):
    teacher = tiny_teacher()
    before = [p.clone() for p in teacher.parameters()]
    res = _run(module, cfg, teacher)
    curve = res.curve  # (iterations, terms): total, ce, bn, tv, l2
    first, best = curve[:3, 0].mean(), curve[res.best_iteration, 0]
    assert best < 0.85 * first, (first, best)
    assert curve[-3:, 2].mean() < curve[:3, 2].mean()  # the BN term itself goes down
    assert res.images.shape == (16, 3, 32, 32) and torch.isfinite(res.images).all()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())  # frozen, no weight gradients
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_kept_batch_is_the_lowest_loss_iteration():
    res = _run(deepinversion, DI, tiny_teacher())
    assert res.best_iteration == int(res.curve[:, 0].argmin())


def test_ni_ablation_switches_and_stage_subset_run():
    teacher = tiny_teacher()
    for cfg in (replace(NI, iterations=3, ftp=False), replace(NI, iterations=3, acs=False),
                replace(NI, iterations=3, ftp_stages=[3]), replace(NI, iterations=3, o2o=False)):
        res = _run(naturalinversion, cfg, teacher)
        assert res.images.shape == (16, 3, 32, 32)
    no_acs = _run(naturalinversion, replace(NI, iterations=2, acs=False), teacher)
    assert no_acs.images.abs().max() <= 1.0  # alpha fixed to 1: tanh range


def _batches(cfg, teacher, seeds):
    obj = InversionObjective(teacher, LossWeights.of(cfg))
    out = list(naturalinversion.synthesize(obj, [(torch.arange(8) % 10, s) for s in seeds], cfg, 10, (3, 32, 32), torch.device("cpu")))
    obj.close()
    return out


def test_o2o_switch_decides_whether_a_batch_depends_on_the_ones_before():
    """One-to-one: every batch has its own generator, so batch 2 is the same run alone or after batch 1. Off
    (one-to-many): the generator carries over, so batch 2 starts where batch 1 left it."""
    teacher, cfg = tiny_teacher(), replace(NI, iterations=3)
    alone = _batches(cfg, teacher, [7])[0].images
    assert torch.equal(_batches(cfg, teacher, [5, 7])[1].images, alone)
    o2m = replace(cfg, o2o=False)
    assert not torch.allclose(_batches(o2m, teacher, [5, 7])[1].images, _batches(o2m, teacher, [7])[0].images)


def test_ftp_and_acs_switches_remove_only_their_component():
    from natinv.synthesis.naturalinversion import NaturalInversionImage

    shapes = tiny_teacher().stage_shapes(3, 32)
    full = NaturalInversionImage(NI, 10, (3, 32, 32), shapes)
    no_ftp = NaturalInversionImage(replace(NI, ftp=False), 10, (3, 32, 32), shapes)
    assert full.ftp is not None and no_ftp.ftp is None
    assert [n for n, _ in no_ftp.named_parameters()] == [n for n, _ in full.named_parameters() if not n.startswith("ftp.")]
    no_acs = _run(naturalinversion, replace(NI, iterations=2, acs=False), tiny_teacher())
    with_acs = _run(naturalinversion, replace(NI, iterations=2), tiny_teacher())
    assert no_acs.images.abs().max() <= 1.0 < with_acs.images.abs().max()  # alpha fixed to 1 (tanh range) vs learned ~N(5, 1)


def test_batch_plan_covers_every_image_once():
    plan = batch_plan(1000, 128, 3)
    flat = [b for shard in plan for b in shard]
    assert [i for i, _ in flat] == list(range(8))
    assert sum(n for _, n in flat) == 1000 and flat[-1][1] == 1000 - 7 * 128
    assert all(shard for shard in plan)


@pytest.mark.parametrize("method", [replace(NI, iterations=4), replace(DI, iterations=4)], ids=["ni", "di"])
def test_shard_is_deterministic_and_batches_differ(teacher_file, method):
    path, _ = teacher_file
    syn = SynthesisConfig(num_images=40, batch_size=16, shards=2, methods={"m": method}, run=["m"])
    digests, arrays = [], None
    for _ in range(2):
        model, meta = load_model(path)
        arrays, summary, _ = synthesize_shard(model, meta, "t", "m", method, syn, 7, 1, torch.device("cpu"), log=lambda _: None)
        digests.append(hashlib.sha256(npz_bytes(arrays)).hexdigest())
    assert digests[0] == digests[1]
    assert arrays["images"].dtype == np.float16 and arrays["images_uint8"].dtype == np.uint8
    assert arrays["images"].shape == (24, 3, 32, 32) and arrays["labels"].shape == (24,)  # batches 1 and 2 (16 + 8)
    assert list(arrays["batch_index"]) == [1, 2] and len(set(arrays["seeds"].tolist())) == 2
    assert arrays["loss_curves"].shape == (2, 4, 6)
    assert not np.array_equal(arrays["images"][:8], arrays["images"][16:24])  # no duplicate batches
    # the agreement is the teacher's top-1 on the stored tensors against the stored labels
    model, _ = load_model(path)
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(arrays["images"]).float()).argmax(1).numpy()
    assert summary["agreement_float16"] == pytest.approx(100 * (pred == arrays["labels"]).mean())
    # a different shard of the same run gives other seeds
    model, meta = load_model(path)
    other, _, _ = synthesize_shard(model, meta, "t", "m", method, syn, 7, 0, torch.device("cpu"), log=lambda _: None)
    assert not set(other["seeds"].tolist()) & set(arrays["seeds"].tolist())


def test_di_clamp_keeps_pixels_in_range(teacher_file):
    path, _ = teacher_file
    model, meta = load_model(path)
    method = replace(DI, iterations=5, clamp=True)
    syn = SynthesisConfig(num_images=8, batch_size=8, shards=1, methods={"m": method}, run=["m"])
    arrays, _, _ = synthesize_shard(model, meta, "t", "m", method, syn, 0, 0, torch.device("cpu"), log=lambda _: None)
    pix = arrays["images"].astype(np.float32) * 0.25 + 0.5
    assert pix.min() >= -1e-2 and pix.max() <= 1 + 1e-2


@pytest.mark.parametrize("module,cfg", [(naturalinversion, NI), (deepinversion, DI)], ids=["ni", "di"])
def test_any_class_count_and_batch_size(module, cfg):
    from natinv.synthesis.labels import batch_labels

    teacher = tiny_teacher(num_classes=100, in_channels=1)
    obj = InversionObjective(teacher, LossWeights.of(cfg))
    labels = batch_labels(7, 100, torch.Generator().manual_seed(0))
    (res,) = list(module.synthesize(obj, [(labels, 5)], replace(cfg, iterations=2), 100, (1, 32, 32), torch.device("cpu")))
    assert res.images.shape == (7, 1, 32, 32) and torch.isfinite(res.curve).all()


@pytest.mark.parametrize("module,cfg,dtype,tol", [(naturalinversion, replace(NI, iterations=6), torch.float64, 1e-9),
                                                  (deepinversion, replace(DI, iterations=6), torch.float32, 1e-4)],
                         ids=["ni", "di"])
def test_batches_in_one_vectorized_step_equal_separate_steps(module, cfg, dtype, tol):
    """engine.batches_per_step = 2 over batches of 8, 8 and 5 images (groups [8, 8], one pass per loss term for both,
    NI's two modules as one of stacked parameters, and [5]) and = 3 (one group of unequal batches, a pass per batch):
    every batch gets the loss curve, best iteration and images it gets alone, within rounding; BN statistics, CE and
    priors are per batch. NI runs in float64: its grouped convolutions round differently from one module's, and Adam's
    first steps turn float32 rounding in gradients that are zero in exact arithmetic (a conv bias before a BatchNorm)
    into whole learning-rate steps, so float32 images drift apart by 1e-2 in a few iterations however right the
    grouping is; in float64 they agree to 1e-12."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        teacher = tiny_teacher(width=8).to(dtype)
        batches = [(torch.arange(n) % 10, s) for n, s in ((8, 11), (8, 12), (5, 13))]
        runs = {}
        for k in (1, 2, 3):
            obj = InversionObjective(teacher, LossWeights.of(cfg), engine=EngineConfig(batches_per_step=k))
            runs[k] = list(module.synthesize(obj, batches, cfg, 10, (3, 32, 32), torch.device("cpu")))
            obj.close()
    finally:
        torch.set_default_dtype(default)
    for alone, grouped in [*zip(runs[1], runs[2]), *zip(runs[1], runs[3])]:
        assert grouped.seed == alone.seed and torch.equal(grouped.labels, alone.labels)
        assert grouped.images.dtype == dtype
        torch.testing.assert_close(grouped.curve, alone.curve, rtol=tol, atol=tol / 10)
        assert grouped.best_iteration == alone.best_iteration
        torch.testing.assert_close(grouped.images, alone.images, rtol=tol * 10, atol=tol)
    assert not torch.allclose(runs[2][0].curve, runs[2][1].curve)  # the two batches of a group are not one run


CAPTURE_CASES = [(naturalinversion, replace(NI, iterations=7), 1),
                 (naturalinversion, replace(NI, iterations=7, ftp_input="jittered"), 2),
                 (naturalinversion, replace(NI, iterations=7, o2o=False), 1),
                 (deepinversion, replace(DI, iterations=7, clamp=True), 2),
                 (deepinversion, replace(DI, iterations=7, competition=0.5), 1)]
CAPTURE_IDS = ["ni", "ni-k2-jittered-ftp", "ni-o2m", "di-k2-clamp", "adi"]


@pytest.mark.parametrize("module,cfg,k", CAPTURE_CASES, ids=CAPTURE_IDS)
def test_the_static_iteration_of_engine_capture_equals_the_eager_one(module, cfg, k):
    """engine.capture: after the warm-up, every iteration is the static one a CUDA graph captures (jitter from held
    buffers loaded before it, the curve indexed by a device counter, the best images kept in place, capturable Adam);
    on the CPU it runs uncaptured. Curves, best iterations and images equal the eager loop's (float64: 1e-12), across
    groups of K batches, FTP jitter (two draws per iteration), one-to-many's fresh z and DI's clamp."""
    assert_capture_equals_eager(module, cfg, k, torch.device("cpu"), tol=1e-12)


def assert_capture_equals_eager(module, cfg, k: int, device: torch.device, tol: float) -> None:
    """A shard's batches with engine.capture off and on, in float64 on `device`: the same results within `tol`, and
    the best images of the first batch come from a static (on a GPU: replayed) iteration."""
    from natinv.synthesis import capture
    from natinv.synthesis.competition import Competitor

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        teacher = tiny_teacher(width=8).double().to(device)
        batches = [(torch.arange(8) % 10, s) for s in (21, 22, 23)]
        extra = ({"pixel_range": (torch.tensor(-2.0, device=device), torch.tensor(2.0, device=device))}
                 if module is deepinversion else {})
        runs = {}
        for static in (False, True):
            competitor = Competitor(tiny_teacher(width=4).double().to(device), cfg.competition) if cfg.competition else None
            obj = InversionObjective(teacher, LossWeights.of(cfg), competitor,
                                     engine=EngineConfig(batches_per_step=k, capture=static))
            runs[static] = list(module.synthesize(obj, batches, cfg, 10, (3, 32, 32), device, **extra))
            obj.close()
    finally:
        torch.set_default_dtype(default)
    assert cfg.iterations > capture.WARMUP + 1  # static iterations ran
    for eager, static in zip(runs[False], runs[True], strict=True):
        assert static.best_iteration == eager.best_iteration
        torch.testing.assert_close(static.curve, eager.curve, rtol=tol, atol=tol)
        torch.testing.assert_close(static.images, eager.images, rtol=tol, atol=tol)
    assert runs[True][0].best_iteration > capture.WARMUP  # the kept images are a static iteration's


def test_a_batch_that_turns_non_finite_is_optimized_again_from_a_derived_seed(teacher_file, monkeypatch):
    """The first try of batch 0 'diverges' (its curve turns NaN at iteration 3): the batch is optimized again from a
    seed derived from its own, the shard keeps only finite images, says so, and a re-run gives the same bytes."""
    from natinv.synthesis import deepinversion as di

    path, _ = teacher_file
    method = replace(DI, iterations=6)
    syn = SynthesisConfig(num_images=32, batch_size=16, shards=1, methods={"m": method}, run=["m"])
    real = di.synthesize

    def diverging_first(objective, batches, *args, **kwargs):
        for res in real(objective, batches, *args, **kwargs):
            if res.seed == first_seed:
                res.curve[3:, 1] = float("nan")
            yield res

    monkeypatch.setattr(di, "synthesize", diverging_first)
    first_seed = derive_seed(7, "t", "m", 0)  # batch 0's own seed
    digests, lines = [], []
    for _ in range(2):
        model, meta = load_model(path)
        arrays, summary, _ = synthesize_shard(model, meta, "t", "m", method, syn, 7, 0, torch.device("cpu"), log=lines.append)
        digests.append(hashlib.sha256(npz_bytes(arrays)).hexdigest())
    assert digests[0] == digests[1]
    assert summary["retries"] == 1 and list(arrays["retries"]) == [1, 0]
    assert arrays["seeds"][0] == derive_seed(first_seed, "retry") and np.isfinite(arrays["loss_curves"]).all()
    assert summary["steps"] == 3 * 6  # the retried batch's iterations count too
    assert "t/m batch 0 (shard 0): loss not finite from iteration 4; optimizing it again from seed" in lines[0]


def test_a_batch_that_stays_non_finite_fails_naming_method_batch_and_iteration(teacher_file):
    from natinv.errors import NatinvError

    path, _ = teacher_file
    model, meta = load_model(path)
    method = replace(DI, iterations=4, lr=1e30)
    syn = SynthesisConfig(num_images=16, batch_size=16, shards=1, methods={"m": method}, run=["m"], retries=1)
    lines = []
    with pytest.raises(NatinvError, match=r"^t/m batch 0 \(shard 0\): loss or images not finite from iteration 2 of 4, in 2 tries"):
        synthesize_shard(model, meta, "t", "m", method, syn, 0, 0, torch.device("cpu"), log=lines.append)
    assert len(lines) == 1  # one retry announced


def test_ni_optimizes_the_output_conv_with_the_ftp_and_lr_head_overrides_it():
    """The official code puts the output 1x1 conv (W1) in the FTP's optimizer; lr_head sets its own rate."""
    from natinv.synthesis.naturalinversion import NaturalInversionImage, param_groups

    model = NaturalInversionImage(NI, 10, (3, 32, 32), tiny_teacher().stage_shapes(3, 32))
    alpha = torch.nn.Parameter(torch.ones(4, 3, 1, 1))

    def lr_of(cfg, module):
        (lr,) = [g["lr"] for g in param_groups(model, alpha, cfg) if g["params"][0] is next(module.parameters())]
        return lr

    cfg = replace(NI, lr_generator=1e-3, lr_ftp=5e-4)
    assert lr_of(cfg, model.head) == 5e-4 and lr_of(cfg, model.ftp) == 5e-4 and lr_of(cfg, model.generator) == 1e-3
    assert lr_of(replace(cfg, lr_head=1e-3), model.head) == 1e-3
    grouped = [p for g in param_groups(model, alpha, cfg) for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters())) + 1  # every one, once


def test_ni_generator_starts_from_the_official_initialization():
    """Kaiming-normal convs, zero biases, BN weights ~ N(1, 0.02): the output at init has about twice the std of
    PyTorch's default initialization (paper-size generator: about 0.9 vs 0.4)."""
    from natinv.synthesis.naturalinversion import NaturalInversionImage

    shapes = tiny_teacher().stage_shapes(3, 32)
    z, y = torch.randn(64, 1024, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    stds = {}
    for init in ("official", "pytorch"):
        torch.manual_seed(0)
        gen = NaturalInversionImage(replace(NIConfig(), generator_init=init), 10, (3, 32, 32), shapes).generator
        bns = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        convs = [m for m in gen.modules() if isinstance(m, torch.nn.Conv2d)]
        weights = torch.cat([m.weight for m in bns])
        if init == "official":
            assert abs(weights.mean() - 1) < 0.01 and 0.01 < weights.std() < 0.03
            assert all(torch.count_nonzero(m.bias) == 0 for m in bns + convs)
            fan_in = convs[0].weight[0].numel()
            assert abs(convs[0].weight.std() * fan_in**0.5 / 2**0.5 - 1) < 0.05  # Kaiming normal: std = sqrt(2 / fan_in)
        else:
            assert torch.all(weights == 1)
        with torch.no_grad():
            stds[init] = gen.train()(z, y).std().item()
    assert 0.7 < stds["official"] < 1.2 and 0.25 < stds["pytorch"] < 0.55, stds


def test_deepinversion_rolls_without_flipping_by_default():
    """NVlabs' CIFAR DeepInversion only rolls the image; NI's official code also flips."""
    assert LossWeights.of(DIConfig()).flip is False and LossWeights.of(NIConfig()).flip is True
    from natinv.synthesis.priors import JitterDraws
    from conftest import jitter_flip

    x = torch.randn(2, 3, 8, 8)
    seen = [jitter_flip(x, JitterDraws(torch.Generator().manual_seed(s), 2, False)) for s in range(20)]
    for s in seen:  # a roll only: some roll of x, never its mirror image
        assert any(torch.equal(s, torch.roll(x, (dy, dx), (2, 3))) for dy in range(-2, 3) for dx in range(-2, 3))


@pytest.mark.parametrize("priors_on", ["jittered", "clean"])
def test_priors_are_taken_on_the_image_the_switch_names(priors_on):
    from natinv.synthesis.priors import JitterDraws, l2_prior, tv_prior
    from conftest import jitter_flip

    teacher = tiny_teacher()
    obj = InversionObjective(teacher, replace(LossWeights.of(NI), priors_on=priors_on))
    x = torch.randn(4, 3, 32, 32)
    _, terms = obj(x, torch.arange(4), obj.draws([torch.Generator().manual_seed(3)]))
    obj.close()
    jittered = jitter_flip(x, JitterDraws(torch.Generator().manual_seed(3), 2, True))
    assert not torch.equal(jittered, x)
    expected = jittered if priors_on == "jittered" else x
    torch.testing.assert_close(terms[0, 3:5], torch.stack([tv_prior(expected), l2_prior(expected)]))


@pytest.mark.parametrize("ftp_input", ["jittered", "clean"])
def test_ftp_reads_the_teacher_features_of_the_generator_output_the_switch_names(ftp_input, monkeypatch):
    """jittered (official code): features of G(z|y) rolled and flipped by the batch's jitter generator, and m_L is
    added to that jittered output; clean (paper's Alg. 1): features of G(z|y) itself."""
    from natinv.synthesis import naturalinversion as ni
    from natinv.synthesis.priors import JitterDraws
    from conftest import jitter_flip

    cfg = replace(NI, iterations=1, ftp_input=ftp_input)
    seen = []
    real = InversionObjective.stage_features
    monkeypatch.setattr(InversionObjective, "stage_features", lambda self, x: seen.append(x.clone()) or real(self, x))
    generated = []
    real_gen = ni.Generator.forward
    monkeypatch.setattr(ni.Generator, "forward", lambda self, z, y=None: generated.append(real_gen(self, z, y)) or generated[-1])
    _run(naturalinversion, cfg, tiny_teacher())
    (x,), (g,) = seen, generated
    # the jitter generator is the batch's seed; its first draw is the FTP's jitter, the loss pass draws after it
    expected = jitter_flip(g, JitterDraws(torch.Generator().manual_seed(123), 2, True)) if ftp_input == "jittered" else g
    assert not torch.equal(jitter_flip(g, JitterDraws(torch.Generator().manual_seed(123), 2, True)), g)
    torch.testing.assert_close(x, expected.detach())


@pytest.mark.parametrize("module,cfg,k,capture", [(naturalinversion, NI, 1, False), (naturalinversion, NI, 2, False),
                                                  (naturalinversion, replace(NI, o2o=False, ftp=False, acs=False), 1, False),
                                                  (deepinversion, DI, 2, False), (naturalinversion, NI, 2, True),
                                                  (deepinversion, DI, 1, True)],
                         ids=["ni", "ni-k2", "ni-o2m", "di-k2", "ni-k2-capture", "di-capture"])
def test_a_synthesis_iteration_reads_nothing_back_to_the_host(module, cfg, k, capture):
    """No operator that reads a tensor's value to the host (item, tolist, bool of a tensor: a GPU sync) runs per
    iteration: a run of 3 iterations calls as many as a run of 1 (with engine.capture: 5 static iterations as many as 1)."""
    from natinv.synthesis.capture import WARMUP

    teacher = tiny_teacher(width=8)
    obj = InversionObjective(teacher, LossWeights.of(cfg), engine=EngineConfig(batches_per_step=k, capture=capture))
    batches = [(torch.arange(8) % 10, s) for s in range(k)]
    reads = []
    for iterations in ((WARMUP + 1, WARMUP + 5) if capture else (1, 3)):
        mode = Reads()
        with mode:
            list(module.synthesize(obj, batches, replace(cfg, iterations=iterations), 10, (3, 32, 32), torch.device("cpu")))
        reads.append(mode.n["_local_scalar_dense"])
    obj.close()
    assert reads[1] == reads[0]


@pytest.mark.parametrize("method", ["dafl", "dfad"])
def test_a_generator_step_with_its_student_reads_nothing_back_to_the_host(method):
    """DAFL and DFAD: a generator step and its student's steps read no tensor value back to the host (z is drawn on
    the device's generator, the curve and losses stay there): 3 steps read as many values as 1."""
    import importlib

    from natinv.config import CoTrainConfig, DAFLConfig, DFADConfig
    from natinv.models import build_model
    from natinv.synthesis.cotrain import CoStudent

    module = importlib.import_module(f"natinv.synthesis.{method}")
    co = CoTrainConfig(student="s", steps=2, batch_size=8, lr=0.05, temperature=1.0)
    teacher = tiny_teacher(width=8)
    reads = []
    for iterations in (1, 3):
        cfg = (DAFLConfig if method == "dafl" else DFADConfig)(iterations=iterations, batch_size=8, latent_dim=16,
                                                               generator_width=8, cotrain=co)
        student = CoStudent(build_model("resnet8", 10, 3, 2), co, iterations * 2, torch.device("cpu"))
        mode = Reads()
        with mode:
            module.train(teacher, student, cfg, (3, 32, 32), torch.device("cpu"), torch.Generator().manual_seed(0))
        reads.append(mode.n["_local_scalar_dense"])
    assert reads[1] == reads[0]


class Reads(TorchDispatchMode):
    """Counts the operators dispatched inside it, by name (`_local_scalar_dense`: a value read back to the host)."""

    def __init__(self):
        super().__init__()
        self.n = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class _FirstImages(Exception):
    """Raised by a stand-in for optimize with the first images a synthesis renders."""


@pytest.mark.parametrize("per_step", [1, 2], ids=["separate", "grouped"])
def test_a_centered_render_is_the_papers_shifted_to_the_valid_ranges_midpoint(monkeypatch, per_step):
    """acs_center: range renders c + alpha * tanh(...), c the midpoint of each channel's valid range, from the same
    start: the first images of two otherwise equal runs differ by c exactly, channel by channel (one module per batch,
    and two batches as one module of stacked parameters). Without the range it is one line."""
    from natinv.data import pixel_range
    from natinv.errors import ConfigError

    def first_images(make_images, *args, **kwargs):
        raise _FirstImages(make_images().detach().clone())

    monkeypatch.setattr(naturalinversion, "optimize", first_images)
    teacher = tiny_teacher(width=8)
    valid = pixel_range((0.2, 0.5, 0.7), (0.3, 0.25, 0.2))
    center = ((valid[0] + valid[1]) / 2).view(-1)
    batches = [(torch.arange(8) % 10, s) for s in (21, 22)]
    images = {}
    for mode in ("zero", "range"):
        obj = InversionObjective(teacher, LossWeights.of(NI), engine=EngineConfig(batches_per_step=per_step))
        with pytest.raises(_FirstImages) as first:
            list(naturalinversion.synthesize(obj, batches, replace(NI, acs_center=mode), 10, (3, 32, 32),
                                             torch.device("cpu"), pixel_range=valid))
        images[mode] = first.value.args[0]
        obj.close()
    assert len(images["zero"]) == 8 * per_step
    shift = (images["range"] - images["zero"]).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(shift, center[:, None].expand_as(shift), rtol=0, atol=1e-6)
    assert center.tolist() == pytest.approx([1.0, 0.0, -1.0])  # (0.5 - mean) / std
    with pytest.raises(ConfigError, match="acs_center = range"):
        list(naturalinversion.synthesize(InversionObjective(teacher, LossWeights.of(NI)), batches,
                                         replace(NI, acs_center="range"), 10, (3, 32, 32), torch.device("cpu")))
