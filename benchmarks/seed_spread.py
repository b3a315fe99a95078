"""Where a method's KD spread over seeds comes from: the images or the student's training.

    .venv/bin/python benchmarks/seed_spread.py --exp results/default --methods ni di --kd-seeds 0 1 2 \
        [--variant plain clamp] [--epochs 30] [--batch-size 128] [--jobs 2] [--out FILE.jsonl]

Reads a finished run with `seeds: [0, 1, 2]` (the synthesized images of `ni`, `ni-seed1`, `ni-seed2`, ...; its
teacher and data) and distils the kd section's first student once per (image seed, kd seed, variant): the image
seed picks the synthesized set, the kd seed the student's initialization and data order, drawn as the kd job of that
seed draws them (equal image and kd seeds repeat the pipeline's own student). A spread across image sets at a fixed
kd seed is the images'; across kd seeds on one image set, the training's. Variants: `plain` (what the kd stage trains
on), `clamp` (every pixel clamped to the data's valid range [(0 - mean) / std, (1 - mean) / std] first). Also
prints, per image set, the share of pixels outside that range and the teacher's agreement with the labels per batch.
One JSON line per result (appended to --out).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path

import torch

from natinv import data, paths
from natinv.checkpoint import load_model
from natinv.config import load_config, seeds
from natinv.distill import kd_loss
from natinv.runtime import derive_seed, set_threads
from natinv.stages.common import load_synthesized, new_model, schedule, test_scores
from natinv.train import SGDSchedule, fit


def valid_range(ds: data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def image_stats(cfg, ds, teacher_key: str, method: str) -> dict:
    x, y = load_synthesized(cfg, teacher_key, method)
    lo, hi = valid_range(ds)
    xf = x.float()
    t_model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher_key), torch.device("cpu"))
    with torch.no_grad():
        pred = torch.cat([t_model(xf[i:i + 256]).argmax(1) for i in range(0, len(xf), 256)])
    batch = cfg.synthesis.batch_size
    agree = [(pred[i:i + batch] == y[i:i + batch]).float().mean().item() * 100 for i in range(0, len(y), batch)]
    return {"method": method, "below_range": (xf < lo).float().mean().item(), "above_range": (xf > hi).float().mean().item(),
            "min": xf.min().item(), "max": xf.max().item(), "agreement_per_batch": [round(a, 1) for a in agree],
            "classes": torch.bincount(y, minlength=ds.num_classes).tolist()}


def distil(job: tuple) -> dict:
    params, teacher_key, method, kd_seed, variant, epochs, batch_size = job
    set_threads(1)
    cfg = load_config(params)
    ds = data.load(paths.data_dir(cfg.exp_dir))
    x, y = load_synthesized(cfg, teacher_key, method)
    if variant == "clamp":
        lo, hi = valid_range(ds)
        x = torch.maximum(torch.minimum(x.float(), hi), lo).half()
    t_model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher_key), torch.device("cpu"))
    student = cfg.kd.students[0]
    base = seeds.split(method)[0]
    name = base if kd_seed == cfg.seed else seeds.replica(base, kd_seed)  # as the kd job of that seed names it
    model = new_model(ds, cfg.models[student], derive_seed(kd_seed, "student", teacher_key, name, student))
    sched = schedule(cfg.kd, len(x))
    sched = SGDSchedule(epochs or sched.epochs, batch_size or sched.batch_size, sched.lr, sched.momentum, sched.weight_decay)
    history = fit(model, x, y, kd_loss(t_model, cfg.kd.temperature), sched, torch.device("cpu"),
                  derive_seed(kd_seed, "kd-data", teacher_key, name, student), normalization=(ds.mean, ds.std))
    acc = test_scores(model, ds, torch.device("cpu"))["acc"]
    return {"method": base, "images": method, "kd_seed": kd_seed, "variant": variant, "epochs": sched.epochs, "batch_size": sched.batch_size,
            "test_acc": acc, "final_train_loss": history[-1]["train_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exp", required=True, help="a finished run's results/{experiment} (its params.yaml is read)")
    ap.add_argument("--methods", nargs="+", default=["ni", "di"])
    ap.add_argument("--image-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--kd-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variant", nargs="+", default=["plain"], choices=["plain", "clamp"])
    ap.add_argument("--epochs", type=int, help="KD epochs (default: the run's kd.epochs)")
    ap.add_argument("--batch-size", type=int, help="KD batch size (default: the run's kd.batch_size)")
    ap.add_argument("--diagonal", action="store_true", help="only equal image and kd seeds (the pipeline's own pairs)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    params = [str(Path(args.exp) / "params.yaml")]
    cfg = load_config(params)
    teacher_key = cfg.teacher.models[0]
    ds = data.load(paths.data_dir(cfg.exp_dir))
    image_sets = [m if s == cfg.seed else seeds.replica(m, s) for m in args.methods for s in args.image_seeds]
    out = open(args.out, "a") if args.out else None

    def emit(row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    for method in image_sets:
        emit({"stats": image_stats(cfg, ds, teacher_key, method)})
    jobs = [(params, teacher_key, m, k, v, args.epochs, args.batch_size) for v in args.variant for m in image_sets
            for k in args.kd_seeds if not args.diagonal or k == (seeds.split(m)[1] or cfg.seed)]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for row in pool.imap_unordered(distil, jobs):
            emit(row)


if __name__ == "__main__":
    sys.exit(main())
