"""The device a job runs on: a job that asked for a GPU and has none stops at once with one line saying why; the suite
pins itself to the CPU; a shard records what it was computed on."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from natinv.cli import job_device
from natinv.errors import ConfigError
from natinv.runtime import cuda_unavailable_reason, device_record, pick_device
from pipeline import tiny_params


@pytest.mark.parametrize("torch_cuda, driver, visible, expected", [
    (None, 0, None, "torch 2.x is a CPU-only build"),
    ("13.0", 13000, "", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
    ("13.0", 0, None, "no NVIDIA driver is loaded on this host"),
    ("13.0", 12040, None, "the NVIDIA driver 550.54 supports CUDA 12.4, and torch 2.x is built for CUDA 13.0, which needs "
                          "a newer driver; install the torch build for CUDA 12.4"),
    ("12.4", 12080, None, "finds no usable GPU"),
])
def test_the_reason_for_no_gpu_names_what_to_change(torch_cuda, driver, visible, expected):
    assert expected in cuda_unavailable_reason("2.x", torch_cuda, driver, "550.54", visible)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_cuda_without_a_gpu_is_one_error_line_at_once(tmp_path):
    with pytest.raises(ConfigError, match=r"^device = 'cuda' but "):
        pick_device("cuda")
    env = {k: v for k, v in os.environ.items() if k != "NATINV_DEVICE"}
    proc = subprocess.run([sys.executable, "-m", "natinv", "teacher", *tiny_params(tmp_path), "--teacher", "resnet8-w16",
                           "--set", "device=cuda"], capture_output=True, text=True, env={**env, "NATINV_TRACKING": "off"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("natinv teacher: error: device = 'cuda' but ")
    assert not (tmp_path / "results").exists()  # stopped before any work


def test_which_device_a_job_reads(monkeypatch):
    monkeypatch.delenv("NATINV_DEVICE", raising=False)
    assert job_device(None, "cuda", asks_for_gpu=True) == "cuda"
    assert job_device(None, "cuda", asks_for_gpu=False) == "auto"  # data, t-SNE, report: whatever the node has
    assert job_device("cpu", "cuda", asks_for_gpu=True) == "cpu"  # --device wins
    monkeypatch.setenv("NATINV_DEVICE", "cpu")
    assert job_device(None, "cuda", asks_for_gpu=True) == "cpu"
    monkeypatch.setenv("NATINV_DEVICE", "gpu")
    with pytest.raises(ConfigError, match=r"NATINV_DEVICE = 'gpu': allowed: auto, cpu, cuda"):
        job_device(None, "auto", asks_for_gpu=True)


def test_the_suite_runs_its_stages_on_the_cpu():
    assert os.environ["NATINV_DEVICE"] == "cpu"


def test_a_device_record_names_the_hardware_and_the_numerics_flags():
    rec = device_record(torch.device("cpu"))
    assert rec["type"] == "cpu" and rec["name"] and rec["torch"] == torch.__version__
    assert {"cuda", "cudnn", "cudnn_benchmark", "cudnn_deterministic", "tf32_matmul", "tf32_cudnn"} <= set(rec)


CLAIM = """
import sys
from pathlib import Path
from natinv.runtime import claim_gpu
print(claim_gpu(["GPU-aaaa", "GPU-bbbb"], Path(sys.argv[1])), flush=True)
sys.stdin.readline()  # holds its claim until told to exit
"""


def test_processes_of_one_job_claim_different_gpus_and_a_finished_ones_gpu_is_free_again(tmp_path):
    """A job given several GPUs runs one process per grouped shard: each takes the first GPU no other process holds."""
    def start():
        proc = subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return proc, proc.stdout.readline().strip()

    (a, ia), (b, ib), (c, ic) = start(), start(), start()
    assert (ia, ib, ic) == ("0", "1", "None")
    a.communicate("\n")
    d, id_ = start()
    assert id_ == "0"
    for p in (b, c, d):
        p.communicate("\n")


def test_every_stage_job_applies_the_params_gpu_numerics(monkeypatch, tmp_path):
    """The CLI hands `deterministic` to configure_device, which sets cuDNN autotuning, determinism and TF32 for a GPU."""
    import natinv.runtime as rt
    from natinv.cli import main

    seen, real = [], rt.configure_device
    monkeypatch.setattr(rt, "configure_device", lambda device, deterministic: seen.append((device.type, deterministic)))
    monkeypatch.setenv("NATINV_TRACKING", "off")
    assert main(["data", *tiny_params(tmp_path), "--set", "deterministic=true"]) == 0
    assert seen == [("cpu", True)]

    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    try:
        real(torch.device("cuda"), True)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32) == (False, True, False, False)
        real(torch.device("cuda"), False)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.use_deterministic_algorithms(False)
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = flags
