"""The paper's Fig. 5 on a trained teacher: CE and BN loss per iteration for DeepInversion, NaturalInversion without
one-to-one (one-to-many) and NaturalInversion, at the paper's own budget and hyper-parameters.

    .venv/bin/python benchmarks/fig5_convergence.py --params params/default.yaml --batches 2 --batch-size 64 --iterations 2000 \
        --out benchmarks/fig5-default.jsonl [--only ni,di] [--threads 2]
    .venv/bin/python benchmarks/fig5_convergence.py --plot benchmarks/fig5-default.jsonl --png benchmarks/fig5-default.png
    .venv/bin/python benchmarks/fig5_convergence.py --batches 1 --iterations 1000 --only ni-clean-ftp,... \
        --out benchmarks/fig5-diagnosis.jsonl       # one change against `ni` each; plot with --first-batch --upto 1000

Each variant is a method config built from the schema's defaults (the paper's NI settings, NVlabs' DI settings) plus
the keys in VARIANTS; only the generator width is scaled with the teacher (`--generator-width`, the default profile's
16; the paper's 128 on CIFAR). One JSON line per variant: its settings, the CE and BN curves (mean over batches, and
per batch), the kept iteration, the teacher's agreement on the stored images, seconds per iteration. The plot draws
CE and BN against the iteration (log scale) for every variant in the file, the way Fig. 5 does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

import numpy as np

# name -> (kind, overrides of the schema defaults). The schema's defaults are the paper's NI and NVlabs' DI settings.
VARIANTS: dict[str, tuple[str, dict]] = {
    "di": ("deepinversion", {}),
    "ni-o2m": ("naturalinversion", {"o2o": False}),
    "ni": ("naturalinversion", {}),
    # the diagnosis: one change each against `ni`
    "ni-alpha-range": ("naturalinversion", {"alpha_mean": 3.75, "alpha_std": 0.75}),  # N(5, 1) x (1.5 / 2.0): FMNIST's / CIFAR's half range
    "ni-clean-ftp": ("naturalinversion", {"ftp_input": "clean", "priors_on": "clean"}),  # the paper's Alg. 1
    "ni-pytorch-init": ("naturalinversion", {"generator_init": "pytorch"}),
    "ni-head-at-lr-g": ("naturalinversion", {"lr_head": 1e-3}),
    "ni-lr-x10": ("naturalinversion", {"lr_generator": 1e-2, "lr_ftp": 5e-3}),
    "ni-w128": ("naturalinversion", {"generator_width": 128}),  # the paper's generator width
    "di-flip": ("deepinversion", {"flip": True}),
}


def run(args: argparse.Namespace) -> None:
    from natinv import paths
    from natinv.checkpoint import load_model
    from natinv.config import DIConfig, NIConfig, load_config
    from natinv.runtime import pick_device, set_threads
    from natinv.synthesis.shard import synthesize_shard

    cfg = load_config(args.params)
    set_threads(args.threads)
    device = pick_device(cfg.device)
    teacher_key = cfg.teacher.models[0]
    batch_size = args.batch_size or cfg.synthesis.batch_size
    syn = replace(cfg.synthesis, num_images=batch_size * args.batches, batch_size=batch_size, shards=1)
    for name in args.only.split(",") if args.only else VARIANTS:
        kind, overrides = VARIANTS[name]
        base = NIConfig(generator_width=args.generator_width) if kind == "naturalinversion" else DIConfig()
        method = replace(base, iterations=args.iterations, **overrides)
        teacher, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher_key), device)
        start = time.perf_counter()
        arrays, s, _ = synthesize_shard(teacher, meta, teacher_key, name, method, syn, cfg.seed, 0, device,
                                        log=lambda line: print(line, file=sys.stderr, flush=True))
        curves = arrays["loss_curves"]  # (batches, iterations, terms)
        terms = [str(t) for t in arrays["loss_terms"]]
        ce, bn = curves[:, :, terms.index("ce")], curves[:, :, terms.index("bn")]
        row = {"variant": name, "teacher": teacher_key, "batches": args.batches, "batch_size": syn.batch_size,
               "settings": asdict(method), "overrides": overrides,
               "ce": ce.mean(0).round(5).tolist(), "bn": bn.mean(0).round(5).tolist(),
               "ce_per_batch": ce.round(5).tolist(), "bn_per_batch": bn.round(5).tolist(),
               "best_iteration": arrays["best_iteration"].tolist(),
               "agree_f16": s["agreement_float16"], "agree_u8": s["agreement_uint8"],
               "s_per_iter": round(s["s_per_iter"], 4), "seconds": round(time.perf_counter() - start, 1)}
        if args.images:
            np.save(f"{args.images}-{name}.npy", arrays["images_uint8"][:64])
        print(json.dumps({k: v for k, v in row.items() if not k.startswith(("ce", "bn"))}), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def checkpoints(row: dict, at: tuple[int, ...], window: int = 50) -> dict:
    """CE and BN after `at` iterations: the mean of the `window` iterations up to each (the per-iteration values jump
    with the random jitter)."""
    return {f"{t}@{i}": round(float(np.mean(row[t][max(0, i - window):i])), 3) for t in ("ce", "bn") for i in at
            if i <= len(row[t])}


def plot(srcs: list[str], png: str, first_batch: bool = False, upto: int | None = None) -> None:
    """Every run of the jsonl files `srcs` on one figure; first_batch: batch 0's curves (the diagnosis runs have one
    batch; a longer run's first `upto` iterations are the same trajectory, Adam having no schedule)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for src in srcs for line in open(src)]
    for row in rows:
        for term in ("ce", "bn"):
            row[term] = (row[f"{term}_per_batch"][0] if first_batch else row[term])[:upto]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        style = "-" if row["variant"] in ("di", "ni", "ni-o2m") else ":"
        for ax, term in zip(axes, ("ce", "bn")):
            ax.plot(np.arange(1, len(row[term]) + 1), row[term], style, label=row["variant"], lw=1.2)
    for ax, title in zip(axes, ("cross-entropy", "BN statistics loss")):
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    what = "batch 0" if first_batch else f"mean of {rows[0]['batches']} batches"
    fig.suptitle(f"Fig. 5 on {rows[0]['teacher']}: {what} of {rows[0]['batch_size']} images, seed 0")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    for row in rows:
        print(row["variant"], checkpoints(row, tuple(i for i in (10, 100, 500, 1000, 2000) if i <= len(row["ce"]))), f"agreement {row['agree_f16']:.1f} / {row['agree_u8']:.1f} %",
              f"{row['s_per_iter']} s/it")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", action="append")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, help="default: synthesis.batch_size")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--generator-width", type=int, default=16)
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/fig5-default.jsonl")
    ap.add_argument("--images", help="save each variant's first 64 uint8 images as PREFIX-<variant>.npy")
    ap.add_argument("--plot", help="jsonl files written by runs, comma-separated: plot them instead of running")
    ap.add_argument("--first-batch", action="store_true", help="plot batch 0's curves, not the mean over batches")
    ap.add_argument("--upto", type=int, help="plot the first N iterations")
    ap.add_argument("--png", default="benchmarks/fig5-default.png")
    args = ap.parse_args()
    if args.plot:
        plot(args.plot.split(","), args.png, args.first_batch, args.upto)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
