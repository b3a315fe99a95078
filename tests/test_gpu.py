"""The GPU tier (`pytest -m gpu`; skipped, saying why, on a host without one): every method kind synthesizes on cuda
and agrees with the CPU within a stated tolerance, a shard re-run on the same GPU with `deterministic: true` gives the
same bytes, a shard records the GPU it ran on, and the tiny profile runs end to end with every stage on cuda.

Tolerance: three optimizer steps from the same seed, in float32 with TF32 off (`deterministic: true`): every loss term
of every iteration within 2 % (relative, plus 1e-3 absolute) of the CPU's, and the stored images within 0.05 (they
are float16 values of order 1 in normalized space). Kernels differ between devices, so equality is not expected."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from natinv.checkpoint import load_model
from natinv.config import load_config
from natinv.io import npz_bytes
from natinv.models import build_model
from natinv.runtime import configure_device
from natinv.synthesis.shard import synthesize_shard
from pipeline import ROOT, TINY, copy_repo, tool
from test_synthesis import CAPTURE_CASES, CAPTURE_IDS, assert_capture_equals_eager

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU: torch sees no CUDA device")]

KINDS = ["ni", "di", "adi", "ni-adi", "dafl", "dfad"]  # every kind, with and without a co-trained student


def _tiny():
    return load_config([ROOT / "params/default.yaml", ROOT / "params/tiny.yaml"])


def _shard(teacher_file, key: str, device: torch.device):
    cfg = _tiny()
    method = cfg.synthesis.methods[key]
    method = replace(method, iterations=3)
    syn = replace(cfg.synthesis, num_images=32, batch_size=16, shards=1)
    model, meta = load_model(teacher_file[0])
    student = None
    if method.cotrain is not None:
        torch.manual_seed(3)
        student = build_model("resnet8", 10, 3, 2)
    configure_device(device, deterministic=True)
    return synthesize_shard(model, meta, "t", key, method, syn, 0, 0, device, student, log=lambda _: None)


@pytest.mark.parametrize("key", KINDS)
def test_every_method_kind_on_cuda_agrees_with_the_cpu(teacher_file, key):
    cpu, _, _ = _shard(teacher_file, key, torch.device("cpu"))
    gpu, summary, _ = _shard(teacher_file, key, torch.device("cuda"))
    assert summary["hardware"]["type"] == "cuda" and summary["hardware"]["name"] == torch.cuda.get_device_name()
    assert summary["hardware"]["tf32_cudnn"] is False and summary["hardware"]["cudnn_deterministic"] is True
    curve = "generator_curve" if "generator_curve" in cpu else "loss_curves"
    np.testing.assert_allclose(gpu[curve], cpu[curve], rtol=0.02, atol=1e-3)
    np.testing.assert_allclose(gpu["images"].astype(np.float32), cpu["images"].astype(np.float32), atol=0.05)
    assert (gpu["labels"] == cpu["labels"]).all() or curve == "generator_curve"  # generative labels: the teacher's argmax


@pytest.mark.parametrize("key", ["ni", "adi", "dafl"])
def test_a_shard_rerun_on_the_same_gpu_gives_the_same_bytes(teacher_file, key):
    digests = [hashlib.sha256(npz_bytes(_shard(teacher_file, key, torch.device("cuda"))[0])).hexdigest() for _ in range(2)]
    assert digests[0] == digests[1]


@pytest.mark.parametrize("module,cfg,k", CAPTURE_CASES, ids=CAPTURE_IDS)
def test_a_cuda_graph_of_the_iteration_equals_the_eager_iteration(module, cfg, k):
    """engine.capture on cuda: the iterations after the warm-up are replays of one captured CUDA graph; in float64
    with deterministic kernels they give the eager loop's curves, best iterations and images."""
    configure_device(torch.device("cuda"), deterministic=True)
    assert_capture_equals_eager(module, cfg, k, torch.device("cuda"), tol=1e-9)


def test_the_tiny_profile_runs_every_stage_on_cuda(tmp_path):
    repo = copy_repo(tmp_path / "repo", commit=True)
    tool(repo, "snakemake", "--cores", "2", *TINY, "--config", "deterministic=true",
         env={"NATINV_DEVICE": "cuda", "NATINV_TRACKING": "off"})
    shard = json.loads((repo / "results/tiny/synth/resnet8-w16/ni/shard-0.json").read_text())
    assert shard["device"].startswith("cuda") and shard["hardware"]["type"] == "cuda"
    assert (repo / "results/tiny/report/report.md").is_file()
    assert os.environ["NATINV_DEVICE"] == "cpu"  # the rest of the suite stays on the CPU
