"""The report's inputs: every stage's JSON result, gathered into summary.json (whatever stages have run)."""
from __future__ import annotations

from pathlib import Path

from natinv import paths, plan
from natinv.config import Config, seeds
from natinv.io import read_json


def read_if_present(path: Path) -> dict | None:
    """A stage JSON, or None while the stage has not run (nothing there: something that is no regular file is an error)."""
    return read_json(path) if path.exists() or path.is_symlink() else None


def synthesis_totals(cfg: Config, teacher: str, method: str) -> dict | None:
    """Totals over the shards of (teacher, method); None while any shard is missing."""
    shards = [read_if_present(paths.shard_json(cfg.exp_dir, teacher, method, s)) for s in range(cfg.shards_of(method))]
    if any(s is None for s in shards):
        return None
    n = sum(s["images"] for s in shards)

    def mean(get) -> float:  # image-weighted over shards
        return sum(get(s) * s["images"] for s in shards) / n

    warm = read_if_present(paths.meta_json(cfg.exp_dir, teacher, method))  # ni-fast's warm-up stage
    cpu = sum(s.get("cpu_seconds", s["seconds"]) for s in shards)
    return {
        "images": n, "iterations": shards[0]["iterations"], "batch_size": shards[0]["batch_size"],
        "seconds": sum(s["seconds"] for s in shards), "shard_seconds": [s["seconds"] for s in shards],
        # CPU time of the synthesis loops (all threads), and of the warm-up stage a method with `meta` reads first
        "cpu_seconds": cpu, "warmup_seconds": None if warm is None else warm["seconds"],
        "warmup_cpu_seconds": None if warm is None else warm["cpu_seconds"],
        "total_cpu_seconds": cpu + (0.0 if warm is None else warm["cpu_seconds"]),
        "s_per_iter": sum(s["seconds"] for s in shards) / sum(s["steps"] for s in shards),
        "final_ce": mean(lambda s: s["final"]["ce"]) if "ce" in shards[0]["final"] else None,  # DAFL, DFAD: no CE / BN
        "final_bn": mean(lambda s: s["final"]["bn"]) if "bn" in shards[0]["final"] else None,
        "agreement_float16": mean(lambda s: s["agreement_float16"]), "agreement_uint8": mean(lambda s: s["agreement_uint8"]),
    }


def compute(cfg: Config) -> dict[str, dict]:
    """summary.json's `compute`: the seconds every finished job reported (process start-up excluded), per row of the
    report's wall-time table, over every seed: {row: {"jobs": n, "seconds": [...]}}. A seed replica's synthesis and
    warm-up count in its method's row."""
    exp = cfg.exp_dir
    rows: dict[str, list[float]] = {}

    def add(row: str, path: Path) -> None:
        if (j := read_if_present(path)) is not None:
            rows.setdefault(row, []).append(j["seconds"])

    for t in cfg.teacher.models:
        add("teacher", paths.teacher_json(exp, t))
    for t, m in plan.meta_jobs(cfg):
        add(f"meta {t}/{seeds.split(m)[0]}", paths.meta_json(exp, t, m))
    for t, m, shard in plan.synthesis_jobs(cfg):
        add(f"synthesize {t}/{seeds.split(m)[0]}", paths.shard_json(exp, t, m, shard))
    for t, m, s in plan.kd_jobs(cfg):
        add("kd", paths.kd_json(exp, t, m, s))
    for e in cfg.metrics.evaluators:
        add("evaluator", paths.evaluator_json(exp, e))
    for t, m in plan.metrics_jobs(cfg):
        add("metrics", paths.metrics_json(exp, t, m))
    for t in cfg.teacher.models:
        add("tsne", paths.tsne_files(exp, t)["json"])
    for t, m, s in plan.scratch_jobs(cfg):
        add("scratch", paths.scratch_json(exp, t, m, s))
    for t, m, r in plan.prune_jobs(cfg):
        add("prune", paths.prune_json(exp, t, m, r))
    return {row: {"jobs": len(seconds), "seconds": seconds} for row, seconds in rows.items()}


def _plain(jobs: list[tuple]) -> list[tuple]:
    """The jobs of the run's own seed (not the seed replicas, which `spread` aggregates)."""
    return [j for j in jobs if seeds.split(j[1])[1] is None]


def collect(cfg: Config) -> dict:
    """summary.json: the keys the README lists (accuracies in %), for whatever stages have run; `seeds` and
    `comparisons` hold mean ± std over the seeds and what each comparison can say (natinv.report.spread)."""
    from natinv.report.spread import comparisons, over_seeds

    out: dict = {"experiment": cfg.experiment, "teachers": {}, "evaluators": {}, "synthesis": {}, "kd": {}, "metrics": {},
                 "inception": {}, "inception_unavailable": None, "tsne": {}, "scratch": {}, "prune": {}}
    for e in cfg.metrics.evaluators:
        if (ej := read_if_present(paths.evaluator_json(cfg.exp_dir, e))) is not None:
            out["evaluators"][e] = {"test_acc": ej["test_acc"], "seconds": ej["seconds"], "epochs": len(ej["epochs"])}
    for t in cfg.teacher.models:
        if (tj := read_if_present(paths.teacher_json(cfg.exp_dir, t))) is not None:
            out["teachers"][t] = {"test_acc": tj["test_acc"], "seconds": tj["seconds"], "epochs": len(tj["epochs"])}
        if (tj := read_if_present(paths.tsne_files(cfg.exp_dir, t)["json"])) is not None:
            out["tsne"][t] = {"images": tj["images"], "layers": tj["layers"], "seconds": tj["seconds"]}
        for m in plan.methods_of(cfg, t):
            if (totals := synthesis_totals(cfg, t, m)) is not None:
                out["synthesis"][f"{t}/{m}"] = totals
    for t, m in _plain(plan.metrics_jobs(cfg)):  # the synthesized methods, then real (the reference row)
        if (mj := read_if_present(paths.metrics_json(cfg.exp_dir, t, m))) is not None:
            out["metrics"][f"{t}/{m}"] = {f"{net}/{k}": v for net, scores in mj["embeddings"].items() for k, v in scores.items()}
            out["metrics"][f"{t}/{m}"] |= {"seconds": mj["seconds"], "images": mj["images"], "reference_images": mj["reference_images"]}
            inc = mj.get("inception") or {"available": False, "reason": "this metrics file predates the Inception metrics"}
            if inc["available"]:
                out["inception"][f"{t}/{m}"] = {k: inc[k] for k in ("is", "is_std", "fid", "precision", "recall", "f_score")}
            else:
                out["inception_unavailable"] = inc["reason"]
    for t, m, s in _plain(plan.scratch_jobs(cfg)):
        if (sj := read_if_present(paths.scratch_json(cfg.exp_dir, t, m, s))) is not None:
            out["scratch"][f"{t}/{m}/{s}"] = {k: sj[k] for k in ("train_acc", "train_loss", "test_acc", "test_loss",
                                                                  "own_acc", "images", "seconds")}
    for t, m, s in _plain(plan.kd_jobs(cfg)):
        if (kj := read_if_present(paths.kd_json(cfg.exp_dir, t, m, s))) is not None:
            out["kd"][f"{t}/{m}/{s}"] = {"test_acc": kj["test_acc"], "images": kj["images"], "seconds": kj["seconds"],
                                         "epochs": len(kj["epochs"]),
                                         "cotrained": kj["cotrained"]["steps"] if "cotrained" in kj else None}
    for t, m, r in _plain(plan.prune_jobs(cfg)):
        if (pj := read_if_present(paths.prune_json(cfg.exp_dir, t, m, r))) is not None:
            out["prune"][f"{t}/{m}/{r:g}"] = {k: pj[k] for k in ("test_acc", "params_before", "params_after",
                                                                 "macs_before", "macs_after", "seconds")}
    out["compute"] = compute(cfg)
    out["seeds"] = over_seeds(cfg)
    out["comparisons"] = comparisons(cfg, out["seeds"])
    return out
