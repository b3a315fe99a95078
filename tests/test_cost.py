"""The cost model: its FLOPs are what the package's own code does (a real shard counted against the prediction), it
covers every job of a plan, and the cluster is asked for each job's own memory and time."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from natinv import cost
from natinv.checkpoint import ModelMeta
from natinv.config import load_config
from natinv.errors import ConfigError
from natinv.models import build_model
from natinv.pipeline import STAGES
from natinv.synthesis.shard import synthesize_shard
from pipeline import ROOT


def _tiny(tmp_path, *overrides: dict):
    return load_config([ROOT / "params/default.yaml", ROOT / "params/tiny.yaml"], [{"results": str(tmp_path)}, *overrides])


@pytest.mark.parametrize("method", ["ni", "di", "adi", "dafl"])
def test_a_shards_predicted_flops_are_what_running_it_counts(tmp_path, method):
    cfg = _tiny(tmp_path, {"synthesis": {"shards": 1}})
    sh = cost.shapes(cfg)
    predicted = cost.job_cost(cfg, "synthesize", {"teacher": "resnet8-w16", "method": method, "shard": "0"}, sh,
                              cost.probes_of(cfg)).flop
    spec, m = cfg.models["resnet8-w16"], cfg.job_methods[method]
    torch.manual_seed(0)
    teacher = build_model(spec.arch, sh.classes, sh.channels, spec.width).eval()
    meta = ModelMeta(spec.arch, sh.classes, sh.channels, sh.size, spec.width, [0.5] * sh.channels, [0.25] * sh.channels)
    student = None if m.cotrain is None else build_model("resnet8", sh.classes, sh.channels, cfg.models[m.cotrain.student].width)
    with FlopCounterMode(display=False) as counted:
        synthesize_shard(teacher, meta, "t", method, m, cfg.synthesis, 0, 0, torch.device("cpu"), student, log=lambda _: None)
    # the prediction leaves out only a generative method's sampling passes of its generator: within 10 %
    assert predicted == pytest.approx(counted.get_total_flops(), rel=0.10)


def test_every_job_of_a_plan_is_costed_and_asks_the_cluster_for_its_own_memory_and_time(tmp_path):
    cfg = _tiny(tmp_path)
    costs = cost.plan_costs(cfg)
    assert len(costs) == sum(len(s.jobs(cfg)) for s in STAGES.values())
    synth = [c for c in costs if c.stage == "synthesize"]
    assert all(c.flop > 0 and c.host_mb > cost.PROCESS_MB for c in synth)
    more = _tiny(tmp_path, {"synthesis": {"num_images": 480}})  # 10x the images: shards hold and compute more
    bigger = [c for c in cost.plan_costs(more) if c.stage == "synthesize"]
    assert sum(c.flop for c in bigger) == pytest.approx(10 * sum(c.flop for c in synth), rel=1e-6)
    assert all(b.host_mb > s.host_mb for b, s in zip(bigger, synth))
    mem, minutes = cost.cluster_request(cfg, "synthesize", {"teacher": "resnet8-w16", "method": "ni", "shard": "0"})
    assert mem == int(cost.MARGIN * synth[0].host_mb) + 1 and minutes >= 10
    gpu = dataclasses.replace(cfg, device="cuda", job_gpus=1)  # on a GPU the activations leave the host
    on_gpu = cost.job_cost(gpu, "synthesize", synth[0].job, cost.shapes(gpu), cost.probes_of(gpu))
    assert on_gpu.host_mb < synth[0].host_mb and on_gpu.device_mb > 0


def test_training_on_real_images_holds_them_as_uint8_once(tmp_path):
    """A teacher, and a student on real images, keep the training set as uint8 pixels and normalize each batch: 10,000
    more training images are 10,000 x C x S x S more bytes for a teacher (the data set), twice that for a KD student on
    all of them (the data set and its uint8 subset), not a float32 copy of them (12 bytes per value with the
    conversion's temporaries)."""
    cfg = _tiny(tmp_path, {"kd": {"real_images": 10**6}})
    sh, probes = cost.shapes(cfg), cost.probes_of(cfg)
    more = dataclasses.replace(sh, train=sh.train + 10_000)
    kd = {"teacher": "resnet8-w16", "method": "real", "student": cfg.kd.students[0]}
    for stage, job, copies in [("teacher", {"teacher": "resnet8-w16"}, 1), ("kd", kd, 2)]:
        grown = cost.job_cost(cfg, stage, job, more, probes).host_mb - cost.job_cost(cfg, stage, job, sh, probes).host_mb
        assert grown == pytest.approx(copies * 10_000 * sh.values / cost.MB), stage


def test_the_cost_command_prints_every_stage_and_the_total(tmp_path):
    overlay = tmp_path / "here.yaml"
    overlay.write_text(f"results: {tmp_path}\n")
    proc = subprocess.run([sys.executable, "-m", "natinv", "cost", "--params", str(ROOT / "params/default.yaml"),
                           "--params", str(ROOT / "params/tiny.yaml"), "--params", str(overlay), "--device", "h100"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "estimated (not measured yet" in lines[0]
    cfg = load_config([ROOT / "params/default.yaml", ROOT / "params/tiny.yaml"])
    assert lines[1] == "data: 1x32x32, 10 classes, 2000 training and 500 test images (from fashion-mnist's known shape)"
    assert [ln.split()[0] for ln in lines[3:]] == [*(s for s in STAGES if STAGES[s].jobs(cfg)), "total"]
    assert lines[-1].split()[1] == "28"  # the tiny plan's jobs
    assert (tmp_path / "cost-probes.json").is_file()  # the counts are kept: the next call counts nothing
    # and imports no torch (Snakemake plans every run with this code)
    again = subprocess.run([sys.executable, "-X", "importtime", *proc.args[1:]], capture_output=True, text=True)
    assert again.stdout == proc.stdout and "counting" not in again.stderr
    assert not re.search(r"\|\s+torch$", again.stderr, re.M), "a plan whose counts are kept imported torch"
    bad = subprocess.run([*proc.args[:-1], "tpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--device = 'tpu': expected one of cpu, h100, h200" in bad.stderr


def test_snakemake_asks_each_job_for_what_the_cost_model_says(tmp_path):
    """The Snakefile's mem_mb and runtime of a job are cost.cluster_request's; one-shard methods come first."""
    from pipeline import BIN

    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--configfile", "params/default.yaml", "params/tiny.yaml",
                           "params/baselines.yaml", "--config", f"results={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config([ROOT / "params/default.yaml", ROOT / "params/tiny.yaml", ROOT / "params/baselines.yaml"],
                      [{"results": str(tmp_path)}])
    jobs = re.findall(r"rule synthesize:.*?wildcards: teacher=(\S+), method=(\S+), shard=(\d+)\n(?:    priority: (\d+)\n)?"
                      r".*?resources: .*?runtime=(\d+), mem_mb=(\d+)", proc.stdout, re.S)
    assert len(jobs) == len(STAGES["synthesize"].jobs(cfg))
    for teacher, method, shard, priority, runtime, mem in jobs:
        w = {"teacher": teacher, "method": method, "shard": shard}
        assert (int(mem), int(runtime)) == cost.cluster_request(cfg, "synthesize", w)
        assert int(priority or 0) == STAGES["synthesize"].job_priority(cfg, w) == 2 + (cfg.shards_of(method) == 1)


def test_a_method_with_a_warm_up_stage_is_costed_like_the_method_it_starts(tmp_path):
    cfg = _tiny(tmp_path, {"synthesis": {"run": ["ni", "ni-fast"]}})
    costs = {(c.stage, c.job.get("method")): c for c in cost.plan_costs(cfg)}
    assert costs[("meta", "ni-fast")].flop > 0
    ni, fast = (cfg.job_methods[m] for m in ("ni", "ni-fast"))
    ratio = costs[("synthesize", "ni-fast")].flop / costs[("synthesize", "ni")].flop
    assert ratio == pytest.approx(fast.iterations / ni.iterations, rel=0.2)  # its few iterations, from the same start


def _custom_sets(root) -> dict[str, dict]:
    """Custom data of each kind the data stage reads, with shapes unlike CIFAR's: data settings per kind."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(root / "nhwc.npz", images=rng.integers(0, 256, (45, 40, 40, 3), dtype=np.uint8), labels=np.arange(45) % 7)
    np.savez(root / "split.npz", images=rng.integers(0, 256, (30, 1, 24, 24), dtype=np.uint8), labels=np.arange(30) % 3,
             test_images=rng.integers(0, 256, (8, 1, 24, 24), dtype=np.uint8), test_labels=np.arange(8) % 3)
    for split, n in (("train", 5), ("test", 2)):
        for cls in ("a", "b", "c", "d"):
            (root / "folders" / split / cls).mkdir(parents=True)
            (root / "gray" / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "folders" / split / cls / f"{i}.png")
                Image.fromarray(rng.integers(0, 256, (18, 18), dtype=np.uint8)).save(root / "gray" / cls / f"{split}{i}.png")
    return {"npz": {"path": str(root / "nhwc.npz"), "test_fraction": 0.2},
            "npz with its test split": {"path": str(root / "split.npz")},
            "train and test folders": {"path": str(root / "folders")},
            "one gray folder, resized": {"path": str(root / "gray"), "image_size": 24, "test_fraction": 0.25,
                                         "train_limit": 20}}


def test_custom_data_is_costed_at_the_shape_the_data_stage_finds(tmp_path):
    """Before the data stage has run, a plan on custom data is sized from data.path itself (not as CIFAR-10): the
    cluster is asked for what the jobs will hold."""
    from natinv import data

    sets = _custom_sets(tmp_path)
    for name, settings in sets.items():
        cfg = _tiny(tmp_path / name, {"data": {"dataset": "custom", "test_limit": None, "train_limit": None} | settings})
        before = cost.shapes(cfg)
        if name == "npz":
            assert before == cost.Shapes(channels=3, size=40, classes=7, train=36, test=9)
            assert cost.table(cfg, "h100").splitlines()[1] == ("data: 3x40x40, 7 classes, 36 training and 9 test images "
                                                               "(from data.path's files)")
        data.prepare(cfg.data, cfg.exp_dir / "data")
        assert before == cost.shapes(cfg), name  # the manifest's figures
    small = _tiny(tmp_path / "small", {"data": {"dataset": "custom", "path": str(tmp_path / "gray"), "image_size": 12}})
    with pytest.raises(ConfigError, match="model arch vgg11 takes images of at least 32x32; these data are 12x12"):
        cost.table(small, "h100")  # the stages' one line, at planning
    missing = _tiny(tmp_path / "missing", {"data": {"dataset": "custom", "path": str(tmp_path / "none.npz")}})
    assert cost.table(missing, "h100").splitlines()[1].startswith(  # costed all the same; the data stage will refuse it
        "data: 3x32x32, 10 classes, 2000 training and 500 test images (from CIFAR-10's shape, as data.path cannot be read: "
        f"data.path = {tmp_path / 'none.npz'}: not found")


def test_saved_activations_are_counted_once_each_whatever_addresses_the_allocator_hands_out():
    """20 passes, each saving its own 1,000 floats (twice: y * y) and freeing them after its backward: 80,000 bytes,
    also where the allocator gives a later pass's tensor a freed one's address (here it does, for some of them)."""
    def passes():
        for _ in range(20):
            x = torch.randn(1000, requires_grad=True)
            y = x * 2
            (y * y).sum().backward()
            del x, y  # freed before the next pass allocates

    assert cost._counted(passes)[1] == 20 * 1000 * 4
