"""Crash safety: kill -9 during a shard, during teacher training and during a whole Snakemake run. The re-run finishes,
its outputs are byte-identical to an uninterrupted run's, no temporary file is left, and the killed pipeline's MLflow
parent run does not stay RUNNING."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import BIN, TINY, compare_runs, copy_repo, snakemake_jobs, tiny_params, tool

pytestmark = pytest.mark.slow


QUIET = {**os.environ, "NATINV_TRACKING": "off"}  # the stage tests need no MLflow store


def natinv(params: list[str], *argv: str) -> list[str]:
    return [sys.executable, "-m", "natinv", argv[0], *params, *argv[1:], "--threads", "1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    params = tiny_params(tmp)
    subprocess.run(natinv(params, "data"), check=True, capture_output=True, env=QUIET)
    subprocess.run(natinv(params, "teacher", "--teacher", "resnet8-w16"), check=True, capture_output=True, env=QUIET)
    return tmp / "results" / "tiny", params


def _interrupted_equals_uninterrupted(outputs: list[Path], cmd: list[str], logged: str, tmp: Path) -> None:
    """Kill `cmd` as soon as its log shows `logged` (mid-work), re-run it, compare with the uninterrupted outputs."""
    reference = {p: p.read_bytes() for p in outputs}
    for p in outputs:
        p.unlink()
    log = tmp / "killed.log"
    with log.open("w") as fh:
        kill_when(cmd, lambda: logged in log.read_text(), {**QUIET, "PYTHONUNBUFFERED": "1"}, stderr=fh)
    assert not any(p.exists() for p in outputs)  # killed mid-work: nothing half-written under the real names
    stale = outputs[0].parent / f".{outputs[0].name}.natinv-k1ll3d00.tmp"  # as a kill inside the write window leaves
    stale.write_bytes(b"half")
    subprocess.run(cmd, check=True, capture_output=True, env=QUIET)  # the re-run: the same command
    for p in outputs:
        assert p.read_bytes() == reference[p], p
    assert not list(outputs[0].parent.glob(".*.tmp"))


def kill_when(cmd: list[str], ready, env: dict, cwd: Path | None = None, stderr=subprocess.DEVNULL) -> None:
    """Start `cmd` in its own process group and SIGKILL the whole group (as a node that dies) as soon as `ready()` holds
    (polled: the test waits for the event, not for a time)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    while not ready():
        assert proc.poll() is None, f"{cmd[:4]} finished before the event it was to be killed at"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("seconds", "cpu_seconds", "s_per_iter", "_sha256")}


@pytest.mark.parametrize("method", ["ni", "ni-fast", "adi", "dafl"])
def test_a_shard_killed_after_saving_its_progress_resumes_there_and_ends_with_the_same_bytes(prepared, method):
    """kill -9 right after a shard saved its progress (NI: every batch its own; ni-fast: the meta-parameters, alpha's
    mean among them, its batches so far made; ADI: a co-trained student that has seen the batches so far; DAFL: one
    generator training): the re-run says where it resumed, and its files equal an uninterrupted run's."""
    exp, params = prepared
    size = "synthesis.methods.dafl.iterations=100" if method == "dafl" else f"synthesis.methods.{method}.iterations=40"
    if method == "ni-fast":  # its shards start from the warm-up stage's file
        params = [*params, "--set", "synthesis.run=[ni-fast]"]
        subprocess.run(natinv(params, "meta", "--teacher", "resnet8-w16", "--method", method), check=True,
                       capture_output=True, env=QUIET)
    cmd = natinv(params, "synthesize", "--teacher", "resnet8-w16", "--method", method, "--shard", "0", "--set", size,
                 "--set", "synthesis.num_images=96", "--set", "synthesis.shards=1", "--set", "engine.save_every_minutes=0")
    subprocess.run(cmd, check=True, capture_output=True, env=QUIET)
    shard = exp / f"synth/resnet8-w16/{method}"
    outputs = [shard / "shard-0.npz", shard / "shard-0.png"]
    reference = {p: p.read_bytes() for p in outputs}
    summary = _without_timing(json.loads((shard / "shard-0.json").read_text()))
    progress = shard / "shard-0.progress.safetensors"
    assert not progress.exists()  # a finished shard leaves no progress behind
    for p in [*outputs, shard / "shard-0.json"]:
        p.unlink()
    kill_when(cmd, progress.is_file, QUIET)
    assert not any(p.exists() for p in outputs)
    from safetensors import safe_open

    with safe_open(str(progress), framework="pt") as f:
        before = float(f.metadata()["seconds"])
    rerun = subprocess.run(cmd, check=True, capture_output=True, text=True, env=QUIET)
    unit = "step" if method == "dafl" else "batch"
    assert f"resuming after {unit} " in rerun.stderr, rerun.stderr[-2000:]
    for p in outputs:
        assert p.read_bytes() == reference[p], p
    resumed = json.loads((shard / "shard-0.json").read_text())
    assert _without_timing(resumed) == summary and resumed["seconds"] > before  # the time before the kill counts too
    assert not progress.exists() and not list(shard.glob(".*.tmp"))


def test_a_progress_file_of_other_settings_is_not_resumed_from(prepared):
    exp, params = prepared
    base = natinv(params, "synthesize", "--teacher", "resnet8-w16", "--method", "di", "--shard", "0",
                  "--set", "synthesis.num_images=96", "--set", "synthesis.shards=1", "--set", "engine.save_every_minutes=0")
    progress = exp / "synth/resnet8-w16/di/shard-0.progress.safetensors"
    kill_when([*base, "--set", "synthesis.methods.di.iterations=60"], progress.is_file, QUIET)
    rerun = subprocess.run([*base, "--set", "synthesis.methods.di.iterations=30"], check=True, capture_output=True,
                           text=True, env=QUIET)
    assert "saved by other parameters or code; starting the shard from the beginning" in rerun.stderr
    assert "resuming" not in rerun.stderr and not progress.exists()


def test_teacher_training_killed_mid_epoch_reruns_to_the_same_bytes(prepared):
    exp, params = prepared
    cmd = natinv(params, "teacher", "--teacher", "resnet8-w8", "--set", "teacher.epochs=5", "--set", "teacher.models=[resnet8-w16,resnet8-w8]")
    subprocess.run(cmd, check=True, capture_output=True, env=QUIET)
    _interrupted_equals_uninterrupted([exp / "teachers/resnet8-w8.safetensors"], cmd, "epoch 2/5", exp.parent)


def test_a_killed_snakemake_run_resumes_to_the_uninterrupted_outputs(tiny_run, tmp_path):
    """kill -9 of Snakemake and its jobs mid-synthesis; then what the README says: `snakemake --unlock`, and the same
    command with --rerun-incomplete. Every output equals the uninterrupted tiny run's; the killed parent run is KILLED.
    The run goes as far as synthesis (`--until synthesize`: data, teacher, every shard): the stages after it run as any
    run does, which the uninterrupted run shows."""
    from mlflow import MlflowClient

    repo = copy_repo(tmp_path / "repo", commit=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TORCH_HOME": str(repo / ".torch-home")}
    env.pop("NATINV_TRACKING", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    until = [*TINY, "--until", "synthesize"]
    log = tmp_path / "snakemake.log"
    with log.open("w") as fh:  # killed as soon as Snakemake has recorded a first finished shard
        kill_when([str(BIN / "snakemake"), "--cores", "2", *until], lambda: "(Rule: synthesize)" in log.read_text(),
                  env, cwd=repo, stderr=fh)
    assert (repo / "results/tiny/teachers/resnet8-w16.safetensors").is_file()  # some jobs finished, ...
    tool(repo, "snakemake", "--unlock", *TINY)
    planned = snakemake_jobs(repo, "--rerun-incomplete", *until)  # what the re-run will make
    assert any(job["rule"] == "synthesize" for job in planned.values())  # ... not every shard
    finished = {p: p.stat().st_mtime_ns for p in (repo / "results/tiny/synth").rglob("shard-*.npz")
                if str(p.relative_to(repo)) not in planned}
    tool(repo, "snakemake", "--cores", "2", "--rerun-incomplete", *until)
    assert finished and all(p.stat().st_mtime_ns == t for p, t in finished.items())  # kept, not made again
    assert {p.name for p in (repo / "results/tiny").iterdir() if p.is_dir()} == {"data", "teachers", "synth", "logs",
                                                                                  "benchmarks"}
    assert compare_runs(tiny_run[0], repo, "results/tiny", folders=("data", "teachers", "synth")) > 6 * 3  # 6 shards
    assert not list((repo / "results").rglob(".*.tmp"))
    client = MlflowClient(f"sqlite:///{repo / 'results/mlflow.db'}")
    parents = client.search_runs([client.get_experiment_by_name("natinv-tiny").experiment_id], "tags.stage = 'pipeline'")
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
