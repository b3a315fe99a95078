"""The cost model against measured runs: per stage, the wall time and peak memory Snakemake recorded for every job
(`results/{experiment}/benchmarks/<stage>/<job>.tsv`) beside what `natinv.cost` predicts, and the CPU rates that fit
them best (least squares over every job: seconds = start-up + FLOPs / rate of the job's kind).

    .venv/bin/python benchmarks/cost_calibration.py --run DIR params/default.yaml [--run DIR2 params/... ...] [--fit]

DIR is the project copy the run was made in (its results/ and params); each --run takes the params stack it ran
with. Prints one JSON line per run and stage (jobs, measured and predicted seconds, the error, peak memory measured
and predicted), and with --fit the fitted rates first, which the run is then predicted with.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def measured(cfg, stage, job) -> dict | None:
    from natinv.pipeline import STAGES

    path = cfg.exp_dir / STAGES[stage].benchmark_template.format(**job)
    if not path.is_file():
        return None
    with path.open() as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    return {"s": float(row["s"]), "max_rss_mb": float(row["max_rss"]) if row["max_rss"] not in ("", "-") else None}


def collect(run: Path, params: list[str]):
    import os

    from natinv import cost
    from natinv.config import load_config

    cwd = os.getcwd()
    os.chdir(run)
    try:
        cfg = load_config(params)
        rows = [(c, m) for c in cost.plan_costs(cfg) if (m := measured(cfg, c.stage, c.job)) is not None]
    finally:
        os.chdir(cwd)
    return cfg, rows


def fit(rows) -> dict:
    kinds = ["synthesis", "training", "inference"]
    # relative errors count alike for short and long jobs: each row weighted by 1 / its measured seconds
    a = np.array([[1.0, c.steps, *(c.flop if c.kind == k else 0.0 for k in kinds)] for c, _ in rows])
    b = np.array([m["s"] for _, m in rows])
    coef, *_ = np.linalg.lstsq(a / b[:, None], np.ones_like(b), rcond=None)
    return {"startup_s": float(coef[0]), "step_s": float(coef[1]),
            **{k: float(1 / v) if v > 0 else float("inf") for k, v in zip(kinds, coef[2:])}}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run", nargs="+", action="append", required=True, metavar=("DIR", "PARAMS"))
    p.add_argument("--fit", action="store_true")
    args = p.parse_args()
    from natinv import cost

    runs = [(Path(r[0]).resolve(), r[1:]) for r in args.run]
    collected = [collect(run, params) for run, params in runs]
    rate = cost.RATES["cpu"]
    if args.fit:
        fitted = fit([row for _, rows in collected for row in rows])
        print(json.dumps({"fit": fitted}))
        rate = replace(rate, **{k: v for k, v in fitted.items()})
    for (run, _), (cfg, rows) in zip(runs, collected):
        stages: dict[str, list] = {}
        for c, m in rows:
            stages.setdefault(c.stage, []).append((c, m))
        for stage, pairs in stages.items():
            got = sum(m["s"] for _, m in pairs)
            want = sum(c.seconds(rate) for c, _ in pairs)
            rss = [m["max_rss_mb"] for _, m in pairs if m["max_rss_mb"] is not None]
            print(json.dumps({"run": cfg.experiment, "stage": stage, "jobs": len(pairs), "measured_s": round(got, 1),
                              "predicted_s": round(want, 1), "error": round(want / got - 1, 3),
                              "max_rss_mb": max(rss) if rss else None,
                              "predicted_mb": round(max(c.host_mb for c, _ in pairs))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
