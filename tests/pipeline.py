"""Helpers of the workflow tests: a copy of the repository, the pipeline's tools run in it, the jobs Snakemake plans,
the stages DVC sees, and the comparison of two runs' outputs."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["--configfile", "params/default.yaml", "params/tiny.yaml"]


def tiny_params(folder: Path) -> list[str]:
    """CLI arguments for the tiny profile with its results in `folder`/results (an overlay written there)."""
    overlay = folder / "here.yaml"
    overlay.write_text(f"results: {folder / 'results'}\n")
    return ["--params", str(ROOT / "params/default.yaml"), "--params", str(ROOT / "params/tiny.yaml"), "--params", str(overlay)]


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


def tool(cwd: Path, *argv: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run snakemake/dvc of this environment with its bin/ first on PATH (so `python` is this interpreter); `env`:
    variables to set on top (a PATH there goes before this environment's)."""
    extra = dict(env or {})
    path = os.pathsep.join(p for p in (extra.pop("PATH", ""), str(BIN), os.environ.get("PATH", "")) if p)
    env = {**os.environ, **extra, "PATH": path}
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


def dvc_stages(repo: Path, dvcfile: str | None = None) -> dict[str, dict]:
    """name -> {cmd, outs, deps, params: {file: [keys]}} of every stage DVC finds (in `dvcfile` only, when given)."""
    from dvc.repo import Repo

    stages = {}
    for stage in Repo(str(repo)).index.stages:
        if dvcfile is not None and Path(stage.path).resolve() != (repo / dvcfile).resolve():
            continue
        params: dict[str, list[str]] = {}
        for d in stage.deps:
            if hasattr(d, "params"):
                params.setdefault(os.path.relpath(d.fs_path, repo), []).extend(d.params)
        files = [os.path.relpath(d.fs_path, repo) for d in stage.deps if not hasattr(d, "params")]
        stages[stage.name] = {"cmd": stage.cmd, "outs": [os.path.relpath(o.fs_path, repo) for o in stage.outs], "deps": files,
                              "params": params}
    return stages


def rule_of(stage_name: str) -> str:
    """The Snakemake rule a DVC stage stands for: `kd--...` stands for rule kd."""
    return stage_name.split("--")[0]


def assert_same_graph(jobs: dict[str, dict], stages: dict[str, dict]) -> None:
    """Every Snakemake job's outputs belong to exactly one DVC stage of its rule, with the same command and its inputs
    among the stage's deps; every DVC stage stands for a job."""
    matched = set()
    for output, job in jobs.items():
        owners = [name for name, s in stages.items() if covers(output, s["outs"])]
        assert len(owners) == 1, f"{output}: DVC stages {owners}"
        name = owners[0]
        stage = stages[name]
        matched.add(name)
        assert rule_of(name) == job["rule"], output
        assert normalize(job["cmd"]) == normalize(stage["cmd"]), (job["cmd"], stage["cmd"])
        missing = [i for i in job["inputs"] if not covers(i, stage["deps"])]
        assert not missing, f"{name}: inputs not DVC deps: {missing}"
    assert matched == set(stages), f"DVC stages no Snakemake job stands for: {set(stages) - matched}"


def stage_wildcards(cmd: str) -> tuple[str, dict[str, str]]:
    """(the stage, its wildcards) of a stage command."""
    argv = normalize(cmd)
    wildcards = {a[2:]: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--")}
    return argv[3], wildcards


TIMING_KEYS = {"seconds", "s_per_iter", "shard_seconds", "report_seconds", "cpu_seconds", "warmup_seconds",
               "warmup_cpu_seconds", "total_cpu_seconds",
               "_sha256"}  # the file's seal: a digest of all its fields, wall-clock ones included


def _comparable(value, root: str):
    """A JSON value without its wall-clock fields, with the run's own checkout path written as <repo>."""
    if isinstance(value, dict):
        return {k: _comparable(v, root) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_comparable(v, root) for v in value]
    return value.replace(root, "<repo>") if isinstance(value, str) else value


def compare_runs(repo_a: Path, repo_b: Path, exp: str, folders: tuple[str, ...] | None = None) -> int:
    """Assert that two runs' output folders (`exp` = results/{experiment} in each checkout) hold the same files with
    the same content: every array, checkpoint, figure, CSV and params file byte for byte, every JSON equal once the
    wall-clock fields (seconds, s/iteration) are left out and the checkout's own path is read as <repo>. Job logs,
    Snakemake's resource records and report.md / report.html (which print wall-clock times) are not compared;
    summary.json holds their numbers. `folders`: only these stage folders of `exp` (data, teachers, synth, ...) and
    the files directly in it. Returns how many files were compared."""
    a, b = repo_a / exp, repo_b / exp

    def listing(root: Path) -> set[str]:
        def kept(p: Path) -> bool:
            top = p.parts[len(root.parts)]
            return top not in ("logs", "benchmarks") and (folders is None or p.parent == root or top in folders)

        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and kept(p)
                and p.name not in ("report.md", "report.html") and not p.name.startswith(".")}

    files_a, files_b = listing(a), listing(b)
    assert files_a == files_b, f"only in {a}: {sorted(files_a - files_b)[:10]}; only in {b}: {sorted(files_b - files_a)[:10]}"
    for rel in sorted(files_a):
        pa, pb = a / rel, b / rel
        if rel.endswith(".json"):
            assert _comparable(json.loads(pa.read_text()), str(repo_a)) == _comparable(json.loads(pb.read_text()), str(repo_b)), rel
        else:
            assert pa.read_bytes() == pb.read_bytes(), rel
    return len(files_a)
