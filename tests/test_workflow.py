"""The orchestration: Snakemake and DVC describe the same DAG, a tiny end-to-end Snakemake run in a copy of the
repository produces the report and one MLflow run per stage invocation, and a changed parameter invalidates
exactly its downstream stages in both tools."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from natinv import plan
from natinv.config import load_config, read_params_file, stage_params
from pipeline import (ROOT, TINY, assert_same_graph, copy_repo, dvc_stages, git_commit, job_counts, snakemake_jobs,
                      stage_wildcards, tool)

PAPER = ["paper-cifar10", "paper-cifar100"]


def paper_stack(profile: str, smoke: bool = False) -> list[str]:
    return ["params/default.yaml", f"params/{profile}.yaml", *(["params/smoke.yaml"] if smoke else [])]

def test_snakemake_and_dvc_describe_the_same_graph(tmp_path):
    repo = copy_repo(tmp_path / "repo")  # the default runs every stage
    default = repo / "params/default.yaml"
    text = default.read_text()  # plus a co-trained inversion (one shard) and a generator method
    assert "  run: [ni, di]\n" in text
    default.write_text(text.replace("  run: [ni, di]\n", "  run: [ni, di, adi, dafl]\n"))
    git_commit(repo)
    jobs = snakemake_jobs(repo)
    cfg = load_config([default])
    stages = dvc_stages(repo)
    assert {s.split("@")[0] for s in stages} == {j["rule"] for j in jobs.values()} == {
        "data", "teacher", "synthesize", "kd", "kd_real", "evaluator", "metrics", "metrics_real", "tsne", "scratch", "scratch_real",
        "prune", "prune_real", "prune_none", "report"}
    assert_same_graph(jobs, stages)
    for name, stage in stages.items():  # tracked parameters: the same keys Snakemake passes through params:
        kind, wildcards = stage_wildcards(stage["cmd"])
        assert stage["params"] == {"params/default.yaml": list(stage_params(cfg, kind, **wildcards))}, name


def test_dry_run_of_a_profile_lists_the_expected_jobs(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY).stdout)
    # tiny: 1 teacher, 3 methods (ni, di, ni-o2m) x 2 shards, 1 student x (3 methods + real)
    assert counts == {"data": 1, "teacher": 1, "synthesize": 6, "kd": 3, "kd_real": 1, "evaluator": 1, "metrics": 3,
                      "metrics_real": 1, "tsne": 1, "scratch": 3, "scratch_real": 1, "prune": 3, "prune_real": 1,
                      "prune_none": 1, "report": 1, "all": 1}
    # the Table 4 overlay: two NI variants (defined in default.yaml with a YAML merge key) beside ni and di, through KD
    # and the metrics; scratch and pruning off
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY, "params/ablation-ftp.yaml").stdout)
    assert counts == {"data": 1, "teacher": 1, "synthesize": 8, "kd": 4, "kd_real": 1, "evaluator": 1, "metrics": 4,
                      "metrics_real": 1, "tsne": 1, "report": 1, "all": 1}
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY, "params/ablation-components.yaml").stdout)
    assert counts == {"data": 1, "teacher": 1, "synthesize": 12, "kd": 6, "kd_real": 1, "evaluator": 1, "metrics": 6,
                      "metrics_real": 1, "tsne": 1, "report": 1, "all": 1}
    # Table 5: ni and di in 2 shards each, adi, ni-adi, dafl and dfad in one each (they train a student as they go)
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY, "params/baselines.yaml").stdout)
    assert counts == {"data": 1, "teacher": 1, "synthesize": 8, "kd": 6, "kd_real": 1, "evaluator": 1, "metrics": 6,
                      "metrics_real": 1, "tsne": 1, "scratch": 6, "scratch_real": 1, "prune": 6, "prune_real": 1,
                      "prune_none": 1, "report": 1, "all": 1}


# The paper's jobs per profile: two teachers; 100 shards per inversion method, one each for ADI, NI+ADI, DAFL, DFAD;
# Table 5's six methods to three students from both teachers (CIFAR-100: Table 3's variants too, from ResNet-34);
# scratch on DAFL, DI and NI images; ResNet-34 pruned at five ratios.
PAPER_JOBS = {
    "paper-cifar10": {"data": 1, "teacher": 2, "evaluator": 1, "synthesize": 6 * 100 + 4 + 2 * 100 + 4, "kd": 2 * 6 * 3,
                      "kd_real": 6, "metrics": 10 + 6, "metrics_real": 2, "tsne": 2, "scratch": 2 * 3 * 3, "scratch_real": 6,
                      "prune": 15, "prune_real": 5, "prune_none": 5, "report": 1, "all": 1},
    "paper-cifar100": {"data": 1, "teacher": 2, "evaluator": 1, "synthesize": 6 * 100 + 4 + 2 * 100 + 4, "kd": (10 + 6) * 3,
                       "kd_real": 6, "metrics": 10 + 6, "metrics_real": 2, "tsne": 2, "scratch": 2 * 3 * 3, "scratch_real": 6,
                       "prune": 15, "prune_real": 5, "prune_none": 5, "report": 1, "all": 1},
}


@pytest.mark.parametrize("profile", PAPER)
def test_paper_profiles_plan_the_paper_jobs(tmp_path, profile):
    repo = copy_repo(tmp_path / "repo")
    counts = job_counts(tool(repo, "snakemake", "-n", "--configfile", *paper_stack(profile)).stdout)
    assert counts == PAPER_JOBS[profile]
    cfg = load_config([repo / f for f in paper_stack(profile)])
    assert cfg.job_gpus == 1
    ni = cfg.synthesis.methods["ni"]
    assert (ni.lr_generator, ni.lr_ftp, ni.lr_alpha, ni.alpha_mean, ni.generator_width) == (1e-3, 5e-4, 5e-2, 5.0, 128)
    assert cfg.synthesis.batch_size == 256 and cfg.synthesis.num_images == 256_000
    assert (cfg.scratch.epochs, cfg.scratch.train_eval_images, cfg.prune.epochs, cfg.prune.lr) == (200, None, 20, 1e-3)
    assert [cfg.models[s].arch for s in cfg.kd.students] == ["resnet18", "vgg11", "mobilenetv2"]
    methods = cfg.synthesis.methods  # the ablations and baselines are this profile's ni and di, not the default's
    for variant, base in (("adi", "di"), ("ni-adi", "ni"), ("ni-o2m", "ni"), ("ni-o2o-acs", "ni"), ("ni-ftp34", "ni")):
        differs = {k for k, v in vars(methods[variant]).items() if v != getattr(methods[base], k)}
        assert differs <= {"competition", "cotrain", "o2o", "ftp", "acs", "ftp_stages"}, (variant, differs)
    assert (methods["dafl"].iterations, methods["dafl"].batch_size, methods["dfad"].iterations) == (240_000, 1024, 25_000)


@pytest.mark.parametrize("profile", PAPER)
def test_smoke_overlay_keeps_every_job_of_a_paper_profile_and_cuts_only_sizes(profile):
    paper = load_config([ROOT / f for f in paper_stack(profile)])
    smoke = load_config([ROOT / f for f in paper_stack(profile, smoke=True)])
    # every method and model the profile defines is listed by the overlay (merge keys copy ni and di as written there)
    own = read_params_file(ROOT / f"params/{profile}.yaml")
    overlay = read_params_file(ROOT / "params/smoke.yaml")
    assert set(own["synthesis"]["methods"]) <= set(overlay["synthesis"]["methods"])
    assert set(own["models"]) <= set(overlay["models"])
    # the same jobs: teachers, evaluators, (teacher, method) pairs, one-shard methods, students, ratios, class count
    assert (smoke.teacher.models, smoke.metrics.evaluators, smoke.data.dataset) == (paper.teacher.models, paper.metrics.evaluators,
                                                                                    paper.data.dataset)
    assert {(t, m, paper.shards_of(m) == 1) for t, m, _ in plan.synthesis_jobs(paper)} == {
        (t, m, smoke.shards_of(m) == 1) for t, m, _ in plan.synthesis_jobs(smoke)}
    assert {m: smoke.shards_of(m) for m in smoke.synthesis.run} == {m: 1 if paper.cotrained(m) else 2 for m in paper.synthesis.run}
    for jobs in (plan.kd_jobs, plan.metrics_jobs, plan.scratch_jobs, plan.prune_jobs):
        assert jobs(smoke) == jobs(paper), jobs.__name__
    assert {k: m.arch for k, m in smoke.models.items()} == {k: m.arch for k, m in paper.models.items()}
    # and only sizes change: a few iterations, two batches per method, one epoch, small image counts
    assert all(smoke.synthesis.methods[m].iterations <= 3 for m in smoke.synthesis.run)
    assert -(-smoke.synthesis.num_images // smoke.synthesis.batch_size) == 2
    assert smoke.teacher.epochs == smoke.kd.epochs == smoke.scratch.epochs == smoke.prune.epochs == 1
    assert smoke.data.standin and smoke.job_gpus == 0 and smoke.results == "results/smoke"


REPORT_SECTIONS = {  # what each paper profile's report must have (by heading)
    "paper-cifar10": ["## Teacher", "## Knowledge distillation (paper Table 5)", "### In the shape of the paper's Table 5",
                      "## How real are the images (paper Tables 1 and 8)", "### Inception metrics (paper Table 1)",
                      "### Which teacher stages the FTP uses (paper Table 4)", "### t-SNE of the teacher's features",
                      "## Training from scratch (paper Tables 2 and 9)", "## Pruning (paper Fig. 6)",
                      "### DI, one-to-many and NI (paper Fig. 5)", "## Synthesis", "## Images"],
    "paper-cifar100": ["## Teacher", "## Knowledge distillation (paper Table 5)", "### In the shape of the paper's Table 5",
                       "## How real are the images (paper Tables 1 and 8)", "### Inception metrics (paper Table 1)",
                       "### Components of NaturalInversion (paper Table 3)", "### t-SNE of the teacher's features",
                       "## Training from scratch (paper Tables 2 and 9)", "## Pruning (paper Fig. 6)",
                       "### DI, one-to-many and NI (paper Fig. 5)", "## Synthesis", "## Images"],
}


@pytest.mark.slow
@pytest.mark.paper
@pytest.mark.parametrize("profile", PAPER)
def test_paper_profile_runs_end_to_end_at_smoke_scale(smoke_run, profile):
    repo, proc = smoke_run(profile)
    cfg = load_config([repo / f for f in paper_stack(profile, smoke=True)])
    exp = repo / "results/smoke" / profile
    summary = json.loads((exp / "report/summary.json").read_text())
    assert summary["experiment"] == profile and set(summary["teachers"]) == set(cfg.teacher.models)
    assert set(summary["synthesis"]) == {f"{t}/{m}" for t, m, _ in plan.synthesis_jobs(cfg)}
    assert set(summary["kd"]) == {"/".join(job) for job in plan.kd_jobs(cfg)}
    table5 = ["ni", "di", "adi", "ni-adi", "dafl", "dfad"]  # every teacher x method x student of the paper's Table 5
    assert {f"{t}/{m}/{s}" for t in cfg.teacher.models for m in table5 for s in cfg.kd.students} <= set(summary["kd"])
    assert set(summary["metrics"]) == {"/".join(job) for job in plan.metrics_jobs(cfg)}
    assert set(summary["scratch"]) == {"/".join(job) for job in plan.scratch_jobs(cfg)}
    assert set(summary["prune"]) == {f"{t}/{m}/{r:g}" for t, m, r in plan.prune_jobs(cfg)}
    assert set(summary["evaluators"]) == set(cfg.metrics.evaluators) and set(summary["tsne"]) == set(cfg.teacher.models)
    report = (exp / "report/report.md").read_text()
    for heading in REPORT_SECTIONS[profile]:
        assert f"\n{heading}" in report, heading
    assert "**Stand-in data.**" in report
    for fig in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (exp / "report" / fig).stat().st_size > 0, fig
    manifest = json.loads((exp / "data/manifest.json").read_text())
    assert (manifest["num_classes"], manifest["in_channels"], manifest["image_size"]) == (
        {"paper-cifar10": 10, "paper-cifar100": 100}[profile], 3, 32)


@pytest.mark.parametrize("profile", PAPER)
def test_dvc_yaml_of_a_paper_profile_agrees_with_snakemake(tmp_path, profile):
    """`natinv dvc-yaml` writes the DVC pipeline of a params stack; DVC reads it beside the committed default one."""
    repo = copy_repo(tmp_path / "repo")
    stack = paper_stack(profile, smoke=True)
    out = subprocess.run([sys.executable, "-m", "natinv", "dvc-yaml", *(a for f in stack for a in ("--params", f))], cwd=repo,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    dvcfile = f"workflow/dvc/{profile}/dvc.yaml"
    assert dvcfile in out.stdout and (repo / dvcfile).is_file()
    git_commit(repo)
    jobs = snakemake_jobs(repo, "--configfile", *stack)
    stages = dvc_stages(repo, dvcfile)
    assert_same_graph(jobs, stages)
    trees = {f: read_params_file(repo / f) for f in stack}
    cfg = load_config([repo / f for f in stack])
    for name, stage in stages.items():  # each parameter is tracked in every file that sets it (itself or its section)
        kind, wildcards = stage_wildcards(stage["cmd"])
        for key in stage_params(cfg, kind, **wildcards):
            for f, tree in trees.items():
                node = tree
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if node is not None:
                    tracked = stage["params"].get(f, [])
                    assert any(key == k or key.startswith(k + ".") for k in tracked), (name, f, key, tracked)
    if profile == "paper-cifar10":  # DVC runs it: a teacher stage, then an edit of the overlay invalidates it
        teacher = f"{dvcfile}:teacher--resnet34"
        tool(repo, "dvc", "repro", teacher)
        assert (repo / "results/smoke/paper-cifar10/teachers/resnet34.safetensors").is_file()
        assert "up to date" in tool(repo, "dvc", "status", teacher).stdout
        smoke = repo / "params/smoke.yaml"
        smoke.write_text(smoke.read_text().replace("  lr: 0.01 ", "  lr: 0.02 "))
        assert "teacher--resnet34" in tool(repo, "dvc", "status", teacher).stdout


def test_bad_params_stop_snakemake_with_one_clear_line(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "bad.yaml").write_text("synthesis: {batch_size: 0}\n")
    proc = tool(repo, "snakemake", "-n", "--configfile", "params/default.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "synthesis.batch_size: got 0; must be >= 1" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------- end to end (tiny)


@pytest.mark.slow
def test_snakemake_runs_the_tiny_profile_end_to_end(tiny_run):
    repo, _ = tiny_run
    exp = repo / "results" / "tiny"
    summary = json.loads((exp / "report/summary.json").read_text())
    assert summary["experiment"] == "tiny"
    assert set(summary["teachers"]) == {"resnet8-w16"} and 0 <= summary["teachers"]["resnet8-w16"]["test_acc"] <= 100
    assert set(summary["synthesis"]) == {"resnet8-w16/ni", "resnet8-w16/di", "resnet8-w16/ni-o2m"}
    assert all(v["images"] == 48 and v["iterations"] == 10 and v["batch_size"] == 16 and v["seconds"] > 0
               for v in summary["synthesis"].values())
    assert set(summary["kd"]) == {f"resnet8-w16/{m}/resnet8-w8" for m in ("ni", "di", "ni-o2m", "real")}
    report = (exp / "report/report.md").read_text()
    assert "93.72" in report and "91.43" in report  # the paper's Table 5 cells beside ours
    for fig in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (exp / "report" / fig).stat().st_size > 0, fig
    assert set(summary["metrics"]) == {f"resnet8-w16/{m}" for m in ("ni", "di", "ni-o2m", "real")}
    assert summary["metrics"]["resnet8-w16/real"]["evaluator:vgg11-w8/fd"] < summary["metrics"]["resnet8-w16/ni"]["evaluator:vgg11-w8/fd"]
    assert len(list((exp / "logs").rglob("*.log"))) == 28  # one per job
    assert set(summary["scratch"]) == {f"resnet8-w16/{m}/resnet8-w8" for m in ("ni", "di", "ni-o2m", "real")}
    assert set(summary["prune"]) == {f"resnet8-w16/{m}/0.5" for m in ("ni", "di", "ni-o2m", "real", "none")}
    assert "### Components of NaturalInversion (paper Table 3)" in report and "60.57" in report  # the paper's all-components row
    assert "figures/fig5-resnet8-w16.png" in report
    assert "figures/prune-resnet8-w16.png" in report and "## Training from scratch" in report
    assert summary["tsne"]["resnet8-w16"]["images"] == {"real": 48, "ni": 48, "di": 48, "ni-o2m": 48}  # capped by the 48 synthesized
    assert "figures/tsne-resnet8-w16.png" in report
    # no Inception-v3 weights in this run's (empty) torch hub: said once per job and in the report, never faked
    assert not summary["inception"] and "no Inception-v3 weights" in summary["inception_unavailable"]
    assert "### Inception metrics (paper Table 1)\n\nNot computed: no Inception-v3 weights" in report
    again = tool(repo, "snakemake", "-n", *TINY).stdout
    assert "Nothing to be done" in again


@pytest.mark.slow
def test_every_stage_invocation_is_one_mlflow_run_under_the_pipeline_run(tiny_run):
    from mlflow import MlflowClient

    repo, _ = tiny_run
    client = MlflowClient(f"sqlite:///{repo / 'results/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("stage") != "pipeline"]
    assert Counter(r.data.tags["stage"] for r in children) == {"data": 1, "teacher": 1, "synthesize": 6, "kd": 4, "evaluator": 1,
                                                               "metrics": 4, "tsne": 1, "scratch": 4, "prune": 5, "report": 1}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["git_commit"] == head
    shard = next(r for r in children if r.data.tags["stage"] == "synthesize")
    assert len(client.get_metric_history(shard.info.run_id, "loss/ce")) == 10  # one point per iteration
    method = shard.data.tags["method"]  # whichever shard the store lists first: its own method's settings are logged
    assert shard.data.params[f"synthesis.methods.{method}.iterations"] == "10"
    assert f"synthesis.methods.{method}.lambda_bn" in shard.data.params
    names = {a.path for a in client.list_artifacts(shard.info.run_id)}
    assert any(n.endswith(".png") for n in names) and any(n.endswith(".json") for n in names)


@pytest.mark.slow
def test_a_changed_ni_parameter_invalidates_exactly_its_downstream(tiny_run, tmp_path):
    repo = tmp_path / "repo"  # a copy: the run itself is compared with a SLURM run of the same profile
    shutil.copytree(tiny_run[0], repo, symlinks=True)
    # Snakemake: the params: of exactly the NI jobs differ
    (repo / "lr.yaml").write_text("synthesis: {methods: {ni: {lr_generator: 0.02}}}\n")
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY, "lr.yaml").stdout)
    assert counts == {"synthesize": 2, "kd": 1, "metrics": 1, "tsne": 1, "scratch": 1, "prune": 1, "report": 1, "all": 1}
    # DVC on the same outputs: adopt them (dvc commit), change the parameter, then status and repro
    (repo / "params/default.yaml").write_text((repo / "results/tiny/params.yaml").read_text())
    tool(repo, "dvc", "commit", "-f")
    assert "up to date" in tool(repo, "dvc", "status").stdout
    params = yaml.safe_load((repo / "params/default.yaml").read_text())
    params["synthesis"]["methods"]["ni"]["lr_generator"] = 0.02
    (repo / "params/default.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(tool(repo, "dvc", "status", "--json").stdout))
    assert changed == {"synthesize@resnet8-w16-ni", "kd@resnet8-w16-ni-resnet8-w8", "metrics@resnet8-w16-ni", "tsne@resnet8-w16",
                       "scratch@resnet8-w16-ni-resnet8-w8", "prune@resnet8-w16-ni-0.5", "report"}
    teacher = repo / "results/tiny/teachers/resnet8-w16.safetensors"
    before = teacher.stat().st_mtime_ns
    out = tool(repo, "dvc", "repro").stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == changed
    assert teacher.stat().st_mtime_ns == before
    assert "up to date" in tool(repo, "dvc", "status").stdout
