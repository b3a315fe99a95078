"""Stage `prune`: L1 filter pruning of the teacher at a ratio (Torch-Pruning, channels removed), then fine-tuning on
a method's images; method=real: on as many real images; method=none: no fine-tuning (paper Fig. 6)."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch

from natinv import paths
from natinv.checkpoint import load_model
from natinv.config import Config
from natinv.distill import kd_loss
from natinv.errors import ConfigError
from natinv.runtime import derive_seed
from natinv.stages.common import dataset, finish, schedule, test_scores, train, training_images
from natinv.tracking import Outcome
from natinv.train import cross_entropy_loss


def run(cfg: Config, device: torch.device, teacher: str, method: str, ratio: float) -> Outcome:
    from natinv.prune import l1_filter_prune

    if not 0 < ratio < 1:
        raise ConfigError(f"ratio = {ratio}: expected the fraction of filters to remove, 0 < ratio < 1")
    pc = cfg.prune
    ds = dataset(cfg)
    t_model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    model = copy.deepcopy(t_model).cpu()  # pruned on the CPU; the unpruned teacher gives the soft targets
    start = time.perf_counter()
    pruned = l1_filter_prune(model, ratio, torch.zeros(1, meta.in_channels, meta.image_size, meta.image_size))
    model.to(device)
    history: list = []
    if method != "none":  # the accuracy before fine-tuning is the `none` job's (one 10k-image evaluation less here)
        x, y = training_images(cfg, ds, teacher, method, pc.real_images, "prune-real")
        loss = kd_loss(t_model, pc.temperature) if pc.targets == "teacher" else cross_entropy_loss
        history = train(model, x, y, loss, schedule(pc, len(x)), ds, device,
                        derive_seed(cfg.seed, "prune-data", teacher, method, f"{ratio:g}"), f"prune {ratio:g} {method}",
                        cfg.engine.train_autocast).history
    final = test_scores(model, ds, device)
    result = {"teacher": teacher, "method": method, "ratio": ratio, "test_acc": final["acc"], "test_loss": final["loss"],
              "fine_tuned": method != "none", **pruned, "epochs": history,
              "seconds": time.perf_counter() - start, "settings": asdict(pc)}
    return finish(paths.prune_json(cfg.exp_dir, teacher, method, ratio), result,
                  f"prune {teacher} {ratio:.0%} ({pruned['params_before']:,} -> {pruned['params_after']:,} parameters): "
                  + (f"{final['acc']:.2f} % after fine-tuning on {method}" if history else f"{final['acc']:.2f} % without fine-tuning"))
