"""Which jobs a params stack asks for: every (teacher, method, student, ratio) combination each stage runs.

Snakemake's final targets, the generated dvc.yaml and the report all read these lists, so the three agree on what a
run contains. The selectors: `synthesis.teachers` (a method inverts only those teachers), `kd.methods`,
`scratch.methods`, `prune.methods`, `prune.teachers` and `metrics.tsne.methods` (null = all); `real` (and `none` for pruning) are the
reference rows every teacher gets. With several `seeds`, every synthesis and application job also runs at each other
seed, as a job of its own (natinv.config.seeds): `ni-seed1`, `real-seed1`; `none` and the metrics' `real` floor do not
depend on a seed.
"""
from __future__ import annotations

from natinv.config import Config
from natinv.config.seeds import replicated


def methods_of(cfg: Config, teacher: str) -> list[str]:
    """The synthesis methods run from `teacher`, in synthesis.run order."""
    return [m for m in cfg.synthesis.run if teacher in cfg.synthesis.teachers.get(m, cfg.teacher.models)]


def tsne_methods(cfg: Config, teacher: str) -> list[str]:
    """The methods whose images the t-SNE of `teacher` embeds beside real images."""
    return _chosen(cfg.metrics.tsne.methods, methods_of(cfg, teacher))


def _chosen(selected: list[str] | None, ran: list[str]) -> list[str]:
    return ran if selected is None else [m for m in ran if m in selected]


def synthesis_jobs(cfg: Config) -> list[tuple[str, str, int]]:
    """(teacher, method, shard) of every synthesize job."""
    return [(t, m, s) for t in cfg.teacher.models for m in replicated(methods_of(cfg, t), cfg.extra_seeds)
            for s in range(cfg.shards_of(m))]


def batch_plan(num_images: int, batch_size: int, shards: int) -> list[list[tuple[int, int]]]:
    """For every shard, its batches as (global batch index, batch size); the last batch may be smaller."""
    n_batches = -(-num_images // batch_size)
    sizes = [min(batch_size, num_images - i * batch_size) for i in range(n_batches)]
    bounds = [s * n_batches // shards for s in range(shards + 1)]
    return [[(i, sizes[i]) for i in range(bounds[s], bounds[s + 1])] for s in range(shards)]


def meta_jobs(cfg: Config) -> list[tuple[str, str]]:
    """(teacher, method) of every meta job: the warm-up of each method that starts from meta-parameters (ni-fast)."""
    from natinv.synthesis import registry

    return [(t, m) for t in cfg.teacher.models for m in replicated(methods_of(cfg, t), cfg.extra_seeds)
            if registry.meta_of(cfg.job_methods[m]) is not None]


def kd_jobs(cfg: Config) -> list[tuple[str, str, str]]:
    """(teacher, method or real, student) of every kd job."""
    return [(t, m, s) for t in cfg.teacher.models
            for m in replicated([*_chosen(cfg.kd.methods, methods_of(cfg, t)), "real"], cfg.extra_seeds) for s in cfg.kd.students]


def metrics_jobs(cfg: Config) -> list[tuple[str, str]]:
    """(teacher, method or real) of every metrics job: every method run, and held-out real images."""
    return [(t, m) for t in cfg.teacher.models for m in [*replicated(methods_of(cfg, t), cfg.extra_seeds), "real"]]


def scratch_jobs(cfg: Config) -> list[tuple[str, str, str]]:
    """(teacher, method or real, student) of every scratch job (none without scratch.students)."""
    return [(t, m, s) for t in cfg.teacher.models
            for m in replicated([*_chosen(cfg.scratch.methods, methods_of(cfg, t)), "real"], cfg.extra_seeds)
            for s in cfg.scratch.students]


def prune_jobs(cfg: Config) -> list[tuple[str, str, float]]:
    """(teacher, method or real or none, ratio) of every prune job (none without prune.ratios)."""
    teachers = cfg.teacher.models if cfg.prune.teachers is None else cfg.prune.teachers
    return [(t, m, r) for t in teachers
            for m in [*replicated([*_chosen(cfg.prune.methods, methods_of(cfg, t)), "real"], cfg.extra_seeds), "none"]
            for r in cfg.prune.ratios]
