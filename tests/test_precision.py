"""bfloat16 autocast (engine.autocast for synthesis, engine.train_autocast for training): what runs in bfloat16, and that
losses, weights and images stay float32."""
import pytest
import torch
from torch import nn

from natinv.config import CoTrainConfig, DAFLConfig, EngineConfig, NIConfig
from natinv.models import build_model
from natinv.synthesis.objective import InversionObjective, LossWeights
from natinv.train import SGDSchedule, cross_entropy_loss, fit
from conftest import tiny_teacher

NI = NIConfig(iterations=1, latent_dim=32, generator_width=16)


def _conv_dtypes(model: nn.Module) -> tuple[list[torch.dtype], list]:
    """The output dtypes of every convolution of `model` as they run, and the hooks' handles."""
    seen: list[torch.dtype] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    return seen, handles


@pytest.mark.parametrize("k", [1, 2], ids=["one-module", "grouped"])
def test_ni_renders_its_images_under_autocast_and_keeps_losses_and_images_in_float32(k):
    """engine.autocast = bf16: the generator, FTP and output head run in bfloat16 (iteration 0's images, rendered before
    any step, differ from float32's by bfloat16 rounding only), the teacher passes too; curves and images are float32."""
    from natinv.synthesis import naturalinversion

    teacher = tiny_teacher(width=8)
    batches = [(torch.arange(8) % 10, s) for s in range(k)]
    runs = {}
    for precision in (None, "bf16"):
        objective = InversionObjective(teacher, LossWeights.of(NI), engine=EngineConfig(autocast=precision, batches_per_step=k))
        seen, handles = _conv_dtypes(teacher)
        runs[precision] = list(naturalinversion.synthesize(objective, batches, NI, 10, (3, 32, 32), torch.device("cpu")))
        for h in handles:
            h.remove()
        objective.close()
        convs = sum(isinstance(m, nn.Conv2d) for m in teacher.modules())
        assert seen[:convs] == [torch.float32] * convs  # the stage shapes, read once before the loop
        assert set(seen[convs:]) == {torch.bfloat16 if precision else torch.float32}
    for fp32, bf16 in zip(runs[None], runs["bf16"]):
        assert bf16.images.dtype == bf16.curve.dtype == torch.float32
        assert not torch.equal(bf16.images, fp32.images)  # the generator ran in bfloat16 ...
        error = (bf16.images - fp32.images).abs().mean() / fp32.images.abs().mean()
        assert error < 0.02, error  # ... and only its rounding differs (bfloat16 keeps 8 bits: 0.4 % per operation)


def test_training_under_autocast_runs_the_model_in_bf16_and_keeps_weights_and_loss_in_float32():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 3, 4)
    seen, handles = _conv_dtypes(model)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)  # uint8 pixels, normalized batch by batch
    y = torch.arange(64) % 10
    history = fit(model, x, y, cross_entropy_loss, SGDSchedule(2, 16, 0.05), torch.device("cpu"), 0,
                  normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), precision="bf16")
    for h in handles:
        h.remove()
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)


def test_uint8_pixels_train_as_their_normalized_floats_would():
    """fit normalizes uint8 pixels batch by batch: the same weights as training on the normalized float32 set."""
    from natinv.data import normalize

    x = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(48) % 10
    norm = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    weights = []
    for data, normalization in ((x, norm), (normalize(x, *norm), None)):
        torch.manual_seed(0)
        model = build_model("resnet8", 10, 3, 4)
        fit(model, data, y, cross_entropy_loss, SGDSchedule(1, 16, 0.05), torch.device("cpu"), 0, normalization=normalization)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_dafl_trains_its_generator_and_student_under_autocast():
    """DAFL with precision bf16: the teacher, generator and student forward passes in bfloat16, its curve float32."""
    from natinv.synthesis import dafl
    from natinv.synthesis.cotrain import CoStudent

    cfg = DAFLConfig(iterations=3, batch_size=16, latent_dim=32, generator_width=16,
                     cotrain=CoTrainConfig(student="s", steps=1, batch_size=16, lr=0.1, temperature=1.0))
    teacher = tiny_teacher(width=8)
    student = CoStudent(build_model("resnet8", 10, 3, 2), cfg.cotrain, 3, torch.device("cpu"), "bf16")
    seen, handles = _conv_dtypes(teacher)
    s_seen, s_handles = _conv_dtypes(student.model)
    gen = torch.Generator().manual_seed(0)
    generator, curve = dafl.train(teacher, student, cfg, (3, 32, 32), torch.device("cpu"), gen, precision="bf16")
    for h in handles + s_handles:
        h.remove()
    assert set(seen) == set(s_seen) == {torch.bfloat16}
    assert curve.dtype == torch.float32 and torch.isfinite(curve).all()
    assert all(p.dtype == torch.float32 for p in generator.parameters())
