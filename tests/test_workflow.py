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

from natinv import dvc_yaml, plan
from natinv.config import load_config, read_params_file
from natinv.pipeline import STAGES
from pipeline import (BIN, ROOT, TINY, assert_same_graph, copy_repo, dvc_stages, git_commit, job_counts, normalize,
                      snakemake_jobs, stage_wildcards, tool)

PAPER = ["paper-cifar10", "paper-cifar100"]
UNTRACKED = {"NATINV_TRACKING": "off"}  # DVC runs whose MLflow runs no test reads (the tiny run's and test_tracking's are)


def paper_stack(profile: str, smoke: bool = False) -> list[str]:
    return ["params/default.yaml", f"params/{profile}.yaml", *(["params/smoke.yaml"] if smoke else [])]

def generate_dvc_yaml(repo: Path, stack: list[str], out: str | None = None) -> str:
    """Run `natinv dvc-yaml` in `repo`; returns the file it wrote (relative to the repository)."""
    proc = subprocess.run([sys.executable, "-m", "natinv", "dvc-yaml", *(a for f in stack for a in ("--params", f)),
                           *(["--out", out] if out else [])], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return re.search(r"wrote (\S+);", proc.stdout)[1]


def assert_tracked(stages: dict[str, dict], trees: dict[str, dict], cfg) -> None:
    """Each DVC stage tracks every parameter its job depends on (the stage table's keys) in every params file that sets
    it: the value itself, or each value the file sets under a key that is a section; and nothing the job does not
    depend on. Only values are tracked, never a section, so no stage's key lies inside another's."""
    bases = dvc_yaml.bases_in(trees.values())
    for name, stage in stages.items():
        kind, wildcards = stage_wildcards(stage["cmd"])
        keys = STAGES[kind].tracked_keys(wildcards, bases)
        for f, tree in trees.items():
            tracked = stage["params"].get(f, [])
            assert all(any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for key in keys) for k in tracked), (
                name, f, tracked)
            for key in keys:
                node = tree
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict) and node:
                    assert all(f"{key}.{sub}" in tracked or any(k.startswith(f"{key}.{sub}.") for k in tracked)
                               for sub in node), (name, f, key, tracked)
                elif node is not None:
                    assert any(key == k or key.startswith(k + ".") for k in tracked), (name, f, key, tracked)
            assert not any(a.startswith(b + ".") for a in tracked for b in tracked), (name, f, tracked)  # values only


def test_committed_dvc_yaml_is_the_generated_one_of_the_default(monkeypatch):
    """dvc.yaml is `natinv dvc-yaml --params params/default.yaml --out dvc.yaml`, byte for byte: edit the stage table
    or the default, then regenerate it."""
    monkeypatch.chdir(ROOT)
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml.render(["params/default.yaml"], Path("dvc.yaml")), (
        "dvc.yaml is stale: run `python -m natinv dvc-yaml --params params/default.yaml --out dvc.yaml`")


def test_each_dvc_stage_depends_on_the_source_files_its_runner_imports(monkeypatch):
    monkeypatch.chdir(ROOT)
    stages = dvc_yaml.build(["params/default.yaml"])["stages"]
    deps = {name: {d for d in stage["deps"] if d.startswith("src/")} for name, stage in stages.items()}
    assert "src/natinv/stages/kd.py" in deps["kd--resnet8-w16--ni--resnet8-w8"]
    assert "src/natinv/distill.py" in deps["kd--resnet8-w16--ni--resnet8-w8"]  # imported by the runner
    assert "src/natinv/models/resnet.py" in deps["kd--resnet8-w16--ni--resnet8-w8"]  # loaded by name: the student's arch
    assert "src/natinv/models/vgg.py" in deps["evaluator--vgg11-w8"] and "src/natinv/models/vgg.py" not in deps["teacher--resnet8-w16"]
    ni, di = deps["synthesize--resnet8-w16--ni"], deps["synthesize--resnet8-w16--di"]  # each method its own module
    assert "src/natinv/synthesis/naturalinversion.py" in ni - di and "src/natinv/synthesis/deepinversion.py" in di - ni
    assert not any("stages/" in d and not d.endswith(("__init__.py", "common.py", "data.py")) for d in deps["data"])
    assert all("src/natinv/report/markdown.py" not in d for n, d in deps.items() if n != "report")
    for name, files in deps.items():  # every listed file exists; none is the CLI (it only parses arguments)
        assert all((ROOT / f).is_file() for f in files), name
        assert "src/natinv/cli.py" not in files


def test_snakemake_and_dvc_describe_the_same_graph(tmp_path):
    repo = copy_repo(tmp_path / "repo")  # with the methods below, every stage has jobs
    default = repo / "params/default.yaml"
    text = default.read_text()  # plus a co-trained inversion (one shard), a generator method, a second seed and a
    # method with a warm-up stage (ni-fast: its shards read the meta stage's file)
    run, seeds = "  run:\n  - ni\n  - di\n", "\nseeds:                #"
    assert run in text and seeds in text  # plus a variant (`base: ni`) whose stages track ni's settings too
    default.write_text(text.replace(run, run + "  - adi\n  - dafl\n  - ni-ftp3\n  - ni-fast\n").replace(seeds, "\nseeds: [0, 1]  #"))
    generate_dvc_yaml(repo, ["params/default.yaml"], "dvc.yaml")
    git_commit(repo)
    jobs = snakemake_jobs(repo)
    stages = dvc_stages(repo)
    assert {s.split("--")[0] for s in stages} == {j["rule"] for j in jobs.values()} == set(STAGES)
    commands = {j["cmd"] for j in jobs.values()}  # one per job (its outputs share it)
    assert Counter(normalize(c)[3] for c in commands) == {name: len(stage.jobs(load_config([default])))
                                                          for name, stage in STAGES.items()}
    assert_same_graph(jobs, stages)
    assert_tracked(stages, {"params/default.yaml": read_params_file(default)}, load_config([default]))


def planned(*files: str) -> dict[str, int]:
    """Jobs per stage the stage table plans for a params stack (what Snakemake runs: the graph test checks it)."""
    cfg = load_config([ROOT / f for f in files])
    return {name: n for name, stage in STAGES.items() if (n := len(stage.jobs(cfg)))}


def test_profiles_plan_the_expected_jobs():
    tiny = ["params/default.yaml", "params/tiny.yaml"]
    # tiny: 1 teacher, 3 methods (ni, di, ni-o2m) x 2 shards, 1 student x (3 methods + real); pruning also `none`
    assert planned(*tiny) == {"data": 1, "teacher": 1, "evaluator": 1, "synthesize": 6, "kd": 3 + 1, "metrics": 3 + 1,
                              "tsne": 1, "scratch": 3 + 1, "prune": 3 + 1 + 1, "report": 1}
    # the Table 4 overlay: two NI variants (defined in default.yaml with a YAML merge key) beside ni and di, through KD
    # and the metrics; scratch and pruning off
    assert planned(*tiny, "params/ablation-ftp.yaml") == {"data": 1, "teacher": 1, "evaluator": 1, "synthesize": 8,
                                                          "kd": 4 + 1, "metrics": 4 + 1, "tsne": 1, "report": 1}
    assert planned(*tiny, "params/ablation-components.yaml") == {"data": 1, "teacher": 1, "evaluator": 1, "synthesize": 12,
                                                                 "kd": 6 + 1, "metrics": 6 + 1, "tsne": 1, "report": 1}
    # Table 5: ni and di in 2 shards each, adi, ni-adi, dafl and dfad in one each (they train a student as they go)
    # two more seeds: every synthesis and application job three times; `none` and the metrics' real floor once
    cfg = load_config([ROOT / f for f in tiny], [{"seeds": [0, 1, 2]}])
    assert {name: len(stage.jobs(cfg)) for name, stage in STAGES.items()} == {
        "data": 1, "teacher": 1, "evaluator": 1, "meta": 0, "synthesize": 18, "kd": 12, "metrics": 9 + 1, "tsne": 1, "scratch": 12,
        "prune": 12 + 1, "report": 1}
    assert planned(*tiny, "params/baselines.yaml") == {"data": 1, "teacher": 1, "evaluator": 1, "synthesize": 8, "kd": 6 + 1,
                                                       "metrics": 6 + 1, "tsne": 1, "scratch": 6 + 1, "prune": 6 + 1 + 1,
                                                       "report": 1}


def test_shards_per_job_groups_the_shards_of_a_method_or_teacher_for_the_cluster():
    from natinv.pipeline import job_groups

    tiny = [ROOT / "params/default.yaml", ROOT / "params/tiny.yaml"]
    assert job_groups(load_config(tiny)) == {}
    # a method's entry wins over its teacher's; a group never holds more shards than the method has (2 here)
    cfg = load_config(tiny, [{"synthesis": {"shards_per_job": {"ni-o2m": 1, "resnet8-w16": 3}}, "seeds": [0, 1]}])
    assert job_groups(cfg) == {"synthesize-resnet8-w16-ni": 2, "synthesize-resnet8-w16-di": 2,
                               "synthesize-resnet8-w16-ni-seed1": 2, "synthesize-resnet8-w16-di-seed1": 2}
    shard = {"teacher": "resnet8-w16", "method": "di", "shard": "1"}
    assert STAGES["synthesize"].job_group(cfg, shard) == "synthesize-resnet8-w16-di"
    assert STAGES["kd"].job_group(cfg, {**shard, "student": "resnet8-w8"}) is None


# The paper's jobs per profile: two teachers; 100 shards per inversion method, one each for ADI, NI+ADI, DAFL, DFAD;
# Table 5's six methods to three students from both teachers (CIFAR-100: Table 3's variants too, from ResNet-34);
# scratch on DAFL, DI and NI images; ResNet-34 pruned at five ratios.
PAPER_JOBS = {
    "paper-cifar10": {"data": 1, "teacher": 2, "evaluator": 1, "synthesize": 6 * 100 + 4 + 2 * 100 + 4, "kd": 2 * 6 * 3 + 6,
                      "metrics": 10 + 6 + 2, "tsne": 2, "scratch": 2 * 3 * 3 + 6, "prune": 15 + 5 + 5, "report": 1},
    "paper-cifar100": {"data": 1, "teacher": 2, "evaluator": 1, "synthesize": 6 * 100 + 4 + 2 * 100 + 4,
                       "kd": (10 + 6) * 3 + 6, "metrics": 10 + 6 + 2, "tsne": 2, "scratch": 2 * 3 * 3 + 6, "prune": 15 + 5 + 5,
                       "report": 1},
}


@pytest.mark.parametrize("profile", PAPER)
def test_paper_profiles_plan_the_paper_jobs(profile):
    assert planned(*paper_stack(profile)) == PAPER_JOBS[profile]
    cfg = load_config([ROOT / f for f in paper_stack(profile)])
    assert cfg.job_gpus == 1
    ni = cfg.synthesis.methods["ni"]
    assert (ni.lr_generator, ni.lr_ftp, ni.lr_alpha, ni.alpha_mean, ni.generator_width) == (1e-3, 5e-4, 5e-2, 5.0, 128)
    # the authors' code (NI) and NVlabs' CIFAR script (DI), whatever default.yaml chose for its own budget
    di = cfg.synthesis.methods["di"]
    assert (ni.ftp_input, ni.generator_init, ni.lr_head, ni.priors_on, ni.flip) == ("jittered", "official", None, "jittered", True)
    assert (di.lr, di.lambda_bn, di.flip, di.clamp, di.priors_on) == (0.05, 10.0, False, False, "jittered")
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


@pytest.mark.slow
@pytest.mark.paper  # a paper profile's 140-odd stages: minutes of DVC and Snakemake reading them
@pytest.mark.parametrize("profile", PAPER)
def test_dvc_yaml_of_a_paper_profile_agrees_with_snakemake(tmp_path, profile):
    """`natinv dvc-yaml` writes the DVC pipeline of a params stack; DVC reads it beside the committed default one."""
    repo = copy_repo(tmp_path / "repo")
    stack = paper_stack(profile, smoke=True)
    dvcfile = generate_dvc_yaml(repo, stack)
    assert dvcfile == f"workflow/dvc/{profile}/dvc.yaml" and (repo / dvcfile).is_file()
    git_commit(repo)
    jobs = snakemake_jobs(repo, "--configfile", *stack)
    stages = dvc_stages(repo, dvcfile)
    assert_same_graph(jobs, stages)
    assert_tracked(stages, {f: read_params_file(repo / f) for f in stack}, load_config([repo / f for f in stack]))
    if profile == "paper-cifar10":  # DVC runs it: a teacher stage, then an edit of the overlay invalidates it
        teacher = f"{dvcfile}:teacher--resnet34"
        tool(repo, "dvc", "repro", teacher, env=UNTRACKED)
        assert (repo / "results/smoke/paper-cifar10/teachers/resnet34.safetensors").is_file()
        assert "up to date" in tool(repo, "dvc", "status", teacher).stdout
        smoke = repo / "params/smoke.yaml"
        smoke.write_text(smoke.read_text().replace("  lr: 0.01 ", "  lr: 0.02 "))
        assert "teacher--resnet34" in tool(repo, "dvc", "status", teacher).stdout


@pytest.mark.slow
def test_bad_params_stop_snakemake_with_one_clear_line(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "bad.yaml").write_text("synthesis: {batch_size: 0}\n")
    proc = tool(repo, "snakemake", "-n", "--configfile", "params/default.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "/bad.yaml: synthesis.batch_size: got 0; must be >= 1" in proc.stdout + proc.stderr  # the file that set it
    proc = tool(repo, "snakemake", "-n", "--configfile", "params/default.yaml", "--config", "experiment=../x", check=False)
    assert proc.returncode != 0 and "natinv: error: snakemake --config: experiment: got '../x'" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------- end to end (tiny)


@pytest.mark.slow
def test_snakemake_runs_the_tiny_profile_end_to_end(tiny_run):
    repo, _ = tiny_run
    exp = repo / "results" / "tiny"
    summary = json.loads((exp / "report/summary.json").read_text())
    assert summary["experiment"] == "tiny"
    teacher = json.loads((exp / "teachers/resnet8-w16.json").read_text())  # the report's numbers are the stages'
    assert summary["teachers"] == {"resnet8-w16": {"test_acc": teacher["test_acc"], "seconds": teacher["seconds"], "epochs": 1}}
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
    assert "against 2,000 real training images" in report  # all the profile's 2,000, not metrics.reference_images (5,000)
    assert len(list((exp / "logs").rglob("*.log"))) == 28  # one per job
    compute = summary["compute"]  # the wall-time table: every job that reports its seconds (all but data and report)
    assert sum(row["jobs"] for row in compute.values()) == 26 and compute["synthesize resnet8-w16/ni"]["jobs"] == 2
    assert "| synthesize resnet8-w16/ni | 2 |" in report and f"| kd | {compute['kd']['jobs']} |" in report
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
def test_every_stage_invocation_is_one_mlflow_run_under_the_pipeline_run(tiny_run, monkeypatch):
    from mlflow import MlflowClient

    repo, _ = tiny_run
    monkeypatch.chdir(repo)  # the artifact store is relative to the project, as `mlflow ui` run there sees it
    client = MlflowClient(f"sqlite:///{repo / 'results/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("natinv-tiny").experiment_id])
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
    # whichever shard the store lists first: its own method's settings, under method-neutral names
    assert shard.data.params["method.iterations"] == "10" and "method.lambda_bn" in shard.data.params
    assert shard.data.params["method.kind"] == shard.data.tags["method.kind"] and shard.data.params["result.images"] in ("16", "32")
    assert not any(k.startswith("synthesis.methods.") for k in shard.data.params)
    assert len(client.get_metric_history(shard.info.run_id, "batch-0/ce")) == 10  # batches numbered within the shard
    assert {d.dataset.name for d in shard.inputs.dataset_inputs} == {"teacher resnet8-w16"}
    kd = next(r for r in children if r.data.tags["stage"] == "kd" and r.data.tags["method"] == "ni")
    assert {d.dataset.name for d in kd.inputs.dataset_inputs} == {"fashion-mnist train (real)", "fashion-mnist test (real)",
                                                                  "teacher resnet8-w16", "ni/resnet8-w16 images"}
    (model,) = client.search_logged_models([kd.info.experiment_id], filter_string=f"source_run_id = '{kd.info.run_id}'")
    assert model.name == "resnet8-w8" and str(model.status).endswith("READY")  # the student, as a logged model
    assert client.get_experiment_by_name("natinv-tiny").tags["mlflow.experimentKind"] == "custom_model_development"
    location = client.get_experiment_by_name("natinv-tiny").artifact_location
    assert location == "results/mlartifacts", location  # relative to the project: a copy keeps its own
    names = {a.path for a in client.list_artifacts(shard.info.run_id)}
    assert "grid.png" in names and any(n.endswith(".json") for n in names)
    # the collapsed first view: the parent run carries the headline numbers, the report and the parameters
    parent = parents[0]
    for row in ("ni", "di", "real", "teacher"):
        for column, value in json.loads((repo / f"results/tiny/report/headline/{row}.json").read_text()).items():
            assert parent.data.metrics[f"{row}/{column}"] == value
    assert {"ni/kd", "di/fd", "ni/precision", "teacher/test_acc"} <= set(parent.data.metrics)
    assert {"params.yaml", "report.html", "summary.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.tags["mlflow.note.content"].startswith("natinv pipeline run of experiment `tiny`")
    assert parent.data.params["synthesis.run"] == "['ni', 'di', 'ni-o2m']" and parent.data.params["kd.lr"] == "0.05"
    assert not any(k.startswith("synthesis.methods.ni-fast") for k in parent.data.params)  # defined, not run
    # a report's run logs the settings of the methods the experiment runs, not of every method defined
    report_run = next(r for r in children if r.data.tags["stage"] == "report")
    logged = {k.split(".")[2] for k in report_run.data.params if k.startswith("synthesis.methods.")}
    assert logged == {"ni", "di", "ni-o2m"}, logged


@pytest.mark.slow
def test_a_changed_parameter_or_code_file_invalidates_exactly_its_downstream(tiny_run, tmp_path):
    repo = tmp_path / "repo"  # a copy: the run itself is compared with a SLURM run of the same profile
    shutil.copytree(tiny_run[0], repo, symlinks=True)
    # Snakemake: the params: of exactly the NI jobs differ
    (repo / "lr.yaml").write_text("synthesis: {methods: {ni: {lr_generator: 0.02}}}\n")
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY, "lr.yaml").stdout)  # ni and ni-o2m (`base: ni`)
    assert counts == {"synthesize": 4, "kd": 2, "metrics": 2, "tsne": 1, "scratch": 2, "prune": 2, "report": 1, "all": 1}
    # a code edit: exactly the jobs whose runner imports the file (each job's params hold a digest of those files);
    # the copy's package is the one imported
    prune = repo / "src/natinv/stages/prune.py"
    code = prune.read_text()
    prune.write_text(code + "\n# an edit\n")
    counts = job_counts(tool(repo, "snakemake", "-n", *TINY, env={"PYTHONPATH": str(repo / "src")}).stdout)
    assert counts == {"prune": 5, "report": 1, "all": 1}
    prune.write_text(code)
    # DVC on the same outputs, with the same values in a third params file: adopt them (dvc commit), then change them
    methods = load_config([repo / f for f in TINY[1:]]).synthesis.methods
    ni_lr, di_lr = methods["ni"].lr_generator, methods["di"].lr  # the values the run had

    def lrs(ni: float, di: float) -> None:
        (repo / "lr.yaml").write_text(f"synthesis: {{methods: {{ni: {{lr_generator: {ni}}}, di: {{lr: {di}}}}}}}\n")

    def downstream(*variants: str) -> set[str]:
        return {f"{stage}--resnet8-w16--{m}{job}" for m in variants for stage, job in (
            ("synthesize", ""), ("kd", "--resnet8-w8"), ("metrics", ""), ("scratch", "--resnet8-w8"), ("prune", "--0.5"))} | {
            "tsne--resnet8-w16", "report"}

    lrs(ni_lr, di_lr)
    assert load_config([repo / f for f in (*TINY[1:], "lr.yaml")]) == load_config([repo / f for f in TINY[1:]])
    dvcfile = generate_dvc_yaml(repo, [*TINY[1:], "lr.yaml"])
    tool(repo, "dvc", "commit", "-f", dvcfile)
    assert "up to date" in tool(repo, "dvc", "status", dvcfile).stdout
    lrs(2 * ni_lr, di_lr)
    changed = {k.split(":")[-1] for k in json.loads(tool(repo, "dvc", "status", "--json", dvcfile).stdout)}
    assert changed == downstream("ni", "ni-o2m")  # ni-o2m has ni's lr (`base: ni`)
    lrs(ni_lr, di_lr)
    assert "up to date" in tool(repo, "dvc", "status", dvcfile).stdout  # the run's value back: nothing to re-run
    # re-run by DVC: one method's downstream (DI's: fewer stages than NI's, the same kinds)
    lrs(ni_lr, 2 * di_lr)
    changed = {k.split(":")[-1] for k in json.loads(tool(repo, "dvc", "status", "--json", dvcfile).stdout)}
    assert changed == downstream("di")
    teacher = repo / "results/tiny/teachers/resnet8-w16.safetensors"
    before = teacher.stat().st_mtime_ns
    out = tool(repo, "dvc", "repro", dvcfile, env=UNTRACKED).stdout
    assert {name.split(":")[-1] for name in re.findall(r"Running stage '([^']+)'", out)} == changed
    assert teacher.stat().st_mtime_ns == before
    assert "up to date" in tool(repo, "dvc", "status", dvcfile).stdout
    # the same code edit: the same stages
    prune.write_text(prune.read_text() + "\n# an edit\n")
    changed = {k.split(":")[-1] for k in json.loads(tool(repo, "dvc", "status", "--json", dvcfile).stdout)}
    assert changed == {f"prune--resnet8-w16--{m}--0.5" for m in ("ni", "di", "ni-o2m", "real", "none")}


@pytest.mark.slow
def test_dvc_experiments_compare_every_number_and_leave_the_params_file_as_it_was(tiny_run, tmp_path):
    """`dvc exp run -S` on a tracked key re-runs what depends on it; `dvc exp show` then lists the headline numbers of
    the baseline and the experiment side by side (one small file per method), `dvc metrics show` fits a terminal,
    `dvc params diff --all` shows each value once, and the params file differs from the committed one by that key's
    line only; `dvc plots` colour each method as every figure does."""
    from natinv.config import load_config
    from natinv.palette import method_colors

    repo = tmp_path / "repo"
    shutil.copytree(tiny_run[0], repo, symlinks=True)
    dvcfile = generate_dvc_yaml(repo, TINY[1:])
    tool(repo, "dvc", "commit", "-f", dvcfile)  # adopt the Snakemake run's outputs as the baseline
    subprocess.run("git add -A && git -c user.email=t@t -c user.name=t commit -qm baseline", shell=True, cwd=repo, check=True)
    before = (repo / "params/default.yaml").read_text()
    out = tool(repo, "dvc", "exp", "run", "-n", "kd-lr", "-S", "params/default.yaml:kd.lr=0.1", dvcfile,
               env=UNTRACKED).stdout
    assert {name.split(":")[-1].split("--")[0] for name in re.findall(r"Running stage '([^']+)'", out)} == {"kd", "report"}
    after = (repo / "params/default.yaml").read_text()
    assert [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b] == [("  lr: 0.05", "  lr: 0.1")]
    assert len(before.splitlines()) == len(after.splitlines())
    show = json.loads(tool(repo, "dvc", "exp", "show", "--json").stdout)
    baseline = next(b for b in show if b["rev"] != "workspace")
    (experiment,) = [r for e in baseline["experiments"] for r in e["revs"] if r["name"] == "kd-lr"]
    head = "results/tiny/report/headline"
    for row in (baseline, experiment):
        metrics = row["data"]["metrics"]
        mine = {k for k in metrics if k.startswith(head)}  # (the committed dvc.yaml names the default's, not run here)
        assert mine == {f"{head}/{n}.json" for n in ("teacher", "ni", "di", "ni-o2m", "real")}, set(metrics)
        for column in ("kd", "scratch", "prune_50", "fd"):
            assert isinstance(metrics[f"{head}/ni.json"]["data"][column], (int, float)), (row["name"], column)
    new, old = (r["data"]["metrics"][f"{head}/ni.json"]["data"]["kd"] for r in (experiment, baseline))
    assert new != old  # the experiment's own students
    table = tool(repo, "dvc", "metrics", "show").stdout.splitlines()
    assert sum(line.startswith(f"{head}/") for line in table) == 5 and max(map(len, table)) <= 120, table  # a row per file
    # each tracked value once: no stage tracks a section another stage tracks a key of
    diff = tool(repo, "dvc", "params", "diff", "--all", "--json").stdout
    assert str(json.loads(diff)["params/default.yaml"]["metrics.evaluators"]["old"]) == "['vgg11-w8']"
    # `dvc plots show`: one chart per curve and teacher, each method's line in its colour (natinv.palette)
    plots = json.loads(tool(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    chart = plots[f"{dvcfile}::synthesis-ce-resnet8-w16"][0]["content"]
    assert {r["method"] for r in chart["data"]["values"]} == {"ni", "di", "ni-o2m"}
    scale = chart["encoding"]["color"]["scale"]
    colors = method_colors(load_config([str(repo / f) for f in TINY[1:]]))
    assert dict(zip(scale["domain"], scale["range"])) == {m: colors[m] for m in ("real", "teacher", "ni", "di", "ni-o2m")}
    assert colors["ni"] == "#ff7f0e" and colors["di"] == "#9467bd"  # the registry's (the paper's Fig. 4) colours
    students = plots[f"{dvcfile}::kd-resnet8-w16"][0]["content"]["data"]["values"]
    assert {r["method"] for r in students} == {"ni", "di", "ni-o2m", "real"}  # the teacher has a chart of its own
    assert {r["method"] for r in plots[f"{dvcfile}::teacher-resnet8-w16"][0]["content"]["data"]["values"]} == {"teacher"}
    subprocess.run([sys.executable, "-m", "natinv.dvc_plots"], cwd=repo, check=True)  # as workflow/setup.sh does
    page = tool(repo, "dvc", "plots", "show").stdout  # the offline page (.dvc/config): Vega inline, nothing from a CDN
    html = (repo / "dvc_plots/index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html, page


@pytest.mark.slow
def test_an_interrupted_dvc_repro_keeps_the_shards_it_finished(tmp_path):
    """Ctrl-C of `dvc repro` during synthesis: the shard folder persists and the re-run keeps the finished shard (the
    same file, not made again), makes the rest, and leaves the pipeline up to date."""
    import os
    import signal
    import time

    repo = copy_repo(tmp_path / "repo")
    # one torch thread: two threads beside another busy process spin at their barriers and run many times slower
    (repo / "slow.yaml").write_text("threads: 1\nsynthesis: {methods: {ni: {iterations: 150}}}\n")
    dvcfile = generate_dvc_yaml(repo, [*TINY[1:], "slow.yaml"])
    git_commit(repo)
    target = f"{dvcfile}:synthesize--resnet8-w16--ni"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **UNTRACKED}
    # Ctrl-C as on a terminal: SIGINT handled by default (a background job of a non-interactive shell, as this test
    # may be, starts with it ignored, and so would everything it starts)
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", target], cwd=repo, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    folder = repo / "results/tiny/synth/resnet8-w16/ni"
    deadline = time.time() + 1800  # a bound against a hang only: the test waits for the event
    while not (folder / "shard-0.png").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "dvc repro finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(60)
    assert (folder / "shard-0.npz").is_file() and not (folder / "shard-1.npz").exists()
    stamp = (folder / "shard-0.npz").stat().st_mtime_ns
    again = tool(repo, "dvc", "repro", target, env=UNTRACKED)
    assert "resnet8-w16/ni: kept shard 0 (made from these parameters and this code)" in again.stdout + again.stderr
    assert (folder / "shard-0.npz").stat().st_mtime_ns == stamp and (folder / "shard-1.npz").is_file()
    assert "up to date" in tool(repo, "dvc", "status", target).stdout


@pytest.mark.slow
def test_snakemakes_html_report_shows_the_run_in_a_real_browser(tiny_run, tmp_path, chromium):
    """`snakemake --report` makes one self-contained page holding the outputs marked with report() (the run's report
    page, shard grids, figures, t-SNE) under their categories, as headless Chromium renders it; the report stage's own
    report.html holds every table and embeds every figure."""
    repo, _ = tiny_run
    page = tmp_path / "report.html"
    tool(repo, "snakemake", "--report", str(page), *TINY)
    dom = chromium(page)
    for category in ("1. Report", "2. Synthesized images", "3. Figures", "4. t-SNE"):
        assert category in dom, category
    own = chromium(repo / "results/tiny/report/report.html")
    assert own.count("<table>") >= 5 and own.count('src="data:image/png;base64,') >= 5
    assert "Knowledge distillation" in own and 'src="figures/' not in own
