"""Does an engine option keep the method's results? Synthesize one shard of a trained teacher with the default
engine and with each option, and compare the losses at the kept iteration, the teacher's agreement with the labels,
and the images (issue 7: options that change numerics, like bf16, need a measured quality check).

    .venv/bin/python benchmarks/engine_quality.py --params params/default.yaml --method ni \
        --option autocast=bf16 --option channels_last=false --option batches_per_step=2

Needs the params' teacher (results/<experiment>/teachers/<teacher>.safetensors, from `snakemake` or
`python -m natinv teacher`). Prints one JSON line per engine.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

import numpy as np
import torch
import yaml

from natinv import paths
from natinv.checkpoint import load_model
from natinv.config import EngineConfig, load_config
from natinv.runtime import reuse_host_memory, set_threads
from natinv.synthesis.shard import synthesize_shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/default.yaml")
    ap.add_argument("--method", default="ni")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--option", action="append", default=[], help="key=value of EngineConfig, one engine each")
    args = ap.parse_args()
    set_threads(args.threads)
    reuse_host_memory()
    cfg = load_config([args.params], [])
    teacher = cfg.teacher.models[0]
    device = torch.device("cpu")
    engines = [("default", EngineConfig())]
    for text in args.option:
        key, value = text.split("=", 1)
        engines.append((text, replace(EngineConfig(), **{key: yaml.safe_load(value)})))
    reference = None
    for name, engine in engines:
        model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
        arrays, summary, _ = synthesize_shard(model, meta, teacher, args.method, cfg.synthesis.methods[args.method],
                                           cfg.synthesis, cfg.seed, args.shard, device, log=lambda _: None, engine=engine)
        images = arrays["images"].astype(np.float32)
        reference = images if reference is None else reference
        print(json.dumps({"engine": name, "settings": asdict(engine), "s_per_iter": summary["s_per_iter"],
                          "final": summary["final"], "agreement_float16": summary["agreement_float16"],
                          "agreement_uint8": summary["agreement_uint8"],
                          "images_max_abs_diff_vs_default": float(np.abs(images - reference).max()),
                          "images_mean_abs_diff_vs_default": float(np.abs(images - reference).mean())}), flush=True)


if __name__ == "__main__":
    main()
