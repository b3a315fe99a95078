"""Design probes for ni-fast (NaturalInversion from a meta-learned start) on the default teacher: how good a batch is
after K iterations from the meta-parameters, for each meta-update rule, step and warm-up.

`design`: warm up the meta-parameters on W batches of Kw iterations (optionally a fresh z every iteration), then
synthesize 4 evaluation batches of K iterations from them (meta-updates continue, at step lr_eval when given; 0 =
frozen), and print the CE and BN terms at the
kept iteration and the teacher's agreement with the labels; without `meta`, plain NI at K iterations (fresh starts).
`stream`: N batches of K iterations in a row from a fresh meta-initialization, one line per batch (how the start
improves with the number of meta-updates).
`warmup`: the pipeline's warm-up stage of one method replica of params/time-to-quality-seeds.yaml (its seeds, batches
and meta-initialization, e.g. "ni-fast-seed1"), then 4 evaluation batches of its own K from the result; per warm-up
batch the CE and BN terms at its kept iteration, the BN term at its first and the mean of its learned alpha; per
evaluation batch the CE and BN terms at its kept iteration and at its first (`eval_ce0`, `eval_bn0`: how good the
start itself is). `"alpha": false` keeps alpha's mean out of the meta-parameters (every batch draws alpha around
alpha_mean); `iters` sets each warm-up batch's iterations, `set` the method's keys, `meta` the meta keys, `init` an
extra tag for the meta-initialization's seed.

    .venv/bin/python benchmarks/meta_design.py design '[{"K": 10}, {"K": 10, "meta": "reptile", "lr": 1.0, "W": 8, "Kw": 50}]'
    .venv/bin/python benchmarks/meta_design.py stream '{"K": 20, "meta": "reptile", "lr": 1.0, "N": 16}'
    .venv/bin/python benchmarks/meta_design.py warmup '{"method": "ni-fast-seed1", "alpha": false}'

Needs the default run's teacher (results/default/teachers/resnet8-w16.safetensors). Run one at a time: the CPU
seconds are process times and two runs sharing two cores inflate them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace

import torch

from natinv import paths
from natinv.checkpoint import load_model
from natinv.config import MetaConfig, load_config
from natinv.runtime import derive_seed, set_threads
from natinv.synthesis import naturalinversion as ni
from natinv.synthesis.inversion import labelled_batches
from natinv.synthesis.labels import batch_labels
from natinv.synthesis.objective import InversionObjective, LossWeights
from natinv.train import evaluate

DEVICE = torch.device(os.environ.get("NATINV_DEVICE", "cpu"))  # e.g. NATINV_DEVICE=cuda for long streams


def _setup():
    cfg = load_config(["params/default.yaml"])
    teacher, meta = load_model(paths.teacher_weights(cfg.exp_dir, cfg.teacher.models[0]), DEVICE)
    teacher = teacher.to(DEVICE)
    return cfg, teacher.eval().requires_grad_(False), meta


def _batches(tag: str, n: int, size: int, classes: int) -> list[tuple[torch.Tensor, int]]:
    seeds = [derive_seed(0, tag, i) for i in range(n)]
    return [(batch_labels(size, classes, torch.Generator().manual_seed(derive_seed(s, "labels"))), s) for s in seeds]


def _method(cfg, spec: dict):
    m = replace(cfg.synthesis.methods["ni"], iterations=spec["K"], **spec.get("set", {}))
    return replace(m, meta=MetaConfig(algorithm=spec["meta"], lr=spec["lr"])) if spec.get("meta") else m


def design(specs: list[dict]) -> None:
    cfg, teacher, mm = _setup()
    shape, classes, size = (mm.in_channels, mm.image_size, mm.image_size), mm.num_classes, cfg.synthesis.batch_size
    for spec in specs:
        m = _method(cfg, spec)
        objective = InversionObjective(teacher, LossWeights.of(m))
        start = time.process_time()
        meta = None
        if spec.get("meta"):
            meta = ni.new_meta(objective, m, classes, shape, derive_seed(0, "meta-init"), DEVICE)
            warm = replace(m, iterations=spec.get("Kw", spec["K"]))
            list(ni.synthesize(objective, _batches("warm", spec.get("W", 0), size, classes), warm, classes, shape, DEVICE,
                               meta=meta, fresh_z=spec.get("fresh", False)))
        if meta is not None and "lr_eval" in spec:  # the meta step over the evaluation batches, if not the warm-up's
            meta.cfg = replace(meta.cfg, lr=spec["lr_eval"])
        warm_cpu = time.process_time() - start
        res = list(ni.synthesize(objective, _batches("eval", 4, size, classes), m, classes, shape, DEVICE, meta=meta))
        x, y = torch.cat([r.images for r in res]), torch.cat([r.labels for r in res])
        final = torch.stack([r.curve[r.best_iteration] for r in res]).mean(0)
        print(json.dumps({**spec, "ce": round(float(final[1]), 3), "bn": round(float(final[2]), 3),
                          "agree": round(evaluate(teacher, x.half().float(), y, DEVICE)["acc"], 1),
                          "cpu_warm": round(warm_cpu, 1), "cpu_eval": round(time.process_time() - start - warm_cpu, 1)}),
              flush=True)
        objective.close()


def stream(spec: dict) -> None:
    cfg, teacher, mm = _setup()
    shape, classes, size = (mm.in_channels, mm.image_size, mm.image_size), mm.num_classes, cfg.synthesis.batch_size
    m = _method(cfg, spec)
    objective = InversionObjective(teacher, LossWeights.of(m))
    meta = ni.new_meta(objective, m, classes, shape, derive_seed(0, "meta-init"), DEVICE)
    start = time.process_time()
    for i, r in enumerate(ni.synthesize(objective, _batches("stream", spec["N"], size, classes), m, classes, shape,
                                        DEVICE, meta=meta)):
        final = r.curve[r.best_iteration]
        print(json.dumps({"spec": spec, "batch": i, "ce": round(float(final[1]), 3), "bn": round(float(final[2]), 3),
                          "agree": round(evaluate(teacher, r.images.half().float(), r.labels, DEVICE)["acc"], 1),
                          "cpu": round(time.process_time() - start, 1)}), flush=True)


def _alpha_means() -> list[float]:
    """Wraps the renderers so that each batch's learned alpha mean is recorded."""
    means = []
    for cls in (ni.Separate, ni.Grouped):
        def learned(self, _orig=cls.learned_alphas):
            alphas = _orig(self)
            means.extend(round(float(a.detach().mean()), 2) for a in alphas if a is not None)
            return alphas
        cls.learned_alphas = learned
    return means


def warmup(spec: dict) -> None:
    cfg = load_config(["params/default.yaml", "params/time-to-quality-seeds.yaml"]).for_job(spec["method"])
    teacher_key = cfg.teacher.models[0]
    teacher, mm = load_model(paths.teacher_weights(cfg.exp_dir, teacher_key), DEVICE)
    teacher = teacher.to(DEVICE).eval().requires_grad_(False)
    shape, classes, size = (mm.in_channels, mm.image_size, mm.image_size), mm.num_classes, cfg.synthesis.batch_size
    m = cfg.job_methods[spec["method"]]
    m = replace(m, meta=replace(m.meta, **spec.get("meta", {})), **spec.get("set", {}))
    objective = InversionObjective(teacher, LossWeights.of(m), None, replace(cfg.engine, batches_per_step=1))
    tag = (cfg.seed, teacher_key, spec["method"])
    meta = ni.new_meta(objective, m, classes, shape, derive_seed(*tag, "meta-init", *spec.get("init", [])), DEVICE)
    if not spec.get("alpha", True):
        meta.alpha_mean = None
    alphas, warm = _alpha_means(), []
    start = time.process_time()
    for i, k in enumerate(spec.get("iters") or [m.meta.warmup_iterations] * m.meta.warmup_batches):
        batch = labelled_batches([derive_seed(*tag, "meta", i)], [size], classes)
        (r,) = ni.synthesize(objective, batch, replace(m, iterations=k), classes, shape, DEVICE, meta=meta)
        kept = r.curve[r.best_iteration]
        warm.append({"ce": round(float(kept[1]), 2), "bn": round(float(kept[2]), 1), "bn_start": round(float(r.curve[0, 2]), 1),
                     "alpha": alphas[-1] if alphas else None})
    cpu = time.process_time() - start
    seeds = [derive_seed(*tag, "eval", i) for i in range(4)]
    res = list(ni.synthesize(objective, labelled_batches(seeds, [size] * 4, classes), m, classes, shape, DEVICE, meta=meta))
    x, y = torch.cat([r.images for r in res]), torch.cat([r.labels for r in res])
    print(json.dumps({**spec, "warmup": warm, "eval_ce": [round(float(r.curve[r.best_iteration, 1]), 2) for r in res],
                      "eval_bn": [round(float(r.curve[r.best_iteration, 2]), 1) for r in res],
                      "eval_ce0": [round(float(r.curve[0, 1]), 2) for r in res],
                      "eval_bn0": [round(float(r.curve[0, 2]), 1) for r in res],
                      "agree": round(evaluate(teacher, x.half().float(), y, DEVICE)["acc"], 1), "cpu_warm": round(cpu)}),
          flush=True)
    objective.close()


if __name__ == "__main__":
    set_threads(1)
    what, arg = sys.argv[1], json.loads(sys.argv[2])
    sys.exit({"design": design, "stream": stream, "warmup": warmup}[what](arg))
