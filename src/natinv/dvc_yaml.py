"""`python -m natinv dvc-yaml`: the DVC pipeline of any stack of params files, e.g. a paper profile on the default.

The committed dvc.yaml runs params/default.yaml alone. For another stack this writes a dvc.yaml with one stage per
job of natinv.plan (the jobs Snakemake runs for the same files; a method's shards run in turn in one stage), each
with the commands, files and tracked parameters of the committed one. A stage tracks each of its parameters in every
params file of the stack that sets it: the key itself where that file has it, else the deepest section of the key
the file has (so a key added to that section later still invalidates the stage). A file DVC reads is never
rewritten, and `dvc repro <path>/dvc.yaml` re-runs what an edit of any of the files changed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from natinv import paths, plan
from natinv.config import STAGE_PARAMS, Config, load_config, read_params_file, tracked_stage


def default_out(cfg: Config) -> Path:
    return Path("workflow") / "dvc" / cfg.experiment / "dvc.yaml"


REGISTRIES = ("models", "synthesis.methods")  # named entries: a stage depends on its own entry, not on the others


def _deepest(tree: Any, key: str) -> str | None:
    """The longest prefix of dotted `key` that names a node of `tree` (a params file), or None; never a registry
    (`models`, `synthesis.methods`) in place of one of its entries."""
    found, node = None, tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            break
        node, found = node[part], ".".join(parts[: i + 1])
    return None if found in REGISTRIES and found != key else found


def _outermost(keys: list[str]) -> list[str]:
    """The keys without those inside another one of them (`teacher` covers `teacher.lr`), in order."""
    return [k for k in dict.fromkeys(keys) if not any(k.startswith(other + ".") for other in keys)]


class _Writer:
    def __init__(self, cfg: Config, files: list[str], wdir: str):
        self.cfg, self.files, self.wdir = cfg, files, wdir
        self.trees = {f: read_params_file(Path(f)) for f in files}
        self.stages: dict[str, dict] = {}
        self.exp = cfg.exp_dir

    def params(self, stage: str, **wildcards: str) -> list[dict]:
        tracked = [pattern.format(**wildcards) for pattern in STAGE_PARAMS[stage]]
        out = []
        for f, tree in self.trees.items():
            keys = _outermost([k for k in (_deepest(tree, key) for key in tracked) if k is not None])
            if keys:
                out.append({f: keys})
        return out

    def add(self, stage: str, wildcards: dict[str, str], deps: list[Path], outs: list[Path] = (), metrics: list[Path] = (),
            plots: list = (), uncached: list[Path] = ()) -> None:
        """One job of `stage` (`--key value` for each wildcard), named `{tracked stage}--{wildcard values}`."""
        tracked = tracked_stage(stage, wildcards.get("method"))
        cmd = " ".join(["python -m natinv", stage, *(f"--params {f}" for f in self.files),
                        *(f"--{k} {v}" for k, v in wildcards.items())])
        entry: dict[str, Any] = {"cmd": cmd, "wdir": self.wdir}
        if deps:
            entry["deps"] = [str(d) for d in deps]
        if params := self.params(tracked, **wildcards):
            entry["params"] = params
        if outs or uncached:
            entry["outs"] = [str(o) for o in outs] + [{str(o): {"cache": False}} for o in uncached]
        if metrics:
            entry["metrics"] = [{str(m): {"cache": False}} for m in metrics]
        if plots:
            entry["plots"] = plots
        self.stages["--".join([tracked, *wildcards.values()])] = entry


def _data_files(exp: Path) -> list[Path]:
    d = paths.data_dir(exp)
    return [d / "train.npz", d / "test.npz", d / "manifest.json"]


def build(files: list[str], wdir: str = ".") -> dict:
    """The dvc.yaml of the params stack `files`, as a mapping; `wdir`: the repository root seen from where it is written."""
    cfg = load_config(files)
    w = _Writer(cfg, files, wdir)
    exp, data = cfg.exp_dir, _data_files(cfg.exp_dir)
    synth_dir = lambda t, m: exp / "synth" / t / m  # noqa: E731 - a method's shards: one folder
    w.add("data", {}, [], outs=data[:2], metrics=data[2:])
    for t in cfg.teacher.models:
        w.add("teacher", {"teacher": t}, data, outs=[paths.teacher_weights(exp, t)], metrics=[paths.teacher_json(exp, t)])
    for e in cfg.metrics.evaluators:
        w.add("evaluator", {"evaluator": e}, data, outs=[paths.evaluator_weights(exp, e)], metrics=[paths.evaluator_json(exp, e)])
    evaluators = [paths.evaluator_weights(exp, e) for e in cfg.metrics.evaluators]
    for t in cfg.teacher.models:
        for m in plan.methods_of(cfg, t):
            w.add("synthesize", {"teacher": t, "method": m}, [paths.teacher_weights(exp, t)], uncached=[synth_dir(t, m)])

    def images(t: str, m: str) -> list[Path]:  # what a job reads of a method: its shards (nothing for a reference row)
        return [] if m in ("real", "none") else [synth_dir(t, m)]

    for t, m, s in plan.kd_jobs(cfg):
        w.add("kd", {"teacher": t, "method": m, "student": s}, [*data, paths.teacher_weights(exp, t), *images(t, m)],
              outs=[paths.kd_weights(exp, t, m, s)], metrics=[paths.kd_json(exp, t, m, s)])
    for t, m in plan.metrics_jobs(cfg):
        w.add("metrics", {"teacher": t, "method": m}, [*data, paths.teacher_weights(exp, t), *evaluators, *images(t, m)],
              metrics=[paths.metrics_json(exp, t, m)])
    for t in cfg.teacher.models:
        tsne = paths.tsne_files(exp, t)
        w.add("tsne", {"teacher": t}, [*data, paths.teacher_weights(exp, t), *(synth_dir(t, m) for m in plan.tsne_methods(cfg, t))],
              outs=[tsne["npz"]], metrics=[tsne["json"]], plots=[{str(tsne["png"]): {"cache": False}}])
    for t, m, s in plan.scratch_jobs(cfg):
        w.add("scratch", {"teacher": t, "method": m, "student": s}, [*data, *images(t, m)],
              metrics=[paths.scratch_json(exp, t, m, s)])
    for t, m, r in plan.prune_jobs(cfg):
        w.add("prune", {"teacher": t, "method": m, "ratio": f"{r:g}"}, [*data, paths.teacher_weights(exp, t), *images(t, m)],
              metrics=[paths.prune_json(exp, t, m, r)])
    report = exp / "report"
    w.add("report", {}, [data[1], data[2], *(exp / d for d in ("teachers", "synth", "kd", "metrics", "scratch", "prune")
                                             if _used(cfg, d))],
          uncached=[report / "report.md", report / "figures"], metrics=[report / "summary.json"],
          plots=[{str(report / "plots" / name): {"cache": False, "x": x, "y": y}}
                 for name, x, y in (("synthesis-loss", "iteration", "ce"), ("synthesis-bn", "iteration", "bn"),
                                    ("accuracy", "epoch", "test_acc"))])
    return {"stages": w.stages}


def _used(cfg: Config, folder: str) -> bool:
    """Whether the run writes anything under `folder` (a report dependency must exist)."""
    return {"scratch": bool(plan.scratch_jobs(cfg)), "prune": bool(plan.prune_jobs(cfg))}.get(folder, True)


def write(files: list[str], out: Path | None = None) -> Path:
    """Write the dvc.yaml of `files` (default: workflow/dvc/{experiment}/dvc.yaml) and return its path."""
    from natinv.io import atomic_write_bytes

    cfg = load_config(files)
    out = Path(out) if out is not None else default_out(cfg)
    wdir = os.path.relpath(Path.cwd(), out.parent.resolve())
    head = (f"# Generated by `python -m natinv dvc-yaml {' '.join(f'--params {f}' for f in files)}`; run it again after\n"
            "# adding keys to a params file or changing which jobs run. `dvc repro " + str(out) + "` runs it.\n")
    body = yaml.safe_dump(build(files, wdir), sort_keys=False, width=200)
    atomic_write_bytes(out, (head + body).encode())
    return out

