"""`python -m natinv bench synth|train`: one JSON line with the timing and every setting; bad input is one line."""
import json

import pytest

from natinv.cli import main
from pipeline import ROOT


@pytest.mark.parametrize("method", ["ni", "di"])
def test_bench_synth_prints_one_json_line(method, capsys):
    argv = ["bench", "synth", "--method", method, "--arch", "resnet8", "--num-classes", "10", "--batch-size", "8",
            "--iterations", "2", "--warmup", "1", "--threads", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["method"] == method and result["arch"] == "resnet8" and result["batch_size"] == 8
    assert result["iterations"] == 2 and result["settings"]["iterations"] == 3  # warm-up + timed
    assert result["s_per_iter"] > 0 and result["images_per_s"] == pytest.approx(8 / result["s_per_iter"])
    assert result["hours_50k_images_2k_iterations"] == pytest.approx(50_000 * 2_000 / result["images_per_s"] / 3600)
    assert result["peak_memory_mb"] > 0 and result["device"] == "cpu" and result["threads"] == 1


@pytest.mark.parametrize("stored", ["float16", "uint8"])
def test_bench_train_times_the_pipelines_training_loop(stored, capsys):
    argv = ["bench", "train", "--arch", "resnet8", "--teacher", "resnet8", "--batch-size", "8", "--steps", "2",
            "--threads", "1", "--stored", stored]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # the epochs' lines go to stderr
    result = json.loads(lines[0])
    assert result["arch"] == "resnet8" and result["teacher"] == "resnet8" and result["stored"] == stored
    assert result["images_per_s"] == pytest.approx(16 / (2 * result["s_per_step"]))
    assert result["device"] == "cpu" and result["threads"] == 1 and result["precision"] is None


def test_bench_synth_takes_the_engine_of_a_params_stack(tmp_path, capsys):
    """--params: the engine and `deterministic` a pipeline job of that stack runs with, whatever the engine flags say."""
    overlay = tmp_path / "engine.yaml"
    overlay.write_text("deterministic: true\nengine:\n  channels_last: false\n  batches_per_step: 2\n")
    argv = ["bench", "synth", "--method", "di", "--arch", "resnet8", "--batch-size", "4", "--iterations", "1",
            "--warmup", "0", "--threads", "1", "--batches-per-step", "3", "--params", str(ROOT / "params/default.yaml"),
            "--params", str(overlay)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["engine"]["channels_last"] is False and result["engine"]["batches_per_step"] == 2
    assert result["deterministic"] is True


@pytest.mark.parametrize("argv,message", [
    (["bench", "synth", "--method", "ni", "--batch-size", "0"], "--batch-size = 0: expected an integer >= 1"),
    (["bench", "train", "--steps", "0"], "--steps = 0: expected an integer >= 1"),
    (["bench", "train", "--teacher", "resnet9"], "--teacher = 'resnet9': expected one of resnet8, "),
])
def test_bench_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"natinv bench: error: {message}")


@pytest.mark.parametrize("method", ["ni", "di"])
def test_channels_last_gives_the_same_losses_and_images(method):
    """The engine option changes the memory layout of the teacher passes only: same numbers up to float rounding."""
    import torch

    from conftest import tiny_teacher
    from natinv.config import DIConfig, EngineConfig, NIConfig
    from natinv.synthesis import deepinversion, naturalinversion
    from natinv.synthesis.objective import InversionObjective, LossWeights

    module, cfg = {"ni": (naturalinversion, NIConfig(iterations=5, latent_dim=32, generator_width=16)),
                   "di": (deepinversion, DIConfig(iterations=5))}[method]
    runs = []
    for channels_last in (False, True):
        teacher = tiny_teacher(width=8)
        objective = InversionObjective(teacher, LossWeights.of(cfg), engine=EngineConfig(channels_last=channels_last))
        (res,) = module.synthesize(objective, [(torch.arange(16) % 10, 3)], cfg, 10, (3, 32, 32), torch.device("cpu"))
        objective.close()
        runs.append(res)
    assert torch.allclose(runs[0].curve, runs[1].curve, rtol=1e-4, atol=1e-5)
    # Adam's update divides each gradient element by its own size: an element whose gradient is rounding noise moves by
    # about lr either way, so two layouts' images can part by a few such steps (measured up to 0.015 over 8 seeds of NI;
    # most seeds 1e-5) while their losses agree to 1e-5; a layout bug moves the losses
    assert torch.allclose(runs[0].images, runs[1].images, rtol=0, atol=0.05)


def test_bf16_autocast_keeps_the_losses_close_and_in_float32():
    """bf16 changes numerics: the teacher passes run in bfloat16, the loss terms stay float32 and within a few
    per cent of float32's at the same images (the pipeline-scale quality check is in benchmarks/README.md)."""
    import torch

    from conftest import tiny_teacher
    from natinv.config import DIConfig, EngineConfig
    from natinv.synthesis import deepinversion
    from natinv.synthesis.objective import InversionObjective, LossWeights

    cfg = DIConfig(iterations=8)
    runs = {}
    for autocast in (None, "bf16"):
        objective = InversionObjective(tiny_teacher(width=8), LossWeights.of(cfg), engine=EngineConfig(autocast=autocast))
        (runs[autocast],) = deepinversion.synthesize(objective, [(torch.arange(16) % 10, 3)], cfg, 10, (3, 32, 32),
                                                     torch.device("cpu"))
        objective.close()
    fp32, bf16 = runs[None].curve, runs["bf16"].curve
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)
    torch.testing.assert_close(bf16[0], fp32[0], rtol=3e-2, atol=1e-3)  # iteration 0: the same images
    assert bf16[-1, 0] < bf16[0, 0]


@pytest.mark.slow  # torch.compile: a one-off compile of several seconds
def test_compiled_teacher_passes_give_the_same_losses():
    """engine.compile: torch.compile of the teacher passes (BN hooks and the custom BN backward included) keeps the
    loss curve up to float rounding."""
    import torch

    from conftest import tiny_teacher
    from natinv.config import DIConfig, EngineConfig
    from natinv.synthesis import deepinversion
    from natinv.synthesis.objective import InversionObjective, LossWeights

    cfg = DIConfig(iterations=3)
    curves = []
    for compile_ in (False, True):
        objective = InversionObjective(tiny_teacher(width=8), LossWeights.of(cfg), engine=EngineConfig(compile=compile_))
        (res,) = deepinversion.synthesize(objective, [(torch.arange(16) % 10, 3)], cfg, 10, (3, 32, 32), torch.device("cpu"))
        objective.close()
        curves.append(res.curve)
    torch.testing.assert_close(curves[1], curves[0], rtol=1e-4, atol=1e-5)


def _gpu_check(*args: str):
    """benchmarks/gpu_check.py run as a user runs it: (the finished process, its JSON lines); it must exit 0."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), *args], capture_output=True, text=True,
                          timeout=3600)  # a hang guard: a toy run has no time budget
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.slow
def test_the_gpu_check_reports_one_json_line_per_check_at_toy_sizes(tmp_path):
    """benchmarks/gpu_check.py --toy: every check on the CPU at toy sizes, each its own JSON line (also in --out)."""
    out = tmp_path / "check.jsonl"
    proc, lines = _gpu_check("--toy", "--out", str(out))
    assert [line["check"] for line in lines] == ["env", "synth", "official", "same_batch", "sharing", "train", "gpu_tier",
                                                 "smoke_gpu"]
    assert out.read_text().splitlines() == proc.stdout.splitlines()
    status = {line["check"]: line["status"] for line in lines}
    assert status == {"env": "ok", "synth": "ok", "official": "skipped", "same_batch": "ok", "sharing": "ok", "train": "ok",
                      "gpu_tier": "skipped", "smoke_gpu": "skipped"}, lines
    synth = lines[1]
    assert {(r["method"], r["autocast"], r["batches_per_step"], r["capture"]) for r in synth["rows"]} == {
        (m, a, k, False) for m in ("ni", "di") for a in (None, "bf16") for k in (1, 4)} | {
        ("ni", None, 1, True), ("di", "bf16", 4, True)}  # captured: each method once, every engine value once
    assert all(r["ops_per_batch_iteration"] > 0 for r in synth["rows"])
    assert [len(r["s_per_iter_each"]) for r in lines[4]["processes"].values()] == [1, 2]  # shards side by side
    assert {(r["arch"], r["precision"]) for r in lines[5]["rows"]} == {("resnet8", None), ("resnet8", "bf16")}
    assert isinstance(synth["adi"]["s_per_iter"], float)  # at toy sizes a difference of two timings: noise, either sign
    assert lines[3]["pipeline"]["same_bytes"] is True  # two fresh CPU processes: the same batch, byte for byte


def test_the_gpu_check_skips_what_its_time_budget_leaves_no_room_for():
    """--budget: a check that needs more seconds than are left is skipped, saying so, and the later ones still report."""
    _, lines = _gpu_check("--toy", "--budget", "0")
    assert len(lines) == 8
    needing_time = [line for line in lines if line["check"] in ("synth", "same_batch", "sharing", "train")]
    assert [line["status"] for line in needing_time] == ["skipped"] * 4
    assert all(line["why"].startswith("time budget:") for line in needing_time)


def test_count_ops_counts_each_dispatched_operator_forward_and_backward():
    import torch

    from natinv.bench import count_ops

    a, b = torch.ones(3, requires_grad=True), torch.ones(3)
    assert count_ops(lambda: a.detach() + b) == (2, 1)  # detach (a view: no kernel), add
    assert count_ops(lambda: (a * b).sum().backward())[1] > count_ops(lambda: (a * b).sum())[1]  # the backward's count


@pytest.mark.parametrize("method", ["ni", "di"])
def test_batches_per_step_dispatches_fewer_operators_per_batch_iteration(method):
    from natinv.bench import bench_synth
    from natinv.config import EngineConfig

    one, four = (bench_synth(method, "resnet8", 10, 4, iterations=1, warmup=0, engine=EngineConfig(batches_per_step=k))
                 for k in (1, 4))
    assert 0 < four["kernels_per_batch_iteration"] < one["kernels_per_batch_iteration"] < one["ops_per_batch_iteration"]
    assert four["ops_per_batch_iteration"] < one["ops_per_batch_iteration"]
