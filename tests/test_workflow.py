"""The orchestration: Snakemake and DVC describe the same DAG, a tiny end-to-end Snakemake run in a copy of the
repository produces the report and one MLflow run per stage invocation, and a changed parameter invalidates
exactly its downstream stages in both tools."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

from natinv.config import load_config, stage_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["--configfile", "params/default.yaml", "params/tiny.yaml"]


def copy_repo(dst: Path, commit: bool = False) -> Path:
    """The repository's files as git sees them (tracked + untracked, not ignored): what a fresh clone has;
    with `commit`, a git repository of its own with one commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    archive = dst.parent / f"{dst.name}.tar"
    with tarfile.open(archive, "w") as tar:
        for f in files:
            if (ROOT / f).exists():
                tar.add(ROOT / f, arcname=f)
    with tarfile.open(archive) as tar:
        tar.extractall(dst, filter="data")
    archive.unlink()
    if commit:
        git_commit(dst)
    return dst


def git_commit(repo: Path) -> None:
    subprocess.run("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm copy", shell=True, cwd=repo,
                   check=True)


def tool(cwd: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake/dvc of this environment with its bin/ first on PATH (so `python` is this interpreter)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["TORCH_HOME"] = str(cwd / ".torch-home")  # an empty torch hub: no Inception-v3 weights, as offline
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run."""
    table = dry_run_output.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def snakemake_jobs(repo: Path, *config: str) -> dict[str, dict]:
    """output file -> {rule, inputs, cmd} of every job a dry run with printed shell commands plans (nothing runs)."""
    out = tool(repo, "snakemake", "-n", "-p", "--cores", "2", *config).stdout
    jobs = {}
    for block in out.split("\n\n"):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if not rule or rule[1] == "all":
            continue
        field = {k: v.split(", ") for k, v in re.findall(r"^\s+(input|output): (.*)$", block, re.M)}
        cmd = re.search(r"^Shell command: (.*)$", block, re.M)[1]
        for output in field["output"]:
            jobs[output] = {"rule": rule[1], "inputs": field.get("input", []), "cmd": cmd}
    return jobs


def normalize(cmd: str) -> list[str]:
    """A stage command without what only the driver decides: the params file, threads, one shard, the log pipe."""
    words = shlex.split(cmd.split("2>&1")[0])
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("--params", "--threads", "--shard"):
            skip = True
        else:
            out.append(w)
    return out


def covers(path: str, outs: list[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)


def test_snakemake_and_dvc_describe_the_same_graph(tmp_path):
    from dvc.repo import Repo

    repo = copy_repo(tmp_path / "repo")  # the default runs every stage
    default = repo / "params/default.yaml"
    text = default.read_text()  # plus a co-trained inversion (one shard) and a generator method
    assert "  run: [ni, di]\n" in text
    default.write_text(text.replace("  run: [ni, di]\n", "  run: [ni, di, adi, dafl]\n"))
    git_commit(repo)
    jobs = snakemake_jobs(repo)
    cfg = load_config([default])
    stages = {}
    for stage in Repo(str(repo)).index.stages:
        params = [k for d in stage.deps if hasattr(d, "params") for k in d.params]
        files = [str(d.def_path) for d in stage.deps if not hasattr(d, "params")]
        stages[stage.name] = {"cmd": stage.cmd, "outs": [str(o.def_path) for o in stage.outs], "deps": files, "params": params}
    assert {s.split("@")[0] for s in stages} == {j["rule"] for j in jobs.values()} == {
        "data", "teacher", "synthesize", "kd", "kd_real", "evaluator", "metrics", "metrics_real", "tsne", "scratch", "scratch_real",
        "prune", "prune_real", "prune_none", "report"}

    matched = Counter()
    for output, job in jobs.items():
        owners = [name for name, s in stages.items() if covers(output, s["outs"])]
        assert len(owners) == 1, f"{output}: DVC stages {owners}"
        name = owners[0]
        stage = stages[name]
        matched[name] += 1
        assert name.split("@")[0] == job["rule"], output
        assert normalize(job["cmd"]) == normalize(stage["cmd"]), (job["cmd"], stage["cmd"])
        missing = [i for i in job["inputs"] if not covers(i, stage["deps"])]
        assert not missing, f"{name}: inputs not DVC deps: {missing}"
    assert set(matched) == set(stages), "a DVC stage no Snakemake job stands for"

    for name, stage in stages.items():  # tracked parameters: the same keys Snakemake passes through params:
        argv = normalize(stage["cmd"])
        wildcards = {a[2:]: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--")}
        method = wildcards.get("method")
        kind = f"{argv[3]}_{method}" if method in ("real", "none") else argv[3]
        assert stage["params"] == list(stage_params(cfg, kind, **wildcards)), name


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


@pytest.mark.parametrize("profile", ["paper-cifar10", "paper-cifar100"])
def test_paper_profiles_plan_the_paper_jobs(tmp_path, profile):
    repo = copy_repo(tmp_path / "repo")
    counts = job_counts(tool(repo, "snakemake", "-n", "--configfile", "params/default.yaml", f"params/{profile}.yaml").stdout)
    # ResNet-34 teacher; NI and DI, 256k images each in 100 shards; ResNet-18 students from NI, DI and real images
    assert counts == {"data": 1, "teacher": 1, "synthesize": 200, "kd": 2, "kd_real": 1, "evaluator": 1, "metrics": 2,
                      "metrics_real": 1, "tsne": 1, "scratch": 2, "scratch_real": 1, "prune": 10, "prune_real": 5,
                      "prune_none": 5, "report": 1, "all": 1}
    cfg = load_config([repo / "params/default.yaml", repo / f"params/{profile}.yaml"])
    ni = cfg.synthesis.methods["ni"]
    assert (ni.lr_generator, ni.lr_ftp, ni.lr_alpha, ni.alpha_mean, ni.generator_width) == (1e-3, 5e-4, 5e-2, 5.0, 128)
    assert cfg.synthesis.batch_size == 256 and cfg.synthesis.num_images == 256_000
    assert (cfg.scratch.epochs, cfg.scratch.train_eval_images, cfg.prune.epochs, cfg.prune.lr) == (200, None, 20, 1e-3)
    methods = cfg.synthesis.methods  # the ablations and baselines are this profile's ni and di, not the default's
    for variant, base in (("adi", "di"), ("ni-adi", "ni"), ("ni-o2m", "ni"), ("ni-o2o-acs", "ni")):
        differs = {k for k, v in vars(methods[variant]).items() if v != getattr(methods[base], k)}
        assert differs <= {"competition", "cotrain", "o2o", "ftp", "acs"}, (variant, differs)
    assert (methods["dafl"].iterations, methods["dafl"].batch_size, methods["dfad"].iterations) == (240_000, 1024, 25_000)


def test_bad_params_stop_snakemake_with_one_clear_line(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "bad.yaml").write_text("synthesis: {batch_size: 0}\n")
    proc = tool(repo, "snakemake", "-n", "--configfile", "params/default.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "synthesis.batch_size: got 0; must be >= 1" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------- end to end (tiny)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo", commit=True)
    proc = tool(repo, "snakemake", "--cores", "2", *TINY)
    return repo, proc


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


def test_a_changed_ni_parameter_invalidates_exactly_its_downstream(tiny_run):
    repo, _ = tiny_run
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
