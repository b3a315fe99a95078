"""The SLURM profile against a real scheduler: a single-node SLURM on this machine (workflow/cluster/local-slurm.sh,
Debian's slurm-wlm), the tiny profile and a paper profile at smoke scale (up to its synthesis) run through
`--profile workflow/profiles/slurm`. Every job goes through sbatch, the outputs equal a local `--cores 2` run's, and
MLflow has one run per job."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pipeline import ROOT, TINY, compare_runs, copy_repo, tool

pytestmark = [pytest.mark.slow, pytest.mark.paper]
SMOKE_CIFAR10 = ["--configfile", "params/default.yaml", "params/paper-cifar10.yaml", "params/smoke.yaml"]


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM (installed and started by the repository's script)."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (workflow/cluster/local-slurm.sh installs and starts slurmctld/slurmd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no slurmctld and no apt-get to install Debian's slurm-wlm")
    # 4 CPUs on this 2-core machine: the jobs are short and wait on the scheduler more than they compute
    proc = subprocess.run(["bash", str(ROOT / "workflow/cluster/local-slurm.sh"), "start"], capture_output=True, text=True,
                          env={**os.environ, "NATINV_SLURM_CPUS": "4"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield
    subprocess.run(["bash", str(ROOT / "workflow/cluster/local-slurm.sh"), "stop"], capture_output=True)


def run_on_slurm(workdir: Path, config: list[str]) -> tuple[Path, Counter]:
    """Run a profile through the SLURM profile in a committed copy of the repository; returns the copy and the sbatch
    calls by rule (an `sbatch` first on PATH records each call, then hands it to the real one)."""
    repo = copy_repo(workdir / "repo", commit=True)
    shim, calls = workdir / "bin", workdir / "sbatch-calls.txt"
    shim.mkdir()
    real = shutil.which("sbatch")
    (shim / "sbatch").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nexec {real} "$@"\n')
    (shim / "sbatch").chmod(0o755)
    proc = tool(repo, "snakemake", "--profile", "workflow/profiles/slurm", *config, "--slurm-init-seconds-before-status-checks", "2",
                env={"PATH": str(shim)}, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    rules = Counter(re.search(r"--comment rule_(.+?)(?:_wildcards_\S*)?(?:\s|$)", line)[1]
                    for line in calls.read_text().splitlines())
    return repo, rules


def mlflow_children(repo: Path, experiment: str, results: str = "results") -> Counter:
    """Runs by stage nested under the single, finished pipeline run of `experiment`."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(f"natinv-{experiment}").experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("stage") != "pipeline"]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    return Counter(r.data.tags["stage"] for r in children)


def test_tiny_profile_runs_on_slurm_like_it_runs_locally(slurm, tmp_path, tiny_run):
    repo, rules = run_on_slurm(tmp_path, TINY)
    assert sum(rules.values()) == 28 and rules["synthesize"] == 6 and rules["report"] == 1  # every job, none run locally
    assert compare_runs(tiny_run[0], repo, "results/tiny") > 50
    assert mlflow_children(repo, "tiny") == rules


def test_a_paper_profile_at_smoke_scale_synthesizes_on_slurm_like_it_does_locally(slurm, tmp_path, smoke_run):
    """paper-cifar10 + smoke up to its synthesis (its data, both teachers and the 24 shards of its 10 methods, the
    co-trained ones included) through sbatch. Every later stage's rule goes through SLURM in the tiny profile's run
    above; the whole paper profile under SLURM is 140 jobs, over half an hour of a 2-core machine spent mostly starting
    Snakemake and Python, which the local run (test_workflow) already makes end to end."""
    repo, rules = run_on_slurm(tmp_path, [*SMOKE_CIFAR10, "--until", "synthesize"])
    assert rules == {"data": 1, "teacher": 2, "synthesize": 24}
    local, _ = smoke_run("paper-cifar10")
    # a shard leaves three files, a teacher two; under two a job means outputs missing from both runs, which the equal
    # listings alone would not catch
    folders = ("data", "teachers", "synth")
    assert compare_runs(local, repo, "results/smoke/paper-cifar10", folders) >= 2 * sum(rules.values())
    assert mlflow_children(repo, "paper-cifar10", "results/smoke") == rules


def test_grouped_shards_share_cluster_jobs_and_make_the_same_shards(slurm, tmp_path, tiny_run):
    """synthesis.shards_per_job: the two shards of each method go to SLURM as one group job (3 submissions, not 6)
    and are the shards a local run makes."""
    overlay = tmp_path / "grouped.yaml"
    overlay.write_text("synthesis: {shards_per_job: {resnet8-w16: 2}}\n")
    repo, rules = run_on_slurm(tmp_path, [*TINY, str(overlay), "--until", "synthesize"])
    assert rules == {"data": 1, "teacher": 1, **{f"synthesize-resnet8-w16-{m}_synthesize": 1 for m in ("ni", "di", "ni-o2m")}}
    synth = sorted((repo / "results/tiny/synth").rglob("shard-*.npz"))
    assert len(synth) == 6
    for f in synth:
        assert f.read_bytes() == (tiny_run[0] / f.relative_to(repo)).read_bytes(), f
