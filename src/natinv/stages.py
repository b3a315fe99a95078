"""Stage entry points: read params, call the library, write the declared outputs (DESIGN.md section 3)."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from natinv import data, figures, paths
from natinv.checkpoint import ModelMeta, import_torch_checkpoint, load_model, save_model
from natinv.config import Config
from natinv.distill import kd_loss
from natinv.errors import ConfigError, NatinvError
from natinv.io import atomic_write_json, read_npz, write_npz
from natinv.models import build_model
from natinv.runtime import derive_seed, log
from natinv.synthesis.objective import TERMS
from natinv.synthesis.shard import synthesize_shard
from natinv.tracking import Outcome
from natinv.train import SGDSchedule, cross_entropy_loss, epoch_eval, evaluate, fit


def _choose(key: str, allowed, what: str) -> None:
    if key not in allowed:
        raise ConfigError(f"{what} = {key!r}: expected one of {', '.join(allowed) or '(none configured)'}")


def run_data(cfg: Config, device: torch.device) -> Outcome:
    start = time.perf_counter()
    manifest = data.prepare(cfg.data, paths.data_dir(cfg.exp_dir))
    log(f"data: {manifest['dataset']} from {manifest['source']}: {manifest['train_images']} train / "
        f"{manifest['test_images']} test images, {manifest['num_classes']} classes ({time.perf_counter() - start:.0f} s)")
    return Outcome({k: v for k, v in manifest.items() if k != "sha256"}, artifacts=[paths.data_dir(cfg.exp_dir) / "manifest.json"])


def _test_set(ds: data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return data.normalize(ds.test_x, ds.mean, ds.std), ds.test_y


def run_teacher(cfg: Config, key: str, device: torch.device, role: str = "teacher") -> Outcome:
    """Train a classifier on the real training set: a teacher to invert, or (role="evaluator") an independent
    network whose embedding judges the images (metrics), with its own seed and output folder."""
    allowed, weights, json_path = {
        "teacher": (cfg.teacher.models, paths.teacher_weights, paths.teacher_json),
        "evaluator": (cfg.metrics.evaluators, paths.evaluator_weights, paths.evaluator_json),
    }[role]
    _choose(key, allowed, role)
    ds = data.load(paths.data_dir(cfg.exp_dir))
    spec, tc = cfg.models[key], cfg.teacher
    torch.manual_seed(derive_seed(cfg.seed, role, key))
    model = build_model(spec.arch, ds.num_classes, ds.in_channels, spec.width)
    x = data.normalize(ds.train_x, ds.mean, ds.std)
    xt, yt = _test_set(ds)
    schedule = SGDSchedule(tc.epochs, tc.batch_size, tc.lr, tc.momentum, tc.weight_decay, tc.warmup_epochs)
    start = time.perf_counter()
    history = fit(model, x, ds.train_y, cross_entropy_loss, schedule, device, derive_seed(cfg.seed, f"{role}-data", key),
                  on_epoch=epoch_eval(model, xt, yt, device), desc=f"{role} {key}")
    seconds = time.perf_counter() - start
    final = evaluate(model, xt, yt, device)
    meta = ModelMeta(spec.arch, ds.num_classes, ds.in_channels, ds.image_size, spec.width, list(ds.mean), list(ds.std))
    save_model(weights(cfg.exp_dir, key), model, meta)
    result = {role: key, "model": asdict(spec), "dataset": ds.name, "test_acc": final["acc"], "test_loss": final["loss"],
              "train_images": len(x), "test_images": len(xt), "epochs": history, "seconds": seconds,
              "settings": asdict(tc), "device": str(device)}
    atomic_write_json(json_path(cfg.exp_dir, key), result)
    log(f"{role} {key}: test accuracy {final['acc']:.2f} % in {seconds:.0f} s")
    return Outcome(result, artifacts=[json_path(cfg.exp_dir, key)])


def check_shard(cfg: Config, method: str, shard: int) -> None:
    _choose(method, cfg.synthesis.methods, "method")
    if not 0 <= shard < cfg.synthesis.shards:
        raise ConfigError(f"shard = {shard}: expected 0..{cfg.synthesis.shards - 1} (synthesis.shards = {cfg.synthesis.shards})")


def run_synthesize(cfg: Config, teacher: str, method: str, shard: int, device: torch.device) -> Outcome:
    check_shard(cfg, method, shard)
    model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    arrays, summary = synthesize_shard(model, meta, teacher, method, cfg.synthesis.methods[method], cfg.synthesis,
                                       cfg.seed, shard, device, log=log)
    npz = paths.shard_npz(cfg.exp_dir, teacher, method, shard)
    write_npz(npz, arrays)
    atomic_write_json(paths.shard_json(cfg.exp_dir, teacher, method, shard), summary)
    log(f"{teacher}/{method} shard {shard}: {summary['images']} images in {summary['seconds']:.0f} s; teacher agreement "
        f"{summary['agreement_float16']:.1f} % (stored tensors), {summary['agreement_uint8']:.1f} % (uint8 rendering)")
    grid = npz.with_suffix(".png")
    figures.save_png(figures.class_grid(arrays["images_uint8"], arrays["labels"], meta.num_classes), grid)
    curves = arrays["loss_curves"]  # (batches, iterations, terms)
    series = {f"loss/{t}": curves[:, :, i].mean(0) for i, t in enumerate(TERMS)}
    series |= {f"batch-{b}/{t}": curves[k, :, TERMS.index(t)] for k, b in enumerate(arrays["batch_index"]) for t in ("ce", "bn")}
    return Outcome(summary, series, [paths.shard_json(cfg.exp_dir, teacher, method, shard), grid])


def load_synthesized(cfg: Config, teacher: str, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All shards of (teacher, method): the stored float16 tensors (as float32) and labels."""
    xs, ys = [], []
    for shard in range(cfg.synthesis.shards):
        arrays = read_npz(paths.shard_npz(cfg.exp_dir, teacher, method, shard))
        xs.append(torch.from_numpy(arrays["images"]).float())
        ys.append(torch.from_numpy(arrays["labels"]))
    return torch.cat(xs), torch.cat(ys)


def real_subset(ds: data.Dataset, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(seed))[:count]
    return data.normalize(ds.train_x[idx], ds.mean, ds.std), ds.train_y[idx]


def run_kd(cfg: Config, teacher: str, method: str, student: str, device: torch.device) -> Outcome:
    _choose(student, cfg.models, "student")
    if method != "real":
        _choose(method, cfg.synthesis.methods, "method")
    kc = cfg.kd
    ds = data.load(paths.data_dir(cfg.exp_dir))
    t_model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    if (meta.num_classes, meta.in_channels, meta.image_size) != (ds.num_classes, ds.in_channels, ds.image_size):
        raise NatinvError(f"teacher {teacher} expects {meta.in_channels}x{meta.image_size}px, {meta.num_classes} classes; "
                          f"the dataset has {ds.in_channels}x{ds.image_size}px, {ds.num_classes} classes")
    if method == "real":
        x, y = real_subset(ds, kc.real_images or cfg.synthesis.num_images, derive_seed(cfg.seed, "kd-real"))
    else:
        x, y = load_synthesized(cfg, teacher, method)
    xt, yt = _test_set(ds)
    spec = cfg.models[student]
    torch.manual_seed(derive_seed(cfg.seed, "student", teacher, method, student))
    model = build_model(spec.arch, ds.num_classes, ds.in_channels, spec.width)
    schedule = SGDSchedule(kc.epochs, min(kc.batch_size, len(x)), kc.lr, kc.momentum, kc.weight_decay)
    start = time.perf_counter()
    history = fit(model, x, y, kd_loss(t_model, kc.temperature), schedule, device,
                  derive_seed(cfg.seed, "kd-data", teacher, method, student),
                  on_epoch=epoch_eval(model, xt, yt, device), desc=f"kd {method}->{student}")
    seconds = time.perf_counter() - start
    final = evaluate(model, xt, yt, device)
    save_model(paths.kd_weights(cfg.exp_dir, teacher, method, student), model,
               ModelMeta(spec.arch, ds.num_classes, ds.in_channels, ds.image_size, spec.width, list(ds.mean), list(ds.std)))
    result = {"teacher": teacher, "method": method, "student": student, "model": asdict(spec), "images": len(x),
              "test_acc": final["acc"], "test_loss": final["loss"], "epochs": history, "seconds": seconds,
              "settings": asdict(kc), "device": str(device)}
    atomic_write_json(paths.kd_json(cfg.exp_dir, teacher, method, student), result)
    log(f"kd {teacher}/{method} -> {student}: test accuracy {final['acc']:.2f} % ({len(x)} images, {seconds:.0f} s)")
    return Outcome(result, artifacts=[paths.kd_json(cfg.exp_dir, teacher, method, student)])


def run_metrics(cfg: Config, teacher: str, method: str, device: torch.device) -> Outcome:
    """FD and k-NN precision/recall of (teacher, method)'s images against real training images, in the penultimate
    embedding of the teacher and of every evaluator (networks trained on real data that were not inverted);
    method=real: the held-out test images (the floor any method can reach)."""
    from natinv.metrics import embeddings, frechet_distance, precision_recall

    if method != "real":
        _choose(method, cfg.synthesis.methods, "method")
    mc = cfg.metrics
    start = time.perf_counter()
    ds = data.load(paths.data_dir(cfg.exp_dir))
    model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    reference, _ = real_subset(ds, mc.reference_images, derive_seed(cfg.seed, "metrics-reference"))
    if method == "real":
        x = _test_set(ds)[0][: mc.reference_images]
    else:
        x, _ = load_synthesized(cfg, teacher, method)
    nets = {"teacher": model} | {f"evaluator:{e}": load_model(paths.evaluator_weights(cfg.exp_dir, e), device)[0]
                                 for e in mc.evaluators}
    scores = {}
    for name, net in nets.items():
        ref, gen = embeddings(net, reference, device), embeddings(net, x, device)
        scores[name] = {"fd": frechet_distance(gen, ref), **precision_recall(gen, ref, mc.neighborhood)}
    teacher_embedding = scores["teacher"]
    result = {"teacher": teacher, "method": method, "images": len(x), "reference_images": len(reference),
              "images_from": "real test images" if method == "real" else "synthesized (stored float16 tensors)",
              "embeddings": scores, "seconds": time.perf_counter() - start, "settings": asdict(mc)}
    atomic_write_json(paths.metrics_json(cfg.exp_dir, teacher, method), result)
    log(f"metrics {teacher}/{method}: teacher embedding FD {teacher_embedding['fd']:.2f}, precision "
        f"{teacher_embedding['precision']:.3f}, recall {teacher_embedding['recall']:.3f} ({len(x)} vs {len(reference)} images)")
    return Outcome(result, artifacts=[paths.metrics_json(cfg.exp_dir, teacher, method)])


def run_import(cfg: Config, teacher: str, checkpoint: Path) -> None:
    """Bring a teacher trained elsewhere: a PyTorch state_dict for models[teacher], loaded with weights_only=True."""
    _choose(teacher, cfg.models, "teacher")
    m = data.read_manifest(paths.data_dir(cfg.exp_dir))  # the checkpoint takes the dataset's shape
    spec = cfg.models[teacher]
    meta = ModelMeta(spec.arch, m["num_classes"], m["in_channels"], m["image_size"], spec.width, m["mean"], m["std"])
    import_torch_checkpoint(checkpoint, meta, paths.teacher_weights(cfg.exp_dir, teacher))
    log(f"imported {checkpoint} as teacher {teacher} ({spec.arch})")
