"""Tune a synthesis method's default for a budget: one or more batches per setting on a trained teacher.

    .venv/bin/python benchmarks/sweep_synthesis.py --params params/default.yaml --method ni \
        --grid lr_generator=1e-3,1e-2 lambda_bn=3,10 [--batches 1] [--iterations 200] [--out FILE.jsonl]

Prints one JSON line per setting: final CE / BN at the kept iteration, teacher agreement on the stored
float16 tensors and on the uint8 rendering, seconds per iteration.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace

import yaml

from natinv import paths
from natinv.checkpoint import load_model
from natinv.config import load_config
from natinv.runtime import pick_device, set_threads
from natinv.synthesis.shard import synthesize_shard


def grid_value(text: str):
    """A grid value as YAML reads it, except that a number YAML 1.1 leaves a string ("1e-2": no dot) is a float."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", action="append", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--teacher")
    ap.add_argument("--grid", nargs="*", default=[], help="key=v1,v2,... over the method's settings")
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    cfg = load_config(args.params)
    set_threads(args.threads)
    device = pick_device(cfg.device)
    teacher_key = args.teacher or cfg.teacher.models[0]
    base = cfg.synthesis.methods[args.method]
    if args.iterations:
        base = replace(base, iterations=args.iterations)
    axes = [(k, [grid_value(v) for v in vals.split(",")]) for k, _, vals in (g.partition("=") for g in args.grid)]
    syn = replace(cfg.synthesis, num_images=cfg.synthesis.batch_size * args.batches, shards=1)
    for values in itertools.product(*[v for _, v in axes]):
        setting = dict(zip([k for k, _ in axes], values))
        method = replace(base, **setting)
        teacher, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher_key), device)
        _, s, _ = synthesize_shard(teacher, meta, teacher_key, args.method, method, syn, cfg.seed, 0, device, log=lambda _: None)
        row = {"method": args.method, **setting, "iterations": method.iterations, "images": s["images"],
               "ce": round(s["final"]["ce"], 4), "bn": round(s["final"]["bn"], 4),
               "agree_f16": s["agreement_float16"], "agree_u8": s["agreement_uint8"], "s_per_iter": round(s["s_per_iter"], 4)}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
