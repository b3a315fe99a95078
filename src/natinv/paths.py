"""The file contract: where every stage writes, as templates under the experiment folder (results/{experiment}).

The stage table (natinv.pipeline) declares each stage's outputs with these templates, Snakemake and the generated
dvc.yaml take them from there, and the stages write through the functions below; nothing else spells a path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = {"train": "data/train.npz", "test": "data/test.npz", "manifest": "data/manifest.json"}
TEACHER = {"weights": "teachers/{teacher}.safetensors", "json": "teachers/{teacher}.json"}
EVALUATOR = {"weights": "evaluators/{evaluator}.safetensors", "json": "evaluators/{evaluator}.json"}
SHARD = {ext: "synth/{teacher}/{method}/shard-{shard}." + ext for ext in ("npz", "json", "png")}
SYNTH_DIR = "synth/{teacher}/{method}"  # a method's shards
META = {"weights": "meta/{teacher}/{method}.safetensors", "json": "meta/{teacher}/{method}.json"}  # ni-fast's warm-up
KD = {"json": "kd/{teacher}/{method}/{student}.json", "weights": "kd/{teacher}/{method}/{student}.safetensors"}
METRICS = {"json": "metrics/{teacher}/{method}.json"}
TSNE = {ext: "tsne/{teacher}." + ext for ext in ("json", "npz", "png")}
SCRATCH = {"json": "scratch/{teacher}/{method}/{student}.json"}
PRUNE = {"json": "prune/{teacher}/{method}/ratio-{ratio}.json"}
REPORT = {"report": "report/report.md", "html": "report/report.html", "summary": "report/summary.json", "figures": "report/figures",
          "plots": "report/plots", "headline": "report/headline"}  # headline: one small JSON per method (report.headline)


def at(exp: Path, template: str, **wildcards) -> Path:
    return exp / template.format(**wildcards)


def data_dir(exp: Path) -> Path:
    return exp / "data"


def teacher_weights(exp: Path, teacher: str) -> Path:
    return at(exp, TEACHER["weights"], teacher=teacher)


def teacher_json(exp: Path, teacher: str) -> Path:
    return at(exp, TEACHER["json"], teacher=teacher)


def evaluator_weights(exp: Path, evaluator: str) -> Path:
    return at(exp, EVALUATOR["weights"], evaluator=evaluator)


def evaluator_json(exp: Path, evaluator: str) -> Path:
    return at(exp, EVALUATOR["json"], evaluator=evaluator)


def shard_npz(exp: Path, teacher: str, method: str, shard: int) -> Path:
    return at(exp, SHARD["npz"], teacher=teacher, method=method, shard=shard)


def shard_json(exp: Path, teacher: str, method: str, shard: int) -> Path:
    return at(exp, SHARD["json"], teacher=teacher, method=method, shard=shard)


def shard_progress(exp: Path, teacher: str, method: str, shard: int) -> Path:
    """A running shard's saved progress (natinv.synthesis.progress), removed once the shard's files are written."""
    return at(exp, "synth/{teacher}/{method}/shard-{shard}.progress.safetensors", teacher=teacher, method=method, shard=shard)


def meta_weights(exp: Path, teacher: str, method: str) -> Path:
    return at(exp, META["weights"], teacher=teacher, method=method)


def meta_json(exp: Path, teacher: str, method: str) -> Path:
    return at(exp, META["json"], teacher=teacher, method=method)


def read_shards(exp: Path, teacher: str, method: str, shards: int, keys: tuple[str, ...],
                rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The arrays `keys` of every shard of (teacher, method), concatenated in shard order (other members unread), or
    only their `rows` (indices into that concatenation, in the order given). Each result is allocated once and each
    shard's member is read from its file into its place (with `rows`: only the rows are read): memory is the result,
    never a second copy of a method's images, one shard or many."""
    from natinv.io import npz_shapes, read_into, read_rows

    files = [shard_npz(exp, teacher, method, shard) for shard in range(shards)]
    out = {}
    for key in keys:
        shapes = [npz_shapes(f, (key,))[key] for f in files]
        starts = np.cumsum([0, *(s[0][0] for s in shapes)])
        n = len(rows) if rows is not None else int(starts[-1])
        result = np.empty((n, *shapes[0][0][1:]), dtype=shapes[0][1])
        for f, start, end in zip(files, starts[:-1], starts[1:]):
            if rows is None:
                read_into(f, key, result[start:end])
            elif (mine := np.flatnonzero((rows >= start) & (rows < end))).size:
                result[mine] = read_rows(f, key, rows[mine] - start)  # only these rows are read
        out[key] = result
    return out


def kd_json(exp: Path, teacher: str, method: str, student: str) -> Path:
    return at(exp, KD["json"], teacher=teacher, method=method, student=student)


def kd_weights(exp: Path, teacher: str, method: str, student: str) -> Path:
    return at(exp, KD["weights"], teacher=teacher, method=method, student=student)


def metrics_json(exp: Path, teacher: str, method: str) -> Path:
    return at(exp, METRICS["json"], teacher=teacher, method=method)


def tsne_files(exp: Path, teacher: str) -> dict[str, Path]:
    return {ext: at(exp, template, teacher=teacher) for ext, template in TSNE.items()}


def scratch_json(exp: Path, teacher: str, method: str, student: str) -> Path:
    return at(exp, SCRATCH["json"], teacher=teacher, method=method, student=student)


def prune_json(exp: Path, teacher: str, method: str, ratio: float) -> Path:
    return at(exp, PRUNE["json"], teacher=teacher, method=method, ratio=f"{ratio:g}")


def report_dir(exp: Path) -> Path:
    return exp / "report"


def feature_cache(results: Path) -> Path:
    """Real images' features for torch-fidelity metrics, shared by experiments (named by the images' content)."""
    return results / "feature-cache"
