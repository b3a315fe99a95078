"""The report's curves as DVC plots: one chart per quantity and teacher, one line per method in the method's colour
(natinv.palette), drawn from the CSV files the report writes under report/plots/ (one per method and curve, each row
naming its method). The report (natinv.report.plots) writes them and the DVC generator (natinv.dvc_yaml) declares the
charts from the same list, with a template that colours the lines by method.

Importing this module does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from natinv import paths, plan
from natinv.config import Config, seeds
from natinv.synthesis import registry

EPOCH_ACC = "on the first test images, as each epoch ends; the final accuracy is on all of them"


@dataclass(frozen=True)
class Chart:
    name: str  # DVC's plot id
    title: str
    x: str
    y: str
    files: tuple[Path, ...]  # one line each
    log_y: bool = False  # a loss spanning decades


def plot_dir(cfg: Config) -> Path:
    return paths.at(cfg.exp_dir, paths.REPORT["plots"])


def loss_csv(cfg: Config, teacher: str, method: str) -> Path:
    """Mean loss terms per iteration of (teacher, method)'s batches: iteration, total, ce, bn, ..., method."""
    return plot_dir(cfg) / "synthesis-loss" / f"{teacher}-{method}.csv"


def accuracy_csv(cfg: Config, name: str) -> Path:
    """Per-epoch test accuracy of one trained network (`name`: 'teacher T', 'KD M -> S'): epoch, train_loss, test_acc,
    method."""
    return plot_dir(cfg) / "accuracy" / f"{name.replace(' -> ', '-').replace(' ', '-')}.csv"


def curve_methods(cfg: Config, teacher: str) -> list[str]:
    """The methods of `teacher` whose synthesis has per-iteration losses (inversions; a generator's curve is in MLflow)."""
    return [m for m in plan.methods_of(cfg, teacher) if not registry.of(cfg.synthesis.methods[m]).generative]


def trained_curves(cfg: Config, teacher: str) -> list[tuple[str, str, Path]]:
    """(name, method, JSON) of the networks of `teacher` with per-epoch accuracy: the teacher (method `teacher`) and each
    distilled student (not a student trained while synthesizing, nor a seed replica)."""
    out = [(f"teacher {teacher}", "teacher", paths.teacher_json(cfg.exp_dir, teacher))]
    for t, m, s in plan.kd_jobs(cfg):
        co = None if m == "real" else cfg.cotrained(m)
        if t == teacher and seeds.split(m)[1] is None and (co is None or co.student != s):
            out.append((f"KD {m} -> {s}", m, paths.kd_json(cfg.exp_dir, t, m, s)))
    return out


def charts(cfg: Config) -> list[Chart]:
    out = []
    for t in cfg.teacher.models:
        if losses := tuple(loss_csv(cfg, t, m) for m in curve_methods(cfg, t)):
            out += [Chart(f"synthesis-{term}-{t}", f"{t}: {label} per iteration (mean over batches)", "iteration", term, losses,
                          log_y=True)
                    for term, label in (("ce", "cross-entropy"), ("bn", "BN-statistics term"))]
        trained = trained_curves(cfg, t)
        out.append(Chart(f"teacher-{t}", f"{t}: the teacher's test accuracy per epoch ({EPOCH_ACC})", "epoch", "test_acc",
                         (accuracy_csv(cfg, trained[0][0]),)))
        if students := tuple(accuracy_csv(cfg, name) for name, _, _ in trained[1:]):
            out.append(Chart(f"kd-{t}", f"{t}: distilled students' test accuracy per epoch ({EPOCH_ACC})", "epoch",
                             "test_acc", students))
    return out
