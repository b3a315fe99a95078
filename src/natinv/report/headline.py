"""The run's headline numbers: one row per method (and one for the teacher), a handful of columns, the mean over the
run's seeds. `dvc metrics show` prints these files as a table (rows: methods; columns: measures) and the pipeline's
MLflow parent run carries them as metrics, so the first view of either tool compares methods.

Columns of a method's row: `kd` (student accuracy, %), `scratch` (student trained on the images and labels only, %),
`prune_R` (the teacher with R % of its filters removed, fine-tuned on the images, %), `fd` (Fréchet distance to real
training images in the teacher's embedding; real: held-out real images, the floor) and `fd_eval` (the same in the first
evaluator's). With more than one teacher the rows are `{teacher}-{method}`; with more than one student the accuracy
columns are `kd-{student}` and `scratch-{student}`. The teacher row: its test accuracy (%).
"""
from __future__ import annotations

from natinv.config import Config
from natinv.report.cells import stats_of
from natinv.report.spread import METRIC_KEYS

DIGITS = 2


def _mean(summary: dict, section: str, key: str, name: str) -> float | None:
    """The mean over seeds of `name` in row `key` of `section` (one seed: its value); None when the job did not run."""
    group = stats_of(summary, section, key, name)
    if group is not None:
        return group["mean"]
    return summary.get(section, {}).get(key, {}).get(name)  # real images' metrics: not grouped over seeds


def rows(cfg: Config, summary: dict) -> dict[str, dict[str, float]]:
    """{row name: {column: value}}: the teacher row(s), then one per method the run applied (and real images)."""
    teachers = list(summary["teachers"])
    evaluator = next(iter(summary["evaluators"]), None)
    out: dict[str, dict[str, float]] = {}
    for t in teachers:
        out["teacher" if len(teachers) == 1 else f"teacher-{t}"] = {"test_acc": summary["teachers"][t]["test_acc"]}
    methods = dict.fromkeys([*cfg.synthesis.run, "real"])
    for t in teachers:
        for m in methods:
            row: dict[str, float | None] = {}
            for section, names in (("kd", cfg.kd.students), ("scratch", cfg.scratch.students)):
                for s in names:
                    row[section if len(names) == 1 else f"{section}-{s}"] = _mean(summary, section, f"{t}/{m}/{s}", "test_acc")
            for r in cfg.prune.ratios:
                row[f"prune_{100 * r:g}"] = _mean(summary, "prune", f"{t}/{m}/{r:g}", "test_acc")
            row["fd"] = _mean(summary, "metrics", f"{t}/{m}", "teacher/fd")
            if evaluator is not None:
                row["fd_eval"] = _mean(summary, "metrics", f"{t}/{m}", f"evaluator:{evaluator}/fd")
            if kept := {k: round(v, DIGITS) for k, v in row.items() if v is not None}:
                out[m if len(teachers) == 1 else f"{t}-{m}"] = kept
    return out


def mlflow_metrics(cfg: Config, summary: dict) -> dict[str, float]:
    """The headline rows as `{row}/{column}` metrics, with precision and recall in the teacher's embedding beside
    FD (MLflow shows them in one table column each; DVC's table would not fit a terminal with them)."""
    out = {f"{row}/{col}": v for row, cols in rows(cfg, summary).items() for col, v in cols.items()}
    teachers = list(summary["teachers"])
    for t in teachers:
        for m in dict.fromkeys([*cfg.synthesis.run, "real"]):
            for measure in METRIC_KEYS[1:]:
                if (v := _mean(summary, "metrics", f"{t}/{m}", f"teacher/{measure}")) is not None:
                    out[f"{m if len(teachers) == 1 else f'{t}-{m}'}/{measure}"] = round(v, 4)
    return out
