"""Stage `scratch`: a randomly initialised student trained only on a method's images and their synthesis labels
(method=real: as many real images with their labels), then scored on the real training and test sets (paper
Tables 2, 9)."""
from __future__ import annotations

from dataclasses import asdict

import torch

from natinv import paths
from natinv.config import Config
from natinv.runtime import derive_seed
from natinv.stages.common import choose, dataset, finish, new_model, schedule, test_scores, train, training_images
from natinv.tracking import Outcome
from natinv.train import cross_entropy_loss, evaluate


def run(cfg: Config, device: torch.device, teacher: str, method: str, student: str) -> Outcome:
    choose(student, cfg.models, "student")
    sc = cfg.scratch
    ds = dataset(cfg)
    x, y = training_images(cfg, ds, teacher, method, sc.real_images, "scratch-real")
    spec = cfg.models[student]
    model = new_model(ds, spec, derive_seed(cfg.seed, "scratch-student", teacher, method, student))
    run = train(model, x, y, cross_entropy_loss, schedule(sc, len(x)), ds, device,
                derive_seed(cfg.seed, "scratch-data", teacher, method, student), f"scratch {method}->{student}",
                cfg.engine.train_autocast)
    own = evaluate(model, x, y, device, (ds.mean, ds.std))
    n = len(ds.train_x) if sc.train_eval_images is None else min(sc.train_eval_images, len(ds.train_x))
    train_scores = evaluate(model, ds.train_x[:n], ds.train_y[:n], device, (ds.mean, ds.std))
    test = test_scores(model, ds, device)
    result = {"teacher": teacher, "method": method, "student": student, "model": asdict(spec), "images": len(x),
              "own_acc": own["acc"], "train_acc": train_scores["acc"], "train_loss": train_scores["loss"], "train_images": n,
              "test_acc": test["acc"], "test_loss": test["loss"], "epochs": run.history, "seconds": run.seconds,
              "settings": asdict(sc)}
    return finish(paths.scratch_json(cfg.exp_dir, teacher, method, student), result,
                  f"scratch {teacher}/{method} -> {student}: real train {train_scores['acc']:.2f} %, test {test['acc']:.2f} % "
                  f"(its own {len(x)} images: {own['acc']:.2f} %, {run.seconds:.0f} s)")
