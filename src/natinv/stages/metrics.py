"""Stage `metrics`: how real a method's images are. FD and k-NN precision/recall against real training images in the
penultimate embedding of the teacher and of every evaluator (networks trained on real data that were not inverted),
plus IS/FID/P&R in Inception-v3's embedding when its weights are at hand; method=real: the held-out test images (the
floor any method can reach)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import torch

from natinv import data, paths
from natinv.checkpoint import load_model
from natinv.config import Config
from natinv.runtime import derive_seed, log
from natinv.stages.common import choose, dataset, finish
from natinv.tracking import Outcome


def run(cfg: Config, device: torch.device, teacher: str, method: str) -> Outcome:
    from natinv.metrics import embeddings, frechet_distance, precision_recall

    if method != "real":
        choose(method, cfg.job_methods, "method")
    mc = cfg.metrics
    start = time.perf_counter()
    ds = dataset(cfg)
    model, _ = load_model(paths.teacher_weights(cfg.exp_dir, teacher), device)
    reference_u8 = ds.train_x[data.real_indices(ds, mc.reference_images, derive_seed(cfg.seed, "metrics-reference"))]
    if method == "real":
        x_u8 = ds.test_x[: mc.reference_images]
        x = data.normalize(x_u8, ds.mean, ds.std)
    else:
        arrays = paths.read_shards(cfg.exp_dir, teacher, method, cfg.shards_of(method), ("images", "images_uint8"))
        x, x_u8 = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["images_uint8"])  # float16: converted per batch
    reference = data.normalize(reference_u8, ds.mean, ds.std)
    nets = {"teacher": model} | {f"evaluator:{e}": load_model(paths.evaluator_weights(cfg.exp_dir, e), device)[0]
                                 for e in mc.evaluators}
    scores = {}
    for name, net in nets.items():
        ref, gen = embeddings(net, reference, device), embeddings(net, x, device)
        scores[name] = {"fd": frechet_distance(gen, ref), **precision_recall(gen, ref, mc.neighborhood, device)}
    teacher_embedding = scores["teacher"]
    result = {"teacher": teacher, "method": method, "images": len(x), "reference_images": len(reference),
              "images_from": "real test images" if method == "real" else "synthesized (stored float16 tensors)",
              "embeddings": scores, "inception": _inception_metrics(cfg, ds.name, x_u8, reference_u8, device),
              "seconds": time.perf_counter() - start, "settings": asdict(mc)}
    return finish(paths.metrics_json(cfg.exp_dir, teacher, method), result,
                  f"metrics {teacher}/{method}: teacher embedding FD {teacher_embedding['fd']:.2f}, precision "
                  f"{teacher_embedding['precision']:.3f}, recall {teacher_embedding['recall']:.3f} ({len(x)} vs {len(reference)} images)")


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
