"""`python -m natinv dvc-yaml`: the DVC pipeline of any stack of params files, from the stage table (natinv.pipeline).

One DVC stage per job of natinv.plan (the jobs Snakemake runs for the same files; a method's shards run in turn in
one stage), with the stage table's command, inputs, outputs and tracked parameters, plus the package's source files
the stage's runner imports (so a code edit re-runs exactly the stages that use it). A stage tracks each of its
parameters in every params file of the stack that sets it, and nothing else, so an edit invalidates exactly the
stages that depend on the edited value; a key added to a file later is tracked once the dvc.yaml is written again.
The committed dvc.yaml is this for params/default.yaml; `dvc repro <path>/dvc.yaml` runs another stack's.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from natinv.config import Config, load_config, method_bases, read_params_file
from natinv.pipeline import STAGES, Stage
from natinv.dvc_plots import template_path, write_templates
from natinv.report.charts import charts


def default_out(cfg: Config) -> Path:
    return Path("workflow") / "dvc" / cfg.experiment / "dvc.yaml"


def _sets(tree: Any, key: str) -> bool:
    """Whether a params file (`tree`) sets dotted `key` (a value, or a section with something in it)."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _leaves(tree: Any, key: str) -> list[str]:
    """The values a params file (`tree`) sets at or under dotted `key`, as dotted keys of values (a number, a string,
    a list), in the file's order: `teacher` -> `teacher.lr`, `teacher.epochs`, ... DVC is given only such keys, so no
    key of one stage lies inside another stage's (`dvc params diff` would show that value twice)."""
    node = tree
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, dict) or not node:
        return [key]
    return [leaf for k in node for leaf in _leaves(tree, f"{key}.{k}")]


def bases_in(trees: Iterable[dict]) -> Callable[[str], list[str]]:
    """method -> the methods it derives from (`base:`), as a stack of params files (`trees`, in order) writes them."""
    methods: dict[str, dict] = {}  # each method's top-level keys over the stack (only `base` is read)
    for tree in trees:
        for name, spec in ((tree.get("synthesis") or {}).get("methods") or {}).items():
            methods.setdefault(name, {}).update(spec if isinstance(spec, dict) else {})
    return lambda method: method_bases(methods, method)


class _Writer:
    def __init__(self, cfg: Config, files: list[str], wdir: str):
        self.cfg, self.files, self.wdir = cfg, files, wdir
        self.trees = {f: read_params_file(Path(f)) for f in files}
        self.bases = bases_in(self.trees.values())
        self.stages: dict[str, dict] = {}

    def params(self, tracked: list[str]) -> list[dict]:
        out = []
        for f, tree in self.trees.items():
            keys = list(dict.fromkeys(leaf for key in tracked if _sets(tree, key) for leaf in _leaves(tree, key)))
            if keys:
                out.append({f: keys})
        return out

    def add(self, stage: Stage, job: dict[str, str]) -> None:
        """One job of `stage` (`--key value` for each wildcard), named `{stage}--{wildcard values}`."""
        exp = self.cfg.exp_dir
        cmd = " ".join(["python -m natinv", stage.name, *(f"--params {f}" for f in self.files),
                        *(f"--{k} {v}" for k, v in job.items())])
        entry: dict[str, Any] = {"cmd": cmd, "wdir": self.wdir}
        if deps := [*map(str, stage.inputs(self.cfg, job, True)), *map(str, stage.sources(self.cfg, job))]:
            entry["deps"] = deps
        if params := self.params(stage.tracked_keys(job, self.bases)):
            entry["params"] = params
        outputs = stage.dvc_outputs or stage.outputs
        files = {name: str(exp / o.template.format(**job)) for name, o in outputs.items()}
        for role in ("outs", "metrics"):
            if listed := [{files[n]: {"persist": True}} if o.persist else files[n] for n, o in outputs.items() if o.dvc == role]:
                entry[role] = listed
        self.stages["--".join([stage.name, *job.values()])] = entry


def build(files: list[str], wdir: str = ".") -> dict:
    """The dvc.yaml of the params stack `files`, as a mapping; `wdir`: the repository root seen from where it is written."""
    cfg = load_config(files)
    w = _Writer(cfg, files, wdir)
    for stage in STAGES.values():
        jobs = stage.jobs(cfg)
        if stage.dvc_job is not None:  # one DVC stage per (teacher, method): its shards run in turn
            jobs = list({tuple(j[k] for k in stage.dvc_job): {k: j[k] for k in stage.dvc_job} for j in jobs}.values())
        for job in jobs:
            w.add(stage, job)
    plots = [{c.name: {"title": c.title, "x": c.x, "y": {os.path.normpath(os.path.join(wdir, f)): c.y for f in c.files},
                       "template": str(template_path(cfg, c.log_y))}}
             for c in charts(cfg)]  # one chart per curve and teacher, a line per method in its colour
    return {"stages": w.stages, "plots": plots}


def render(files: list[str], out: Path) -> str:
    """The text of the dvc.yaml of `files` written at `out` (run from the repository root)."""
    wdir = os.path.relpath(Path.cwd(), Path(out).parent.resolve())
    head = (f"# Generated by `python -m natinv dvc-yaml {' '.join(f'--params {f}' for f in files)} --out {out}` from the stage\n"
            "# table (natinv.pipeline); run that again after editing the stage table or the package's imports, or adding keys\n"
            "# to a params file.\n"
            f"# `dvc repro {out}` runs it.\n")
    return head + yaml.safe_dump(build(files, wdir), sort_keys=False, width=200)


def write(files: list[str], out: Path | None = None) -> Path:
    """Write the dvc.yaml of `files` (default: workflow/dvc/{experiment}/dvc.yaml) and its plots' templates
    (natinv.dvc_plots), and return its path."""
    from natinv.io import atomic_write_bytes

    out = Path(out) if out is not None else default_out(load_config(files))
    atomic_write_bytes(out, render(files, out).encode())
    write_templates(load_config(files))
    return out
