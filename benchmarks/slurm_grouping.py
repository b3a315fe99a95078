"""Grouping shards into fewer cluster jobs (synthesis.shards_per_job), measured on a real SLURM: the same profile run
through the SLURM profile twice from scratch, one job per shard and grouped, each up to the synthesis stage
(`--until synthesize`: grouping changes nothing downstream); jobs submitted (sbatch calls) and wall time.

    bash workflow/cluster/local-slurm.sh start      # a single-node SLURM on this machine (root)
    .venv/bin/python benchmarks/slurm_grouping.py --params params/default.yaml params/paper-cifar10.yaml params/smoke.yaml \\
        --group resnet34=2 vgg11=2 > benchmarks/slurm-grouping.jsonl

Run it from the project folder; outputs go to a temporary folder. One JSON line per variant.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_variant(tmp: Path, name: str, params: list[str], group: dict[str, int]) -> dict:
    folder = tmp / name
    (folder / "bin").mkdir(parents=True)
    calls = folder / "sbatch-calls.txt"
    shim = folder / "bin" / "sbatch"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nexec {shutil.which("sbatch")} "$@"\n')
    shim.chmod(0o755)
    overlay = folder / "overlay.yaml"
    overlay.write_text(json.dumps({"results": str(folder / "results"), "synthesis": {"shards_per_job": group}}))
    cmd = [str(ROOT / ".venv/bin/snakemake"), "--profile", "workflow/profiles/slurm", "--configfile", *params, str(overlay),
           "--until", "synthesize", "--slurm-init-seconds-before-status-checks", "2"]
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "NATINV_TRACKING": "off"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"slurm_grouping: {name} failed:\n{proc.stderr[-3000:]}")
    submitted = Counter()
    for line in calls.read_text().splitlines():
        comment = line.split("--comment ", 1)[1].split()[0]
        submitted["synthesize" if "synthesize" in comment else comment.removeprefix("rule_").split("_wildcards")[0]] += 1
    shards = len(list((folder / "results").rglob("synth/*/*/shard-*.npz")))
    return {"bench": "slurm_grouping", "variant": name, "shards_per_job": group, "jobs_submitted": sum(submitted.values()),
            "by_stage": dict(submitted), "shards_made": shards, "wall_s": round(wall, 1), "params": params,
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", nargs="+", required=True)
    ap.add_argument("--group", nargs="+", required=True, help="KEY=N: a method or teacher key and its shards per job")
    args = ap.parse_args()
    group = {k: int(v) for k, v in (g.split("=", 1) for g in args.group)}
    with tempfile.TemporaryDirectory(prefix="natinv-grouping-") as tmp:
        for name, g in (("one-job-per-shard", {}), ("grouped", group)):
            print(json.dumps(run_variant(Path(tmp), name, args.params, g)), flush=True)


if __name__ == "__main__":
    main()
