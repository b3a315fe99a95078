"""Stage entry points: read params, call the library, write the declared outputs (natinv.paths)."""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from natinv import data, figures, paths, plan
from natinv.checkpoint import ModelMeta, import_torch_checkpoint, load_model, save_model
from natinv.config import Config
from natinv.distill import kd_loss
from natinv.errors import ConfigError, NatinvError
from natinv.io import atomic_write_json, read_json, read_npz, write_npz
from natinv.models import build_model
from natinv.runtime import derive_seed, log
from natinv.synthesis.shard import read_shards, synthesize_shard
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
    model = _new_model(ds, spec, derive_seed(cfg.seed, role, key))
    x = data.normalize(ds.train_x, ds.mean, ds.std)
    xt, yt = _test_set(ds)
    schedule = SGDSchedule(tc.epochs, tc.batch_size, tc.lr, tc.momentum, tc.weight_decay, tc.warmup_epochs)
    start = time.perf_counter()
    history = fit(model, x, ds.train_y, cross_entropy_loss, schedule, device, derive_seed(cfg.seed, f"{role}-data", key),
                  on_epoch=epoch_eval(model, xt, yt, device), desc=f"{role} {key}")
    seconds = time.perf_counter() - start
    final = evaluate(model, xt, yt, device)
    meta = _dataset_meta(ds, spec)
    save_model(weights(cfg.exp_dir, key), model, meta)
    result = {role: key, "model": asdict(spec), "dataset": ds.name, "test_acc": final["acc"], "test_loss": final["loss"],
              "train_images": len(x), "test_images": len(xt), "epochs": history, "seconds": seconds,
              "settings": asdict(tc), "device": str(device)}
    atomic_write_json(json_path(cfg.exp_dir, key), result)
    log(f"{role} {key}: test accuracy {final['acc']:.2f} % in {seconds:.0f} s")
    return Outcome(result, artifacts=[json_path(cfg.exp_dir, key)])


def check_shard(cfg: Config, method: str, shard: int) -> None:
    _choose(method, cfg.synthesis.methods, "method")
    shards = cfg.shards_of(method)
    if not 0 <= shard < shards:
        why = "it trains a student while it synthesizes" if cfg.cotrained(method) else f"synthesis.shards = {shards}"
        raise ConfigError(f"shard = {shard}: method {method} has {shards} shard(s), 0..{shards - 1} ({why})")


def run_synthesize(cfg: Config, teacher: str, method: str, shard: int, device: torch.device) -> Outcome:
    check_shard(cfg, method, shard)
    model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    co = cfg.cotrained(method)
    student = None if co is None else _new_model(meta, cfg.models[co.student], _student_seed(cfg, teacher, method, co.student))
    arrays, summary = synthesize_shard(model, meta, teacher, method, cfg.synthesis.methods[method], cfg.synthesis,
                                       cfg.seed, shard, device, student, log=log, engine=cfg.engine)
    if bad := int((~np.isfinite(arrays["images"]).reshape(len(arrays["images"]), -1).all(1)).sum()):
        raise NatinvError(f"{teacher}/{method} shard {shard}: {bad} of {len(arrays['images'])} images hold NaN or infinite "
                          f"values (the optimization diverged; losses at the end: "
                          + ", ".join(f"{k} {v:.3g}" for k, v in summary["final"].items())
                          + "); nothing was written. Lower the method's learning rates, or check the teacher")
    npz = paths.shard_npz(cfg.exp_dir, teacher, method, shard)
    write_npz(npz, arrays)
    atomic_write_json(paths.shard_json(cfg.exp_dir, teacher, method, shard), summary)
    log(f"{teacher}/{method} shard {shard}: {summary['images']} images in {summary['seconds']:.0f} s; teacher agreement "
        f"{summary['agreement_float16']:.1f} % (stored tensors), {summary['agreement_uint8']:.1f} % (uint8 rendering)")
    grid = npz.with_suffix(".png")
    figures.save_png(figures.class_grid(arrays["images_uint8"], arrays["labels"], meta.num_classes), grid)
    curves, terms = arrays["loss_curves"], list(arrays["loss_terms"])  # (batches, iterations, terms)
    series = {f"loss/{t}": curves[:, :, i].mean(0) for i, t in enumerate(terms)}
    series |= {f"batch-{b}/{t}": curves[k, :, terms.index(t)] for k, b in enumerate(arrays["batch_index"])
               for t in ("ce", "bn") if t in terms}
    if "student_loss" in arrays:
        series["student/loss"] = arrays["student_loss"]
    return Outcome(summary, series, [paths.shard_json(cfg.exp_dir, teacher, method, shard), grid])


def load_synthesized(cfg: Config, teacher: str, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All shards of (teacher, method): the stored float16 tensors (as float32) and labels."""
    arrays = read_shards(cfg.exp_dir, teacher, method, cfg.shards_of(method), ("images", "labels"))
    return torch.from_numpy(arrays["images"]).float(), torch.from_numpy(arrays["labels"])


def real_indices(ds: data.Dataset, count: int, seed: int) -> torch.Tensor:
    return torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(seed))[:count]


def real_subset(ds: data.Dataset, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = real_indices(ds, count, seed)
    return data.normalize(ds.train_x[idx], ds.mean, ds.std), ds.train_y[idx]


def training_images(cfg: Config, ds: data.Dataset, teacher: str, method: str, real_images: int | None,
                    seed_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What a student trains on: (teacher, method)'s synthesized tensors and labels, or for method=real as many real
    training images (`real_images`, default synthesis.num_images) with their labels."""
    if method == "real":
        return real_subset(ds, real_images or cfg.synthesis.num_images, derive_seed(cfg.seed, seed_name))
    _choose(method, cfg.synthesis.methods, "method")
    return load_synthesized(cfg, teacher, method)


def _student_seed(cfg: Config, teacher: str, method: str, student: str) -> int:
    """Initial weights of the student distilled from (teacher, method): by the kd stage, or co-trained by synthesis."""
    return derive_seed(cfg.seed, "student", teacher, method, student)


def _new_model(ds: data.Dataset | ModelMeta, spec, seed: int) -> torch.nn.Module:
    """A randomly initialised network of `spec` for the dataset (or a checkpoint's shape), weights drawn from `seed`."""
    torch.manual_seed(seed)
    return build_model(spec.arch, ds.num_classes, ds.in_channels, spec.width)


def _schedule(section, images: int) -> SGDSchedule:
    """The SGD schedule of a student-training section (kd, scratch, prune) for `images` training images."""
    return SGDSchedule(section.epochs, min(section.batch_size, images), section.lr, section.momentum, section.weight_decay)


def _dataset_meta(ds: data.Dataset, spec) -> ModelMeta:
    return ModelMeta(spec.arch, ds.num_classes, ds.in_channels, ds.image_size, spec.width, list(ds.mean), list(ds.std))


def run_scratch(cfg: Config, teacher: str, method: str, student: str, device: torch.device) -> Outcome:
    """A randomly initialised student trained only on (teacher, method)'s images and their synthesis labels
    (method=real: as many real images with their labels), then evaluated on the real training and test sets
    (paper Tables 2, 9)."""
    _choose(student, cfg.models, "student")
    sc = cfg.scratch
    ds = data.load(paths.data_dir(cfg.exp_dir))
    x, y = training_images(cfg, ds, teacher, method, sc.real_images, "scratch-real")
    spec = cfg.models[student]
    model = _new_model(ds, spec, derive_seed(cfg.seed, "scratch-student", teacher, method, student))
    xt, yt = _test_set(ds)
    start = time.perf_counter()
    history = fit(model, x, y, cross_entropy_loss, _schedule(sc, len(x)), device,
                  derive_seed(cfg.seed, "scratch-data", teacher, method, student),
                  on_epoch=epoch_eval(model, xt, yt, device), desc=f"scratch {method}->{student}")
    seconds = time.perf_counter() - start
    own = evaluate(model, x, y, device)
    n = len(ds.train_x) if sc.train_eval_images is None else min(sc.train_eval_images, len(ds.train_x))
    train = evaluate(model, data.normalize(ds.train_x[:n], ds.mean, ds.std), ds.train_y[:n], device)
    test = evaluate(model, xt, yt, device)
    result = {"teacher": teacher, "method": method, "student": student, "model": asdict(spec), "images": len(x),
              "own_acc": own["acc"], "train_acc": train["acc"], "train_loss": train["loss"], "train_images": n, "test_acc": test["acc"],
              "test_loss": test["loss"], "epochs": history, "seconds": seconds, "settings": asdict(sc)}
    atomic_write_json(paths.scratch_json(cfg.exp_dir, teacher, method, student), result)
    log(f"scratch {teacher}/{method} -> {student}: real train {train['acc']:.2f} %, test {test['acc']:.2f} % "
        f"(its own {len(x)} images: {own['acc']:.2f} %, {seconds:.0f} s)")
    return Outcome(result, artifacts=[paths.scratch_json(cfg.exp_dir, teacher, method, student)])


def run_prune(cfg: Config, teacher: str, method: str, ratio: float, device: torch.device) -> Outcome:
    """L1 filter pruning of the teacher at `ratio` (Torch-Pruning, channels removed), then fine-tuning on
    (teacher, method)'s images; method=real: on as many real images; method=none: no fine-tuning (paper Fig. 6)."""
    from natinv.prune import l1_filter_prune

    if not 0 < ratio < 1:
        raise ConfigError(f"ratio = {ratio}: expected the fraction of filters to remove, 0 < ratio < 1")
    pc = cfg.prune
    ds = data.load(paths.data_dir(cfg.exp_dir))
    t_model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    xt, yt = _test_set(ds)
    model = copy.deepcopy(t_model).cpu()  # pruned on the CPU; the unpruned teacher gives the soft targets
    start = time.perf_counter()
    pruned = l1_filter_prune(model, ratio, torch.zeros(1, meta.in_channels, meta.image_size, meta.image_size))
    model.to(device)
    history: list = []
    if method != "none":  # the accuracy before fine-tuning is the `none` job's (one 10k-image evaluation less here)
        x, y = training_images(cfg, ds, teacher, method, pc.real_images, "prune-real")
        loss = kd_loss(t_model, pc.temperature) if pc.targets == "teacher" else cross_entropy_loss
        history = fit(model, x, y, loss, _schedule(pc, len(x)), device, derive_seed(cfg.seed, "prune-data", teacher, method, f"{ratio:g}"),
                      on_epoch=epoch_eval(model, xt, yt, device), desc=f"prune {ratio:g} {method}")
    final = evaluate(model, xt, yt, device)
    result = {"teacher": teacher, "method": method, "ratio": ratio, "test_acc": final["acc"], "test_loss": final["loss"],
              "fine_tuned": method != "none", **pruned, "epochs": history,
              "seconds": time.perf_counter() - start, "settings": asdict(pc)}
    atomic_write_json(paths.prune_json(cfg.exp_dir, teacher, method, ratio), result)
    log(f"prune {teacher} {ratio:.0%} ({pruned['params_before']:,} -> {pruned['params_after']:,} parameters): "
        + (f"{final['acc']:.2f} % after fine-tuning on {method}" if history else f"{final['acc']:.2f} % without fine-tuning"))
    return Outcome(result, artifacts=[paths.prune_json(cfg.exp_dir, teacher, method, ratio)])


def run_kd(cfg: Config, teacher: str, method: str, student: str, device: torch.device) -> Outcome:
    """A student distilled from (teacher, method)'s images with the teacher's soft targets; for the student a method
    trained while it synthesized (ADI, DAFL, DFAD), that student, evaluated here."""
    _choose(student, cfg.models, "student")
    kc = cfg.kd
    ds = data.load(paths.data_dir(cfg.exp_dir))
    t_model, meta = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    if (meta.num_classes, meta.in_channels, meta.image_size) != (ds.num_classes, ds.in_channels, ds.image_size):
        raise NatinvError(f"teacher {teacher} expects {meta.in_channels}x{meta.image_size}px, {meta.num_classes} classes; "
                          f"the dataset has {ds.in_channels}x{ds.image_size}px, {ds.num_classes} classes")
    xt, yt = _test_set(ds)
    spec = cfg.models[student]
    model = _new_model(ds, spec, _student_seed(cfg, teacher, method, student))
    start = time.perf_counter()
    co = cfg.cotrained(method)
    if co is not None and co.student == student:  # the synthesized images are not read: the student is trained
        history, extra = [], {"cotrained": _adopt_cotrained(cfg, teacher, method, student, model)}
        images = extra["cotrained"].pop("images")
    else:
        x, y = training_images(cfg, ds, teacher, method, kc.real_images, "kd-real")
        images = len(x)
        history = fit(model, x, y, kd_loss(t_model, kc.temperature), _schedule(kc, len(x)), device,
                      derive_seed(cfg.seed, "kd-data", teacher, method, student),
                      on_epoch=epoch_eval(model, xt, yt, device), desc=f"kd {method}->{student}")
        extra = {"settings": asdict(kc)}
    seconds = time.perf_counter() - start
    final = evaluate(model, xt, yt, device)
    save_model(paths.kd_weights(cfg.exp_dir, teacher, method, student), model, _dataset_meta(ds, spec))
    result = {"teacher": teacher, "method": method, "student": student, "model": asdict(spec), "images": images,
              "test_acc": final["acc"], "test_loss": final["loss"], "epochs": history, "seconds": seconds,
              **extra, "device": str(device)}
    atomic_write_json(paths.kd_json(cfg.exp_dir, teacher, method, student), result)
    how = "trained while synthesizing" if "cotrained" in extra else f"{images} images"
    log(f"kd {teacher}/{method} -> {student}: test accuracy {final['acc']:.2f} % ({how}, {seconds:.0f} s)")
    return Outcome(result, artifacts=[paths.kd_json(cfg.exp_dir, teacher, method, student)])


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


def run_metrics(cfg: Config, teacher: str, method: str, device: torch.device) -> Outcome:
    """FD and k-NN precision/recall of (teacher, method)'s images against real training images, in the penultimate
    embedding of the teacher and of every evaluator (networks trained on real data that were not inverted), plus
    IS/FID/P&R in Inception-v3's embedding when its weights are at hand; method=real: the held-out test images
    (the floor any method can reach)."""
    from natinv.metrics import embeddings, frechet_distance, precision_recall

    if method != "real":
        _choose(method, cfg.synthesis.methods, "method")
    mc = cfg.metrics
    start = time.perf_counter()
    ds = data.load(paths.data_dir(cfg.exp_dir))
    model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    reference_u8 = ds.train_x[real_indices(ds, mc.reference_images, derive_seed(cfg.seed, "metrics-reference"))]
    if method == "real":
        x_u8 = ds.test_x[: mc.reference_images]
        x = data.normalize(x_u8, ds.mean, ds.std)
    else:
        arrays = read_shards(cfg.exp_dir, teacher, method, cfg.shards_of(method), ("images", "images_uint8"))
        x, x_u8 = torch.from_numpy(arrays["images"]).float(), torch.from_numpy(arrays["images_uint8"])
    reference = data.normalize(reference_u8, ds.mean, ds.std)
    nets = {"teacher": model} | {f"evaluator:{e}": load_model(paths.evaluator_weights(cfg.exp_dir, e), device)[0]
                                 for e in mc.evaluators}
    scores = {}
    for name, net in nets.items():
        ref, gen = embeddings(net, reference, device), embeddings(net, x, device)
        scores[name] = {"fd": frechet_distance(gen, ref), **precision_recall(gen, ref, mc.neighborhood)}
    teacher_embedding = scores["teacher"]
    result = {"teacher": teacher, "method": method, "images": len(x), "reference_images": len(reference),
              "images_from": "real test images" if method == "real" else "synthesized (stored float16 tensors)",
              "embeddings": scores, "inception": _inception_metrics(cfg, ds.name, x_u8, reference_u8, device),
              "seconds": time.perf_counter() - start, "settings": asdict(mc)}
    atomic_write_json(paths.metrics_json(cfg.exp_dir, teacher, method), result)
    log(f"metrics {teacher}/{method}: teacher embedding FD {teacher_embedding['fd']:.2f}, precision "
        f"{teacher_embedding['precision']:.3f}, recall {teacher_embedding['recall']:.3f} ({len(x)} vs {len(reference)} images)")
    return Outcome(result, artifacts=[paths.metrics_json(cfg.exp_dir, teacher, method)])


def _inception_metrics(cfg: Config, dataset: str, x_u8: torch.Tensor, reference_u8: torch.Tensor,
                       device: torch.device) -> dict:
    """IS, FID, P&R on the uint8 renderings with torch-fidelity's extractor (Inception-v3 unless configured), or
    why not: without weights (offline) the stage says so once and reports the other embeddings only."""
    from natinv.metrics import extractor_name, fidelity_metrics, inception_weights

    ic = cfg.metrics.inception
    if not ic.enabled:
        return {"available": False, "reason": "metrics.inception.enabled is false"}
    name = extractor_name(ic.feature_extractor)
    weights, missing = inception_weights(ic.feature_extractor, ic.weights)
    if missing:
        log(f"metrics: Inception metrics (IS, FID, P&R) skipped: {missing}")
        return {"available": False, "reason": missing}
    start = time.perf_counter()
    real_name = f"{dataset}-real-{hashlib.sha1(reference_u8.numpy().tobytes()).hexdigest()[:12]}"  # the same images: the same cache
    scores = fidelity_metrics(x_u8, reference_u8, name, weights, device, k=cfg.metrics.neighborhood,
                              batch_size=ic.batch_size, cache_root=paths.feature_cache(Path(cfg.results)), real_name=real_name)
    log(f"metrics: {ic.feature_extractor}: IS {scores['is']:.2f}, FID {scores['fid']:.2f}, precision "
        f"{scores['precision']:.3f}, recall {scores['recall']:.3f}")
    return {"available": True, "feature_extractor": ic.feature_extractor, "weights": weights, **scores,
            "seconds": time.perf_counter() - start}


def run_tsne(cfg: Config, teacher: str, device: torch.device) -> Outcome:
    """t-SNE of the teacher's features at each configured layer for real training images and every method's images,
    embedded jointly (paper Figs. 4, 7): coordinates (npz), a figure (png) and a summary (json)."""
    from natinv.metrics import layer_features, tsne_2d

    tc = cfg.metrics.tsne
    start = time.perf_counter()
    ds = data.load(paths.data_dir(cfg.exp_dir))
    model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    for layer in tc.layers:
        if layer != "embedding" and int(layer[5:]) > len(model.stages):
            raise ConfigError(f"metrics.tsne.layers: {layer!r}, but teacher {teacher} has {len(model.stages)} stages "
                              f"(stage1..stage{len(model.stages)})")
    synthesized = {m: load_synthesized(cfg, teacher, m)[0] for m in plan.tsne_methods(cfg, teacher)}
    n = min([tc.images, *(len(x) for x in synthesized.values())])  # equal sets: no group dominates the picture
    sets = {"real": real_subset(ds, n, derive_seed(cfg.seed, "tsne-real"))[0]}
    for m, x in synthesized.items():
        sets[m] = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(derive_seed(cfg.seed, f"tsne-{m}")))[:n]]
    feats = [layer_features(model, x, device, tc.layers) for x in sets.values()]
    group = np.concatenate([np.full(len(x), i) for i, x in enumerate(sets.values())])
    coords = {layer: tsne_2d(np.concatenate([f[layer] for f in feats]), derive_seed(cfg.seed, "tsne"), tc.perplexity)
              for layer in tc.layers}
    out = paths.tsne_files(cfg.exp_dir, teacher)
    write_npz(out["npz"], {**coords, "group": group, "group_names": np.asarray(list(sets))})
    colors = [figures.SET_COLORS.get(cfg.kind_of(name), f"C{i}") for i, name in enumerate(sets)]
    figures.scatter_panels({f"{teacher}: {layer}": {name: c[group == i] for i, name in enumerate(sets)} for layer, c in coords.items()},
                           colors, out["png"])
    result = {"teacher": teacher, "images": {k: len(v) for k, v in sets.items()}, "layers": tc.layers,
              "seconds": time.perf_counter() - start, "settings": asdict(tc)}
    atomic_write_json(out["json"], result)
    log(f"tsne {teacher}: {', '.join(f'{k} {len(v)}' for k, v in sets.items())} images at {', '.join(tc.layers)} "
        f"({result['seconds']:.0f} s)")
    return Outcome(result, artifacts=[out["json"], out["png"]])


def run_import(cfg: Config, teacher: str, checkpoint: Path) -> None:
    """Bring a teacher trained elsewhere: a PyTorch state_dict for models[teacher], loaded with weights_only=True."""
    _choose(teacher, cfg.models, "teacher")
    m = data.read_manifest(paths.data_dir(cfg.exp_dir))  # the checkpoint takes the dataset's shape
    spec = cfg.models[teacher]
    meta = ModelMeta(spec.arch, m["num_classes"], m["in_channels"], m["image_size"], spec.width, m["mean"], m["std"])
    import_torch_checkpoint(checkpoint, meta, paths.teacher_weights(cfg.exp_dir, teacher))
    log(f"imported {checkpoint} as teacher {teacher} ({spec.arch})")
