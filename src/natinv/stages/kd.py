"""Stage `kd`: a student distilled from a method's images with the teacher's soft targets (method=real: from as many
real images); for the student a method trained while it synthesized (ADI, DAFL, DFAD), that student, scored here."""
from __future__ import annotations

from dataclasses import asdict

import torch

from natinv import paths
from natinv.checkpoint import load_model, save_model
from natinv.config import Config
from natinv.distill import kd_loss
from natinv.errors import NatinvError
from natinv.io import read_json, read_npz
from natinv.runtime import derive_seed
from natinv.stages.common import (choose, dataset, dataset_meta, finish, new_model, schedule, student_seed, test_scores,
                                  train, training_images)
from natinv.tracking import Outcome


def run(cfg: Config, device: torch.device, teacher: str, method: str, student: str) -> Outcome:
    choose(student, cfg.models, "student")
    kc = cfg.kd
    ds = dataset(cfg)
    t_model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    if (meta.num_classes, meta.in_channels, meta.image_size) != (ds.num_classes, ds.in_channels, ds.image_size):
        raise NatinvError(f"teacher {teacher} expects {meta.in_channels}x{meta.image_size}px, {meta.num_classes} classes; "
                          f"the dataset has {ds.in_channels}x{ds.image_size}px, {ds.num_classes} classes")
    spec = cfg.models[student]
    model = new_model(ds, spec, student_seed(cfg, teacher, method, student))
    co = cfg.cotrained(method)
    if co is not None and co.student == student:  # the synthesized images are not read: the student is trained
        history, seconds, extra = [], 0.0, {"cotrained": _adopt_cotrained(cfg, teacher, method, student, model)}
        images = extra["cotrained"].pop("images")
    else:
        x, y = training_images(cfg, ds, teacher, method, kc.real_images, "kd-real")
        images = len(x)
        run = train(model, x, y, kd_loss(t_model, kc.temperature), schedule(kc, len(x)), ds, device,
                    derive_seed(cfg.seed, "kd-data", teacher, method, student), f"kd {method}->{student}",
                    cfg.engine.train_autocast)
        history, seconds, extra = run.history, run.seconds, {"settings": asdict(kc)}
    final = test_scores(model, ds, device)
    save_model(paths.kd_weights(cfg.exp_dir, teacher, method, student), model, dataset_meta(ds, spec))
    result = {"teacher": teacher, "method": method, "student": student, "model": asdict(spec), "images": images,
              "test_acc": final["acc"], "test_loss": final["loss"], "epochs": history, "seconds": seconds,
              **extra, "device": str(device)}
    how = "trained while synthesizing" if "cotrained" in extra else f"{images} images"
    return finish(paths.kd_json(cfg.exp_dir, teacher, method, student), result,
                  f"kd {teacher}/{method} -> {student}: test accuracy {final['acc']:.2f} % ({how}, {seconds:.0f} s)")


def _adopt_cotrained(cfg: Config, teacher: str, method: str, student: str, model: torch.nn.Module) -> dict:
    """Load the student `method` trained while it synthesized (shard 0's `student/*` arrays) into `model`; returns
    what the synthesis summary says about its training, and the shard's image count."""
    from natinv.synthesis.cotrain import PREFIX, student_state

    npz = paths.shard_npz(cfg.exp_dir, teacher, method, 0)
    state = student_state(read_npz(npz, None, prefix=PREFIX))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise NatinvError(f"{npz}: its co-trained student does not fit models.{student} "
                          f"({str(exc).splitlines()[0]}); re-run `python -m natinv synthesize` for {method}") from None
    summary = read_json(paths.shard_json(cfg.exp_dir, teacher, method, 0))
    return {**summary["cotrain"], "settings": summary["settings"]["cotrain"], "images": summary["images"]}
