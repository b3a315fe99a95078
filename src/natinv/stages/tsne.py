"""Stage `tsne`: t-SNE of the teacher's features at each configured layer for real training images and every
method's images, embedded jointly (paper Figs. 4, 7): coordinates (npz), a figure (png) and a summary (json)."""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from natinv import data, figures, paths, plan
from natinv.checkpoint import load_model
from natinv.config import Config
from natinv.errors import ConfigError
from natinv.io import write_npz
from natinv.runtime import derive_seed
from natinv.stages.common import dataset, finish, synthesized_count
from natinv.palette import color_of, method_colors
from natinv.tracking import Outcome


def run(cfg: Config, device: torch.device, teacher: str) -> Outcome:
    from natinv.metrics import layer_features, tsne_2d

    tc = cfg.metrics.tsne
    start = time.perf_counter()
    ds = dataset(cfg)
    model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    for layer in tc.layers:
        if layer != "embedding" and int(layer[5:]) > len(model.stages):
            raise ConfigError(f"metrics.tsne.layers: {layer!r}, but teacher {teacher} has {len(model.stages)} stages "
                              f"(stage1..stage{len(model.stages)})")
    counts = {m: synthesized_count(cfg, teacher, m) for m in plan.tsne_methods(cfg, teacher)}
    n = min([tc.images, *counts.values()])  # equal sets: no group dominates the picture
    sets = {"real": data.real_subset(ds, n, derive_seed(cfg.seed, "tsne-real"))[0]}
    for m, count in counts.items():  # only the n images it embeds are read of a method's shards
        rows = torch.randperm(count, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, f"tsne-{m}")))[:n]
        sets[m] = torch.from_numpy(paths.read_shards(cfg.exp_dir, teacher, m, cfg.shards_of(m), ("images",),
                                                     rows.numpy())["images"])
    feats = [layer_features(model, x, device, tc.layers) for x in sets.values()]
    group = np.concatenate([np.full(len(x), i) for i, x in enumerate(sets.values())])
    coords = {layer: tsne_2d(np.concatenate([f[layer] for f in feats]), derive_seed(cfg.seed, "tsne"), tc.perplexity)
              for layer in tc.layers}
    out = paths.tsne_files(cfg.exp_dir, teacher)
    write_npz(out["npz"], {**coords, "group": group, "group_names": np.asarray(list(sets))})
    palette = method_colors(cfg)
    colors = [color_of(palette, name) for name in sets]
    figures.scatter_panels({f"{teacher}: {layer}": {name: c[group == i] for i, name in enumerate(sets)} for layer, c in coords.items()},
                           colors, out["png"])
    result = {"teacher": teacher, "images": {k: len(v) for k, v in sets.items()}, "layers": tc.layers,
              "seconds": time.perf_counter() - start, "settings": asdict(tc)}
    return finish(out["json"], result, f"tsne {teacher}: {', '.join(f'{k} {len(v)}' for k, v in sets.items())} images at {', '.join(tc.layers)} "
                  f"({result['seconds']:.0f} s)", [out["png"]])
