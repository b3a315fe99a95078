"""Checks across keys, after the schema's types and bounds: names that must refer to defined models, methods and
teachers, reserved names, and method settings that need one another. `fail(key, message)` raises the one-line error
naming the file that set the key."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from natinv.config import seeds
from natinv.config.schema import Config
from natinv.synthesis import registry


# A name that becomes one part of a path (experiment, model, method keys): a letter or digit, then letters, digits,
# '.', '_', '-'; never '..', '/', empty or absolute.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "a letter or digit, then up to 99 letters, digits, '.', '_' or '-' (it becomes a folder or file name)"


def bad_name(value: object) -> bool:
    return not (isinstance(value, str) and NAME.fullmatch(value) and ".." not in value)


RESULTS_RULE = ("a folder path (relative to the working folder, or absolute) that is not the working folder, one of its "
                "parents or a file-system root, with no control characters, no leading '~' and no '$' (neither is "
                "expanded)")


def bad_results(value: object) -> bool:
    """Whether `results` could not hold experiments: not a plain path, or a folder whose experiments would be
    written among the project's own files (the working folder, a parent of it) or at a file-system root."""
    if not isinstance(value, str) or not value.strip() or value.startswith("~") or "$" in value:
        return True
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return True
    folder, here = Path(value).absolute().resolve(), Path.cwd().resolve()
    return folder == here or folder in here.parents or folder == Path(folder.anchor)


def check_names(cfg: Config, fail: Callable[[str, str], None]) -> None:
    """Every configured name that becomes a path part under results/, and the results folder itself."""
    if bad_name(cfg.experiment):
        fail("experiment", f"got {cfg.experiment!r}; expected {NAME_RULE}")
    if bad_results(cfg.results):
        fail("results", f"got {cfg.results!r}; expected {RESULTS_RULE}")
    for section, keys in (("models", cfg.models), ("synthesis.methods", cfg.synthesis.methods)):
        for key in keys:
            if bad_name(key):
                fail(f"{section}.{key}", f"bad key {key!r}; expected {NAME_RULE}")


def check_references(cfg: Config, fail: Callable[[str, str], None]) -> None:
    from natinv.models import ARCHS  # late import: models import torch

    check_names(cfg, fail)
    if ":" in (spec := cfg.metrics.inception.feature_extractor):  # before anything else runs: nothing of it imported
        from natinv.errors import ConfigError
        from natinv.imports import check_installed

        try:
            check_installed("metrics.inception.feature_extractor", spec)
        except ConfigError as exc:
            fail("metrics.inception.feature_extractor", str(exc).split(": ", 1)[1])

    for key, spec in cfg.models.items():
        if spec.arch not in ARCHS:
            fail(f"models.{key}.arch", f"got {spec.arch!r}; expected one of {', '.join(ARCHS)}")

    def known(keys: list[str], pool: dict | list, path: str, what: str) -> None:
        for i, k in enumerate(keys):
            if k not in pool:
                allowed = ", ".join(pool) or "(none defined)"
                fail(f"{path}[{i}]", f"got {k!r}; expected one of the {what}: {allowed}")

    known(cfg.teacher.models, cfg.models, "teacher.models", "keys of `models`")
    known(cfg.synthesis.run, cfg.synthesis.methods, "synthesis.run", "keys of synthesis.methods")
    known(cfg.kd.students, cfg.models, "kd.students", "keys of `models`")
    known(cfg.metrics.evaluators, cfg.models, "metrics.evaluators", "keys of `models`")
    known(cfg.scratch.students, cfg.models, "scratch.students", "keys of `models`")
    for method, teachers in cfg.synthesis.teachers.items():
        if method not in cfg.synthesis.methods:
            fail(f"synthesis.teachers.{method}", f"unknown method; expected keys of synthesis.methods: "
                      f"{', '.join(cfg.synthesis.methods) or '(none defined)'}")
        known(teachers, cfg.teacher.models, f"synthesis.teachers.{method}", "teachers (teacher.models)")
    for section, chosen in (("kd", cfg.kd.methods), ("scratch", cfg.scratch.methods), ("prune", cfg.prune.methods),
                            ("metrics.tsne", cfg.metrics.tsne.methods)):
        if chosen is not None:
            known(chosen, cfg.synthesis.run, f"{section}.methods", "methods run (synthesis.run)")
    if cfg.prune.teachers is not None:
        known(cfg.prune.teachers, cfg.teacher.models, "prune.teachers", "teachers (teacher.models)")
    for i, r in enumerate(cfg.prune.ratios):
        if not 0 < r < 1:
            fail(f"prune.ratios[{i}]", f"got {r!r}; expected a fraction of filters, 0 < ratio < 1")
    if cfg.data.dataset == "custom" and not cfg.data.path and not cfg.data.standin:
        fail("data.path", "missing: dataset 'custom' needs an image folder or an .npz file")
    if cfg.data.standin and cfg.data.dataset == "custom":
        fail("data.standin", "a stand-in imitates fashion-mnist, cifar10 or cifar100; dataset 'custom' has no fixed shape")
    for reserved, why in (("real", "the real-data reference rows"), ("none", "pruning without fine-tuning")):
        if reserved in cfg.synthesis.methods:
            fail(f"synthesis.methods.{reserved}", f"'{reserved}' is reserved for {why}")
    for key in cfg.synthesis.methods:
        if seeds.SUFFIX.fullmatch(key):
            fail(f"synthesis.methods.{key}", "a name ending in -seed<N> is reserved for seed replicas (`seeds`)")
    if cfg.seeds is not None and (any(s < 0 for s in cfg.seeds) or len(set(cfg.seeds)) != len(cfg.seeds)):
        fail("seeds", f"got {cfg.seeds!r}; expected distinct integers >= 0")
    syn = cfg.synthesis
    batches = -(-syn.num_images // syn.batch_size)
    if syn.shards > batches:
        fail("synthesis.shards", f"got {syn.shards}; at most {batches} (one batch per shard at least)")
    for key, n in syn.shards_per_job.items():
        if key not in syn.methods and key not in cfg.teacher.models:
            fail(f"synthesis.shards_per_job.{key}", f"unknown key; expected a key of synthesis.methods or a teacher "
                 f"(teacher.models): {', '.join([*syn.methods, *cfg.teacher.models])}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            fail(f"synthesis.shards_per_job.{key}", f"got {n!r}; expected a whole number of shards >= 1")
    if cfg.job_gpus > 1:
        fail("job_gpus", f"got {cfg.job_gpus}; a stage process uses one GPU, so a job with more would leave all but one "
             "idle: use 1, and give a cluster job several GPUs by grouping shards (synthesis.shards_per_job: each "
             "shard of the group runs on a GPU of its own)")
    for layer in cfg.metrics.tsne.layers:
        if not re.fullmatch(r"stage[1-9]\d*|embedding", layer):
            fail("metrics.tsne.layers", f"got {layer!r}; expected 'stageK' (K >= 1) or 'embedding'")
    for key, m in syn.methods.items():
        where, entry = f"synthesis.methods.{key}", registry.of(m)
        if m.cotrain is None and (why := entry.cotrain_reason(m)):
            fail(f"{where}.cotrain", f"missing: {why} trains a student while it synthesizes; set cotrain.student to a key of `models`")
        if m.cotrain is not None and m.cotrain.student not in cfg.models:
            fail(f"{where}.cotrain.student", f"got {m.cotrain.student!r}; expected one of the keys of `models`: "
                 f"{', '.join(cfg.models) or '(none defined)'}")
        entry.check(m, where, fail)
