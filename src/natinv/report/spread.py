"""How sure the report is: mean ± std of every result over the run's seeds (natinv.config.seeds), and for each
comparison (a method against DeepInversion, against real images) whether the gap exceeds the spread.

A gap is *within noise* when it is no larger than the two standard deviations added (mean ± 1 std of the two
rows overlap); with one seed on either side the spread is unknown and the verdict says so.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

from natinv import paths, plan
from natinv.config import Config, seeds
from natinv.io import read_json
from natinv.report.identity import paper_key

METRIC_KEYS = ("fd", "precision", "recall")  # per embedding; FD: lower is better
LOWER_IS_BETTER = {"fd"}


def stats(values: list[float]) -> dict:
    """{mean, std (sample, None for one value), n, values}."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _grouped(jobs: Iterable[tuple], path_of: Callable[..., Path], values_of: Callable[[dict], dict[str, float]]
             ) -> dict[str, dict[str, dict]]:
    """{row key with the seed suffix removed: {value name: stats over the seeds whose file exists}}."""
    groups: dict[str, dict[str, list[float]]] = {}
    for job in jobs:
        path = path_of(*job)
        if not path.is_file():
            continue
        key = "/".join(str(p) if not isinstance(p, float) else f"{p:g}" for p in (job[0], seeds.split(job[1])[0], *job[2:]))
        for name, value in values_of(read_json(path)).items():
            groups.setdefault(key, {}).setdefault(name, []).append(value)
    return {k: {name: stats(v) for name, v in by_name.items()} for k, by_name in groups.items()}


def over_seeds(cfg: Config) -> dict:
    """summary.json's `seeds`: the seeds of the run and, per application row, mean ± std of its numbers over them."""
    exp = cfg.exp_dir
    acc = lambda j: {"test_acc": j["test_acc"]}  # noqa: E731
    return {
        "seeds": [cfg.seed, *cfg.extra_seeds],
        "kd": _grouped(plan.kd_jobs(cfg), lambda t, m, s: paths.kd_json(exp, t, m, s), acc),
        "scratch": _grouped(plan.scratch_jobs(cfg), lambda t, m, s: paths.scratch_json(exp, t, m, s), acc),
        "prune": _grouped(plan.prune_jobs(cfg), lambda t, m, r: paths.prune_json(exp, t, m, r), acc),
        "metrics": _grouped([j for j in plan.metrics_jobs(cfg) if j[1] != "real"],
                            lambda t, m: paths.metrics_json(exp, t, m),
                            lambda j: {f"{net}/{k}": s[k] for net, s in j["embeddings"].items() for k in METRIC_KEYS}),
    }


def verdict(a: dict, b: dict, higher_is_better: bool, names: tuple[str, str]) -> dict:
    """The comparison of two rows' stats: gap (a - b), spread (std a + std b) and what can be said."""
    gap = a["mean"] - b["mean"]
    out = {"a": names[0], "b": names[1], "a_mean": a["mean"], "b_mean": b["mean"], "gap": gap,
           "a_std": a["std"], "b_std": b["std"], "n": [a["n"], b["n"]]}
    if a["std"] is None or b["std"] is None:
        return out | {"spread": None, "within_noise": None, "verdict": "one seed: spread unknown"}
    spread = a["std"] + b["std"]
    better = names[0] if (gap > 0) == higher_is_better else names[1]
    within = abs(gap) <= spread
    return out | {"spread": spread, "within_noise": within, "verdict": "within noise" if within else f"{better} ahead"}


def comparisons(cfg: Config, spread: dict) -> list[dict]:
    """Every method against DeepInversion (the paper's DI row, when run) and, for the student applications, against
    real images; in KD, scratch and pruning accuracy and in each embedding's FD."""
    di = next((m for m in cfg.synthesis.run if paper_key(cfg, m) == "deepinversion"), None)
    out = []
    for section, value, refs in (("kd", "test_acc", (di, "real")), ("scratch", "test_acc", (di, "real")),
                                 ("prune", "test_acc", (di, "real")), ("metrics", None, (di,))):
        for key, by_name in spread[section].items():
            parts = key.split("/")
            teacher, method, rest = parts[0], parts[1], parts[2:]
            for ref in refs:
                ref_key = "/".join([teacher, ref, *rest]) if ref else None
                if ref is None or method in (ref, "real", "none") or ref_key not in spread[section]:
                    continue
                for name in ([value] if value else list(by_name)):
                    if name not in spread[section][ref_key]:
                        continue
                    lower = name.rpartition("/")[2] in LOWER_IS_BETTER
                    out.append({"section": section, "row": key, "value": name, "higher_is_better": not lower,
                                **verdict(by_name[name], spread[section][ref_key][name], not lower, (method, ref))})
    return out


def cell(s: dict | None, digits: int = 2, bold: bool = True) -> str:
    """A table cell: mean ± std (n seeds), or the one value."""
    if s is None:
        return "-"
    b = "**" if bold else ""
    if s["std"] is None:
        return f"{b}{s['mean']:.{digits}f}{b}"
    return f"{b}{s['mean']:.{digits}f}{b} ± {s['std']:.{digits}f} ({s['n']} seeds)"
