"""Gather the stage JSONs of an experiment into one table (the report stage builds on this)."""
from __future__ import annotations

from pathlib import Path

from natinv import paths
from natinv.config import Config
from natinv.io import read_json


def _read(path: Path) -> dict | None:
    """A stage JSON, or None while the stage has not run."""
    return read_json(path) if path.is_file() else None


def synthesis_totals(cfg: Config, teacher: str, method: str) -> dict | None:
    """Totals over the shards of (teacher, method); None while any shard is missing."""
    shards = [_read(paths.shard_json(cfg.exp_dir, teacher, method, s)) for s in range(cfg.synthesis.shards)]
    if any(s is None for s in shards):
        return None
    n = sum(s["images"] for s in shards)

    def mean(get) -> float:  # image-weighted over shards
        return sum(get(s) * s["images"] for s in shards) / n

    return {
        "images": n, "iterations": shards[0]["iterations"], "batch_size": shards[0]["batch_size"],
        "seconds": sum(s["seconds"] for s in shards),
        "s_per_iter": sum(s["seconds"] for s in shards) / sum(s["batches"] * s["iterations"] for s in shards),
        "final_ce": mean(lambda s: s["final"]["ce"]), "final_bn": mean(lambda s: s["final"]["bn"]),
        "agreement_float16": mean(lambda s: s["agreement_float16"]), "agreement_uint8": mean(lambda s: s["agreement_uint8"]),
    }


def collect(cfg: Config) -> dict:
    out: dict = {"experiment": cfg.experiment, "teachers": {}, "synthesis": {}, "kd": {}}
    for t in cfg.teacher_keys():
        if (tj := _read(paths.teacher_json(cfg.exp_dir, t))) is not None:
            out["teachers"][t] = {"test_acc": tj["test_acc"], "seconds": tj["seconds"]}
        for m in cfg.synthesis.run:
            if (totals := synthesis_totals(cfg, t, m)) is not None:
                out["synthesis"][f"{t}/{m}"] = totals
        for m in cfg.kd.methods:
            for s in cfg.kd.students:
                if (kj := _read(paths.kd_json(cfg.exp_dir, t, m, s))) is not None:
                    out["kd"][f"{t}/{m}/{s}"] = {"test_acc": kj["test_acc"], "images": kj["images"], "seconds": kj["seconds"]}
    return out


def render(summary: dict) -> str:
    lines = [f"# {summary['experiment']}", "", "| teacher | test acc % | seconds |", "|---|---|---|"]
    lines += [f"| {t} | {v['test_acc']:.2f} | {v['seconds']:.0f} |" for t, v in summary["teachers"].items()]
    lines += ["", "| teacher/method | images | iters | s/iter | final CE | final BN | agree f16 % | agree uint8 % | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['images']} | {v['iterations']} | {v['s_per_iter']:.3f} | {v['final_ce']:.3f} | {v['final_bn']:.3f} | "
              f"{v['agreement_float16']:.1f} | {v['agreement_uint8']:.1f} | {v['seconds']:.0f} |" for k, v in summary["synthesis"].items()]
    lines += ["", "| teacher/method/student | images | KD test acc % | seconds |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['images']} | {v['test_acc']:.2f} | {v['seconds']:.0f} |" for k, v in summary["kd"].items()]
    return "\n".join(lines)
