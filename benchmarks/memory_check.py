"""Peak memory as a paper profile's image count grows: the profile at smoke sizes (stand-in data, width-8 networks, one
iteration) but with 1/32, 1/16 and 1/8 of its 256k synthesized images at its batch size of 256 and its 2,560 images per
shard, run by Snakemake on this CPU; each stage's largest peak memory (each job's own high-water mark, which it logs
at its end) beside what natinv.cost computes for the same jobs, and the growth from the smallest to the largest size,
measured and computed.

    .venv/bin/python benchmarks/memory_check.py > benchmarks/paper-memory-scaling.jsonl

Every memory that depends on the image count depends on it through `synthesis.num_images` alone, so the stand-in data
and the width-8 networks change the constant part, not the growth. Runs in a temporary folder or in --folder (the
project's `results/` is not touched); takes about half an hour on 2 cores. One JSON line per (size, stage), then one
per stage with the growth.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PAPER_IMAGES = 256_000
IMAGES_PER_SHARD = 2_560  # the paper profiles: 256k images in 100 shards
PROFILE = ["params/default.yaml", "params/paper-cifar10.yaml", "params/smoke.yaml"]


def overlay(folder: Path, fraction: int) -> dict:
    """The smoke profile with 1/fraction of the paper's images: the stages whose memory scales with them (the one-shard
    methods' pools: ADI's on the device of its co-trained student, DAFL's sampled; every reader of a method's images)
    and one of each other kind, each network once. DI stands for the sharded methods (a shard holds a fixed 2,560
    images whatever the total, so its memory does not grow with it)."""
    n = PAPER_IMAGES // fraction
    one = {"iterations": 1}
    return {
        "experiment": f"memory-1-{fraction}", "results": str(folder / "results"),
        "teacher": {"models": ["resnet34"]},
        "synthesis": {"num_images": n, "batch_size": 256, "shards": max(1, round(n / IMAGES_PER_SHARD)),
                      "run": ["di", "adi", "dafl"],
                      "methods": {"ni": one, "di": one, "adi": {**one, "cotrain": {"steps": 1, "batch_size": 256}},
                                  "dafl": {"iterations": 2, "batch_size": 256}}},
        "kd": {"students": ["resnet18"], "methods": ["di", "adi", "dafl"], "batch_size": 256},
        "scratch": {"students": ["resnet18"], "methods": ["di"], "batch_size": 256},
        "prune": {"methods": ["di"], "ratios": [0.5], "batch_size": 256},
        "metrics": {"reference_images": 256, "tsne": {"images": 1_000, "methods": ["di", "adi"], "layers": ["stage1", "embedding"]}},
        "data": {"train_limit": 2_048, "test_limit": 256},
    }


def run_size(tmp: Path, fraction: int, cores: int) -> tuple[list[str], float]:
    folder = tmp / f"1-{fraction}"
    folder.mkdir(parents=True, exist_ok=True)
    extra = folder / "overlay.yaml"
    extra.write_text(json.dumps(overlay(folder, fraction)))
    params = [str(ROOT / p) for p in PROFILE] + [str(extra)]
    start = time.perf_counter()
    proc = subprocess.run([str(ROOT / ".venv/bin/snakemake"), "--cores", str(cores), "--rerun-incomplete", "--configfile", *params],
                          cwd=ROOT, env={**os.environ, "NATINV_TRACKING": "off"}, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"memory_check: 1/{fraction} failed:\n{proc.stderr[-4000:]}")
    return params, time.perf_counter() - start


def logged_peak(cfg, stage: str, job: dict) -> float | None:
    """The peak host memory a stage job logged at its end (`<stage>: peak memory N MB on the host`: the kernel's
    high-water mark of the process). Snakemake's benchmark max_rss samples every 30 s after a job's first 15 s, so it
    misses the peak of a job shorter than a minute; this does not."""
    import re

    from natinv.pipeline import STAGES

    path = cfg.exp_dir / STAGES[stage].log_template.format(**job)
    found = re.findall(r": peak memory (\d+) MB on the host", path.read_text()) if path.is_file() else []
    return float(found[-1]) if found else None


def stage_peaks(params: list[str]) -> dict[str, dict]:
    """{stage: largest measured peak and the computed peak of the same jobs (MB), jobs}."""
    from cost_calibration import collect

    cfg, rows = collect(ROOT, params)
    out: dict[str, dict] = {}
    for c, m in rows:
        measured = logged_peak(cfg, c.stage, c.job)
        if measured is None:
            continue
        s = out.setdefault(c.stage, {"jobs": 0, "measured_mb": 0.0, "computed_mb": 0.0})
        s["jobs"] += 1
        s["measured_mb"] = max(s["measured_mb"], measured)
        s["computed_mb"] = max(s["computed_mb"], c.host_mb)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", type=int, nargs="+", default=[32, 16, 8])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--folder", type=Path, help="keep the runs here (a re-run with the same folder re-runs only what "
                   "changed); default: a temporary folder")
    args = p.parse_args()
    peaks: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="natinv-memory-") as tmp:
        where = args.folder or Path(tmp)
        for f in args.fractions:
            params, wall = run_size(where, f, args.cores)
            peaks[f] = stage_peaks(params)
            for stage, s in peaks[f].items():
                print(json.dumps({"bench": "memory_check", "fraction": f"1/{f}", "images": PAPER_IMAGES // f, "stage": stage,
                                  "jobs": s["jobs"], "measured_mb": round(s["measured_mb"]),
                                  "computed_mb": round(s["computed_mb"]), "run_s": round(wall),
                                  "date": time.strftime("%Y-%m-%d")}), flush=True)
    small, large = max(args.fractions), min(args.fractions)
    for stage in peaks[small]:
        a, b = peaks[small][stage], peaks[large].get(stage)
        if b is None:
            continue
        print(json.dumps({"bench": "memory_growth", "stage": stage, "from": f"1/{small}", "to": f"1/{large}",
                          "measured_growth_mb": round(b["measured_mb"] - a["measured_mb"]),
                          "computed_growth_mb": round(b["computed_mb"] - a["computed_mb"])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
