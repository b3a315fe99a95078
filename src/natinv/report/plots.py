"""The report's figures: image grids, loss curves, accuracy curves (PNG under figures/) and the same curves as CSV
under plots/ (DVC plots)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from natinv import figures, paths, plan
from natinv.config import Config
from natinv.io import atomic_write_bytes, read_npz, read_rows
from natinv.palette import color_of, method_colors
from natinv.report import charts
from natinv.report.collect import read_if_present
from natinv.report.identity import fig5_methods
from natinv.synthesis import registry
from natinv.synthesis.objective import TERMS
from natinv.train import EPOCH_EVAL_IMAGES


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_figures(cfg: Config, summary: dict, manifest: dict) -> dict[str, str]:
    """Image grids, loss curves, accuracy curves (PNG under figures/) and the same curves as CSV under plots/ (DVC plots)."""
    fig_dir = paths.at(cfg.exp_dir, paths.REPORT["figures"])
    made: dict[str, str] = {}
    n_classes = manifest["num_classes"]
    test = read_npz(paths.at(cfg.exp_dir, paths.DATA["test"]), ("images", "labels"))
    real_grid = figures.class_grid(test["images"], test["labels"], n_classes)
    class_names = manifest.get("classes") or [str(k) for k in range(n_classes)]
    colors = method_colors(cfg)
    for t in cfg.teacher.models:
        grids = {"real (test images)": real_grid}
        loss_panels: dict[str, dict[str, np.ndarray]] = {"cross-entropy (CE) per batch": {}, "BN-statistics term per batch": {}}
        for m in plan.methods_of(cfg, t):
            if f"{t}/{m}" not in summary["synthesis"]:
                continue
            shard0 = paths.shard_npz(cfg.exp_dir, t, m, 0)  # its grid's images only (a one-shard method holds them all)
            labels = read_npz(shard0, ("labels",))["labels"]
            shown = figures.grid_indices(labels, n_classes)
            grids[m] = figures.class_grid(read_rows(shard0, "images_uint8", shown), labels[shown], n_classes)
            if registry.of(cfg.synthesis.methods[m]).generative:  # a generator's training curve, not an inversion's (in MLflow)
                continue
            curves = paths.read_shards(cfg.exp_dir, t, m, cfg.shards_of(m), ("loss_curves",))["loss_curves"]  # (batches, iterations, terms)
            loss_panels["cross-entropy (CE) per batch"][m] = curves[:, :, TERMS.index("ce")]
            loss_panels["BN-statistics term per batch"][m] = curves[:, :, TERMS.index("bn")]
            _write_csv(charts.loss_csv(cfg, t, m), ["iteration", *TERMS, "method"],
                       [[i + 1, *(f"{v:.6g}" for v in row), m] for i, row in enumerate(curves.mean(0))])
        if len(grids) > 1:
            figures.grids_side_by_side(grids, class_names, manifest["image_size"], fig_dir / f"grids-{t}.png")
            made[f"grids/{t}"] = f"figures/grids-{t}.png"
        if loss_panels["cross-entropy (CE) per batch"]:
            figures.curve_plot(loss_panels, fig_dir / f"loss-{t}.png", "iteration", log_y=True, colors=colors)
            made[f"loss/{t}"] = f"figures/loss-{t}.png"
        if fig5 := fig5_methods(cfg, list(loss_panels["cross-entropy (CE) per batch"])):
            figures.curve_plot({title: {label: lines[m] for label, m in fig5.items()} for title, lines in loss_panels.items()},
                               fig_dir / f"fig5-{t}.png", "iteration", log_y=True,
                               colors={label: color_of(colors, m) for label, m in fig5.items()})
            made[f"fig5/{t}"] = f"figures/fig5-{t}.png"
        tsne_png = paths.tsne_files(cfg.exp_dir, t)["png"]
        if t in summary["tsne"] and tsne_png.is_file():
            atomic_write_bytes(fig_dir / f"tsne-{t}.png", tsne_png.read_bytes())
            made[f"tsne/{t}"] = f"figures/tsne-{t}.png"
        curves = {m: [(float(k.split("/")[2]), v["test_acc"]) for k, v in summary["prune"].items() if k.startswith(f"{t}/{m}/")]
                  for m in dict.fromkeys(m for pt, m, _ in plan.prune_jobs(cfg) if pt == t)}
        if any(curves.values()):
            figures.xy_plot({m: c for m, c in curves.items() if c}, fig_dir / f"prune-{t}.png", "pruning ratio (filters removed)",
                            "test accuracy (%)", f"{t}: L1 filter pruning, fine-tuned on each method's images", colors)
            made[f"prune/{t}"] = f"figures/prune-{t}.png"
        acc: dict[str, np.ndarray] = {}
        for name, m, path in charts.trained_curves(cfg, t):
            if (j := read_if_present(path)) is None or not j["epochs"]:
                continue
            acc[name] = np.asarray([_epoch_acc(e) for e in j["epochs"]])
            colors[name] = color_of(colors, m)
            _write_csv(charts.accuracy_csv(cfg, name), ["epoch", "train_loss", "test_acc", "method"],
                       [[e["epoch"], f"{e['train_loss']:.6g}", f"{_epoch_acc(e):.4g}", m] for e in j["epochs"]])
        kd_only = {k: v for k, v in acc.items() if k.startswith("KD")}
        if kd_only:
            figures.curve_plot({f"student accuracy (%) on the first {EPOCH_EVAL_IMAGES:,} test images": kd_only},
                               fig_dir / f"kd-{t}.png", "epoch", colors=colors)
            made[f"kd/{t}"] = f"figures/kd-{t}.png"
    return made


def _epoch_acc(record: dict) -> float:
    """An epoch record's test accuracy on the subset of test images (the one `test_acc...` entry: its name says which)."""
    (value,) = [v for k, v in record.items() if k.startswith("test_acc")]
    return value
