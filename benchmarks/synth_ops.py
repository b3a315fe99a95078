"""Operators and kernels one synthesis batch-iteration dispatches (natinv.bench.ops_per_batch_iteration), NI and DI from
ResNet-34 and VGG-11 at 1 and 4 batches per step: one JSON line each (benchmarks/README.md, "Operators per synthesis
iteration"). The counts do not depend on the batch size, so batches of 8 stand in for the paper's 256.

    .venv/bin/python benchmarks/synth_ops.py --code "<what the code is>" >> benchmarks/synth-ops.jsonl
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", required=True, help="what the counted code is (a commit, a change)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    import torch

    from natinv.bench import METHODS, ops_per_batch_iteration
    from natinv.config import EngineConfig
    from natinv.models import build_model
    from natinv.synthesis import registry
    from natinv.synthesis.labels import batch_labels
    from natinv.synthesis.objective import InversionObjective, LossWeights

    torch.set_num_threads(1)
    for arch in ("resnet34", "vgg11"):
        for method in ("ni", "di"):
            for k in (1, 4):
                entry = registry.METHODS[METHODS[method]]
                module = importlib.import_module(f"natinv.synthesis.{entry.module}")
                cfg = entry.config()
                torch.manual_seed(0)
                objective = InversionObjective(build_model(arch, 10, 3), LossWeights.of(cfg),
                                               engine=EngineConfig(batches_per_step=k))
                plan = [(batch_labels(args.batch_size, 10, torch.Generator().manual_seed(i)), i) for i in range(k)]
                ops, kernels = ops_per_batch_iteration(module, objective, plan, replace(cfg, iterations=2), 10,
                                                       (3, 32, 32), torch.device("cpu"))
                objective.close()
                print(json.dumps({"bench": "ops", "code": args.code, "method": method, "arch": arch, "batches_per_step": k,
                                  "ops_per_batch_iteration": ops, "kernels_per_batch_iteration": kernels,
                                  "date": time.strftime("%Y-%m-%d"), "device": "cpu (counted, not timed)"}), flush=True)


if __name__ == "__main__":
    main()
