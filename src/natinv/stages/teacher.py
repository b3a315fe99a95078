"""Stages `teacher` and `evaluator`: a classifier trained on the real training set, either a teacher to invert or an
independent network whose embedding judges the images (metrics); and bringing a teacher trained elsewhere."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from natinv import data, paths
from natinv.checkpoint import ModelMeta, import_torch_checkpoint, save_model
from natinv.config import Config
from natinv.runtime import derive_seed, log
from natinv.stages.common import choose, dataset, dataset_meta, finish, new_model, test_scores, train
from natinv.tracking import Outcome
from natinv.train import SGDSchedule, cross_entropy_loss


def run_teacher(cfg: Config, device: torch.device, teacher: str) -> Outcome:
    return _train_classifier(cfg, teacher, device, "teacher")


def run_evaluator(cfg: Config, device: torch.device, evaluator: str) -> Outcome:
    return _train_classifier(cfg, evaluator, device, "evaluator")


def _train_classifier(cfg: Config, key: str, device: torch.device, role: str) -> Outcome:
    """Train models[key] on the real training set with the `teacher` recipe; its seeds and folder are the role's."""
    allowed, weights, json_path = {
        "teacher": (cfg.teacher.models, paths.teacher_weights, paths.teacher_json),
        "evaluator": (cfg.metrics.evaluators, paths.evaluator_weights, paths.evaluator_json),
    }[role]
    choose(key, allowed, role)
    ds = dataset(cfg)
    spec, tc = cfg.models[key], cfg.teacher
    model = new_model(ds, spec, derive_seed(cfg.seed, role, key))
    x = ds.train_x  # uint8: each batch is normalized where it is used (a float32 copy of the set is 4x its size)
    sched = SGDSchedule(tc.epochs, tc.batch_size, tc.lr, tc.momentum, tc.weight_decay, tc.warmup_epochs)
    run = train(model, x, ds.train_y, cross_entropy_loss, sched, ds, device, derive_seed(cfg.seed, f"{role}-data", key),
                f"{role} {key}", cfg.engine.train_autocast)
    final = test_scores(model, ds, device)
    save_model(weights(cfg.exp_dir, key), model, dataset_meta(ds, spec))
    result = {role: key, "model": asdict(spec), "dataset": ds.name, "test_acc": final["acc"], "test_loss": final["loss"],
              "train_images": len(x), "test_images": len(ds.test_x), "epochs": run.history, "seconds": run.seconds,
              "settings": asdict(tc), "device": str(device)}
    return finish(json_path(cfg.exp_dir, key), result, f"{role} {key}: test accuracy {final['acc']:.2f} % in {run.seconds:.0f} s")


def run_import(cfg: Config, teacher: str, checkpoint: Path) -> None:
    """Bring a teacher trained elsewhere: a PyTorch state_dict for models[teacher], loaded with weights_only=True."""
    choose(teacher, cfg.models, "teacher")
    m = data.read_manifest(paths.data_dir(cfg.exp_dir))  # the checkpoint takes the dataset's shape
    spec = cfg.models[teacher]
    meta = ModelMeta(spec.arch, m["num_classes"], m["in_channels"], m["image_size"], spec.width, m["mean"], m["std"])
    import_torch_checkpoint(checkpoint, meta, paths.teacher_weights(cfg.exp_dir, teacher))
    log(f"imported {checkpoint} as teacher {teacher} ({spec.arch})")
