"""Stage `data`: the dataset as canonical uint8 arrays and a manifest."""
from __future__ import annotations

import time

import torch

from natinv import data, paths
from natinv.config import Config
from natinv.runtime import log
from natinv.tracking import Outcome


def run(cfg: Config, device: torch.device) -> Outcome:
    start = time.perf_counter()
    manifest = data.prepare(cfg.data, paths.data_dir(cfg.exp_dir))
    log(f"data: {manifest['dataset']} from {manifest['source']}: {manifest['train_images']} train / "
        f"{manifest['test_images']} test images, {manifest['num_classes']} classes ({time.perf_counter() - start:.0f} s)")
    return Outcome({k: v for k, v in manifest.items() if k != "sha256"}, artifacts=[paths.at(cfg.exp_dir, paths.DATA["manifest"])])
