"""Stage `synthesize`: one shard of (teacher, method) (natinv.synthesis.shard, which refuses non-finite results),
written as arrays (npz), a summary (json) and a class grid (png)."""
from __future__ import annotations

from pathlib import Path

import torch

from natinv import figures, paths, tracking
from natinv.checkpoint import load_model
from natinv.config import Config
from natinv.data import render_uint8
from natinv.errors import ConfigError, NatinvError
from natinv.integrity import verify_npz
from natinv.io import atomic_write_json, read_json, remove_stale_temps, write_npz
from natinv.runtime import log
from natinv.stages.common import choose, new_model, student_seed
from natinv.synthesis import registry
from natinv.synthesis.progress import Progress
from natinv.synthesis.shard import synthesize_shard
from natinv.tracking import Outcome

# a shard's per-batch loss curves as the arrays it stores them under: MLflow's curves.npz when they are too many for
# metric rows (tracking.live_curve_points)
CURVE_ARRAYS = ("loss_curves", "loss_terms", "batch_index", "best_iteration")


def check_shard(cfg: Config, method: str, shard: int) -> None:
    choose(method, cfg.job_methods, "method")
    shards = cfg.shards_of(method)
    if not 0 <= shard < shards:
        why = "it trains a student while it synthesizes" if cfg.cotrained(method) else f"synthesis.shards = {shards}"
        raise ConfigError(f"shard = {shard}: method {method} has {shards} shard(s), 0..{shards - 1} ({why})")


def job_digest(cfg: Config, teacher: str, method: str, shard: int) -> str:
    from natinv.pipeline import STAGES

    return STAGES["synthesize"].digest(cfg, {"teacher": teacher, "method": method, "shard": str(shard)})


def is_done(cfg: Config, teacher: str, method: str, shard: int) -> bool:
    """Whether the shard's files are all there and were made from these parameters and this code (its JSON's `job`)."""
    files = [paths.at(cfg.exp_dir, t, teacher=teacher, method=method, shard=shard) for t in paths.SHARD.values()]
    if not all(f.is_file() for f in files):
        return False
    try:
        made_from = read_json(paths.shard_json(cfg.exp_dir, teacher, method, shard)).get("job")
        verify_npz(paths.shard_npz(cfg.exp_dir, teacher, method, shard))
    except NatinvError:  # damaged, truncated or edited since it was written: made again
        return False
    return made_from == job_digest(cfg, teacher, method, shard)


def remove_extra_shards(cfg: Config, teacher: str, method: str) -> list[Path]:
    """Delete the files of shards beyond the method's shard count (left by a run with more shards) in its folder."""
    folder = paths.at(cfg.exp_dir, paths.SYNTH_DIR, teacher=teacher, method=method)
    extra = [f for f in folder.glob("shard-*.*") if (n := f.name.split(".")[0][6:]).isdigit() and int(n) >= cfg.shards_of(method)]
    for f in extra:
        f.unlink()
    return extra


def run(cfg: Config, device: torch.device, teacher: str, method: str, shard: int) -> Outcome:
    check_shard(cfg, method, shard)
    model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    co = cfg.cotrained(method)
    student = None if co is None else new_model(meta, cfg.models[co.student], student_seed(cfg, teacher, method, co.student))
    method_cfg = cfg.job_methods[method]
    has_meta = registry.meta_of(method_cfg) is not None
    digest = job_digest(cfg, teacher, method, shard)
    batches = -(-cfg.synthesis.num_images // cfg.synthesis.batch_size)
    live = registry.of(method_cfg).generative or tracking.live_curves(cfg, batches * method_cfg.iterations)
    progress = Progress(paths.shard_progress(cfg.exp_dir, teacher, method, shard), digest,
                        60 * cfg.engine.save_every_minutes, log)
    for stale in remove_stale_temps(progress.path):
        log(f"removed {stale}, left by an interrupted run")
    if cfg.engine.capture and device.type != "cuda":
        log(f"engine.capture: CUDA graphs need a CUDA device; on {device.type} the static iteration runs uncaptured "
            f"(the same results, no speed-up)")
    arrays, summary, series = synthesize_shard(model, meta, teacher, method, method_cfg, cfg.synthesis,
                                               cfg.seed, shard, device, student, log=log, engine=cfg.engine,
                                               meta_path=paths.meta_weights(cfg.exp_dir, teacher, method) if has_meta else None,
                                               progress=progress, live_curves=live)
    summary["job"] = digest  # a re-run of every shard keeps this one while it matches
    npz = paths.shard_npz(cfg.exp_dir, teacher, method, shard)
    write_npz(npz, arrays)
    atomic_write_json(paths.shard_json(cfg.exp_dir, teacher, method, shard), summary)
    log(f"{teacher}/{method} shard {shard}: {summary['images']} images in {summary['seconds']:.0f} s; teacher agreement "
        f"{summary['agreement_float16']:.1f} % (stored tensors), {summary['agreement_uint8']:.1f} % (uint8 rendering)")
    grid = npz.with_suffix(".png")
    shown = figures.grid_indices(arrays["labels"], meta.num_classes)
    rendered = render_uint8(torch.from_numpy(arrays["images"][shown]), meta.mean, meta.std, cfg.synthesis.save_scaling)
    figures.save_png(figures.class_grid(rendered.numpy(), arrays["labels"][shown], meta.num_classes), grid)
    progress.clear()
    curves = {} if live else {"curves.npz": {k: arrays[k] for k in CURVE_ARRAYS}}
    return Outcome(summary, series, [paths.shard_json(cfg.exp_dir, teacher, method, shard)], curves, {"grid.png": grid})
