"""Accuracy per compute: KD accuracy and FD in the evaluator's embedding against synthesis CPU-seconds, for every
method of a params stack run through the pipeline (params/time-to-quality.yaml: di and ni at 10-300 iterations per
batch, ni-fast at 2-20), with the key points at three seeds (params/time-to-quality-seeds.yaml).

Reads the stage outputs of the runs (shard, warm-up, KD and metrics JSONs; nothing is re-run) and writes a JSON line
per point, a two-panel figure and a Markdown table:

    .venv/bin/python benchmarks/time_to_quality.py \
        --params params/default.yaml params/time-to-quality.yaml --seeds params/default.yaml params/time-to-quality-seeds.yaml \
        --out benchmarks/time-to-quality

Synthesis CPU-seconds: process CPU time of each shard's synthesis loop (all its threads), summed over the shards, plus
the warm-up stage's for a method with a meta-learned start; process start-up and file writing are not counted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from natinv import plan
from natinv.config import Config, load_config, seeds
from natinv.report.collect import synthesis_totals
from natinv.report.spread import over_seeds, stats, verdict
from natinv.synthesis import registry


def family(cfg: Config, method: str) -> str:
    m = cfg.job_methods[method]
    return "ni-fast" if registry.meta_of(m) is not None else {"naturalinversion": "ni", "deepinversion": "di"}[m.kind]


def points(cfg: Config) -> list[dict]:
    """One row per (teacher, method) of the stack: its budget and, over the seeds run, synthesis CPU-seconds, KD
    accuracy per student and the metrics in every embedding (mean, std, n)."""
    spread = over_seeds(cfg)
    rows = []
    for t in cfg.teacher.models:
        for m in plan.methods_of(cfg, t):
            replicas = [m, *(seeds.replica(m, s) for s in cfg.extra_seeds)]
            totals = [x for r in replicas if (x := synthesis_totals(cfg, t, r)) is not None]
            if not totals:
                continue
            row = {"teacher": t, "method": m, "family": family(cfg, m), "iterations": cfg.job_methods[m].iterations,
                   "cpu_seconds": stats([x["total_cpu_seconds"] for x in totals]),
                   "warmup_cpu_seconds": stats([x["warmup_cpu_seconds"] or 0.0 for x in totals]),
                   "agreement_float16": stats([x["agreement_float16"] for x in totals])}
            for s in cfg.kd.students:
                if (kd := spread["kd"].get(f"{t}/{m}/{s}")) is not None:
                    row[f"kd/{s}"] = kd["test_acc"]
            if (met := spread["metrics"].get(f"{t}/{m}")) is not None:
                row |= {f"metrics/{k}": v for k, v in met.items() if k.endswith("/fd")}
            rows.append(row)
    return rows


def _merge(sweep: list[dict], seeded: list[dict]) -> list[dict]:
    """The sweep's rows, each replaced by the seeded run's row of the same method where it has one."""
    by_key = {(r["teacher"], r["method"]): r for r in seeded}
    return [by_key.get((r["teacher"], r["method"]), r) for r in sweep]


def _fmt(s: dict | None, digits: int = 2) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")


def table(rows: list[dict], student: str, evaluator: str) -> str:
    lines = ["| method | iterations/batch | seeds | synthesis CPU s (warm-up) | KD acc % | FD (evaluator) | FD (teacher) | agreement % |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["family"], r["iterations"])):
        teacher_fd = r.get("metrics/teacher/fd")
        warm = r["warmup_cpu_seconds"]["mean"]
        lines.append(f"| {r['method']} | {r['iterations']} | {r['cpu_seconds']['n']} | {_fmt(r['cpu_seconds'], 0)}"
                     + (f" ({warm:.0f})" if warm else "") + f" | {_fmt(r.get(f'kd/{student}'))} | "
                     f"{_fmt(r.get(f'metrics/evaluator:{evaluator}/fd'))} | {_fmt(teacher_fd)} | {_fmt(r['agreement_float16'], 1)} |")
    return "\n".join(lines)


def compare(rows: list[dict], a: str, b: str, student: str, evaluator: str) -> list[str]:
    """What the seeded rows say of method a against method b (gap, spread, verdict)."""
    ra = next((r for r in rows if r["method"] == a), None)
    rb = next((r for r in rows if r["method"] == b), None)
    if ra is None or rb is None:
        return []
    out = []
    for key, higher in ((f"kd/{student}", True), (f"metrics/evaluator:{evaluator}/fd", False)):
        if key in ra and key in rb:
            v = verdict(ra[key], rb[key], higher, (a, b))
            spread = "unknown" if v["spread"] is None else f"±{v['spread']:.2f}"
            out.append(f"{key}: {a} {v['a_mean']:.2f} vs {b} {v['b_mean']:.2f}, gap {v['gap']:+.2f}, spread {spread}: "
                       f"{v['verdict']}")
    cpu = ra["cpu_seconds"]["mean"] / rb["cpu_seconds"]["mean"]
    return out + [f"synthesis CPU: {a} {ra['cpu_seconds']['mean']:.0f} s = {cpu:.2f} x {b}'s {rb['cpu_seconds']['mean']:.0f} s"]


def plot(rows: list[dict], student: str, evaluator: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"di": "tab:purple", "ni": "tab:orange", "ni-fast": "tab:green"}
    for ax, key, label in ((axes[0], f"kd/{student}", f"KD accuracy of {student} (%)"),
                           (axes[1], f"metrics/evaluator:{evaluator}/fd", f"FD in {evaluator}'s embedding (lower is better)")):
        for fam, color in colors.items():
            pts = sorted((r for r in rows if r["family"] == fam and key in r), key=lambda r: r["cpu_seconds"]["mean"])
            if not pts:
                continue
            x = [r["cpu_seconds"]["mean"] for r in pts]
            y = [r[key]["mean"] for r in pts]
            err = [r[key]["std"] or 0.0 for r in pts]
            ax.errorbar(x, y, yerr=err, marker="o", color=color, label=fam, capsize=3)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(str(r["iterations"]), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([10, 20, 50, 100, 200, 500, 1000]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("synthesis CPU-seconds (all shards; ni-fast: + warm-up)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle("Accuracy per compute (labels: iterations per batch; error bars: std over 3 seeds where run)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", nargs="+", required=True, help="the sweep's params stack")
    ap.add_argument("--seeds", nargs="+", help="the key points' params stack (several seeds)")
    ap.add_argument("--out", type=Path, required=True, help="prefix of the .jsonl, .png and .md written")
    args = ap.parse_args()
    sweep_cfg = load_config(args.params)
    rows = points(sweep_cfg)
    seeded = points(load_config(args.seeds)) if args.seeds else []
    rows = _merge(rows, seeded)
    student, evaluator = sweep_cfg.kd.students[0], sweep_cfg.metrics.evaluators[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot(rows, student, evaluator, args.out.with_suffix(".png"))
    text = table(rows, student, evaluator)
    notes = [line for a, b in (("ni-fast", "ni"), ("ni-fast-50", "ni"), ("ni-fast", "di"), ("ni", "di")) for line in compare(seeded or rows, a, b, student, evaluator)]
    md = text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
