"""`python -m natinv <stage> ...`: one sub-command per pipeline stage; errors become one line and exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from natinv.errors import ConfigError, NatinvError
from natinv.pipeline import STAGES, WILDCARD_TYPES, missing_input_hint

# The stages whose CPU jobs keep freed memory in the heap (natinv.runtime.reuse_host_memory): synthesis, whose
# same-sized activations it speeds up (16.3 -> 14.0 s per paper-shape iteration). Elsewhere it costs memory: blocks of
# changing sizes (metrics' distance blocks) fragment the heap, which never shrinks (a metrics job of 32,000 images: 5.1
# GB with it, 1.3 GB without).
REUSE_HOST_MEMORY = {"synthesize", "meta"}


def _override(text: str) -> dict:
    """`a.b.c=value` (value parsed as YAML) -> {'a': {'b': {'c': value}}}."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="natinv", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, help: str, *args: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--params", action="append", required=True, metavar="YAML",
                       help="params file; repeat to overlay a profile on the default")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
        p.add_argument("--threads", type=int, help="torch CPU threads (default: params threads)")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: params device")
        for a in args:
            p.add_argument(f"--{a}", required=True)
        return p

    for st in STAGES.values():
        p = stage(st.name, st.help, *(w for w in st.wildcards if w not in WILDCARD_TYPES))
        if "shard" in st.wildcards:
            p.add_argument("--shard", type=int, help="0..synthesis.shards-1 (default: every shard, one after another)")
        if "ratio" in st.wildcards:
            p.add_argument("--ratio", type=float, required=True, help="fraction of filters removed in every layer, 0 < r < 1")
    dv = sub.add_parser("dvc-yaml", help="write the DVC pipeline of a params stack (e.g. a paper profile on the default)")
    dv.add_argument("--params", action="append", required=True, metavar="YAML",
                    help="params file; repeat to overlay a profile on the default")
    dv.add_argument("--out", type=Path, help="where to write it (default: workflow/dvc/{experiment}/dvc.yaml)")
    cost = sub.add_parser("cost", help="what a params stack costs before it runs: jobs, FLOPs, peak memory, hours per stage")
    cost.add_argument("--params", action="append", required=True, metavar="YAML",
                      help="params file; repeat to overlay a profile on the default")
    cost.add_argument("--device", help="the device whose rates price it (natinv.cost.RATES: cpu, h100, h200; default: the "
                      "params' cluster_device)")
    imp = stage("import-checkpoint", "convert a PyTorch state_dict into a teacher checkpoint (weights_only)", "teacher")
    imp.add_argument("--checkpoint", required=True, type=Path)
    from natinv.bench import add_parser as add_bench

    add_bench(sub)
    return parser


def _jobs(cfg, args: argparse.Namespace) -> list[dict]:
    """The wildcards of each job the command stands for: one, or for `synthesize` without --shard every shard."""
    stage = STAGES[args.stage]
    keys = {k: getattr(args, k) for k in stage.wildcards if getattr(args, k, None) is not None}
    if "shard" in stage.wildcards and args.shard is None:
        return [keys | {"shard": s} for s in range(cfg.shards_of(args.method))]
    return [keys]


def check_job_names(cfg, keys: dict) -> None:
    """Every name given on the command line becomes a path part: it must be a name, and a teacher a key of `models`."""
    from natinv.config.checks import NAME_RULE, bad_name

    for key, value in keys.items():
        if isinstance(value, str) and bad_name(value):
            raise ConfigError(f"--{key} = {value!r}: expected {NAME_RULE}")
    if "teacher" in keys and keys["teacher"] not in cfg.models:
        raise ConfigError(f"--teacher = {keys['teacher']!r}: expected one of the keys of `models`: {', '.join(cfg.models) or '(none)'}")


def _still_to_do(cfg, teacher: str, method: str, jobs: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """The shards of `jobs` whose outputs are missing or were made from other parameters or code; the others are kept
    (an interrupted run of every shard loses none), and files of shards beyond the shard count are deleted."""
    from natinv.runtime import log
    from natinv.stages.synthesize import is_done, remove_extra_shards

    for f in remove_extra_shards(cfg, teacher, method):
        log(f"removed {f}: shard beyond synthesis.shards")
    todo, kept = [], []
    for keys, names in jobs:
        if is_done(cfg.for_job(method), teacher, method, keys["shard"]):
            kept.append(names["shard"])
        else:
            todo.append((keys, names))
    if kept:
        log(f"{teacher}/{method}: kept shard {', '.join(kept)} (made from these parameters and this code)")
    return todo


def _runner(stage: str):
    import importlib

    module, _, function = STAGES[stage].runner.partition(":")
    return getattr(importlib.import_module(module), function)


def job_device(flag: str | None, configured: str, asks_for_gpu: bool) -> str:
    """The device a job runs on: --device, else $NATINV_DEVICE (a test suite pins itself to the CPU with it), else the
    params' `device`, where a job of a stage that never asks a cluster for a GPU (data, t-SNE, the report) reads `cuda`
    as `auto`: it runs on whatever its node has."""
    import os

    from natinv.runtime import DEVICES

    env = os.environ.get("NATINV_DEVICE")
    if flag is None and env is not None and env not in DEVICES:
        raise ConfigError(f"NATINV_DEVICE = {env!r}: allowed: {', '.join(DEVICES)}")
    name = flag or env or configured
    return "auto" if name == "cuda" and not asks_for_gpu and flag is None and env is None else name


def run(args: argparse.Namespace) -> None:
    if args.stage == "dvc-yaml":  # no torch: it only reads params files
        from natinv.dvc_yaml import write

        print(f"natinv dvc-yaml: wrote {write(args.params, args.out)}; run it with `dvc repro` on that file")
        return
    from dataclasses import replace

    from natinv import tracking
    from natinv.config import load_config
    from natinv.io import check_writable, confine, remove_stale_temps
    from natinv.paths import feature_cache
    from natinv.runtime import configure_device, log, peak_memory_mb, pick_device, reuse_host_memory, set_threads

    if args.stage == "cost":
        from natinv import cost

        cost.run(args)
        return
    if args.stage == "bench":  # no params: a benchmark of the synthesis engine alone
        from natinv import bench

        bench.run(args)
        return
    cfg = load_config(args.params, [_override(text) for text in args.set])
    confine(cfg.exp_dir, feature_cache(Path(cfg.results)))  # every write of a stage stays inside its experiment
    check_job_names(cfg, {k: getattr(args, k) for k in ("teacher", "method", "student", "evaluator") if getattr(args, k, None) is not None})
    if args.stage == "import-checkpoint":
        from natinv.paths import teacher_weights
        from natinv.stages.teacher import run_import

        check_writable(teacher_weights(cfg.exp_dir, args.teacher))
        run_import(cfg, args.teacher, args.checkpoint)
        return
    set_threads(args.threads or cfg.threads)
    device = pick_device(args.device or cfg.device)
    configure_device(device, cfg.deterministic)
    if device.type == "cpu" and args.stage in REUSE_HOST_MEMORY:
        reuse_host_memory()
    if args.stage == "synthesize":  # the method (and the shard, when given) before the shards are listed
        from natinv.stages.synthesize import check_shard

        check_shard(cfg, args.method, 0 if args.shard is None else args.shard)
    runner, stage = _runner(args.stage), STAGES[args.stage]
    jobs = [(keys, {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in keys.items()}) for keys in _jobs(cfg, args)]
    for _, names in jobs:  # before any work: every input is there and every output can be written
        if args.stage != "report" and (hint := missing_input_hint(cfg, stage, names, args.params)):
            raise NatinvError(hint)
        for path in stage.output_files(cfg.exp_dir, names).values():
            check_writable(path)
    if args.stage == "synthesize" and args.shard is None:  # every shard in turn (DVC): keep those already made
        jobs = _still_to_do(cfg, args.teacher, args.method, jobs)
    for keys, names in jobs:
        for path in stage.output_files(cfg.exp_dir, names).values():
            for stale in remove_stale_temps(path):
                log(f"removed {stale}, left by an interrupted run")
        job_cfg = cfg.for_job(keys.get("method"))  # a seed replica (`ni-seed1`) runs with its own seed
        inputs = tracking.datasets_of(cfg.exp_dir, [f for f in stage.inputs(cfg, names, False) if f.is_file()], cfg.data.dataset)
        weights = [f for f in stage.output_files(cfg.exp_dir, names).values() if f.suffix == ".safetensors"]
        run = tracking.StageRun(job_cfg, args.stage, keys, stage.params(cfg, names), inputs, weights).start()
        try:
            outcome = runner(job_cfg, device, **keys)
        except BaseException as exc:
            run.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        peak = peak_memory_mb(device)
        log(f"{args.stage}: peak memory {peak['host_mb']:.0f} MB on the host"
            + (f", {peak['device_mb']:.0f} MB on {device}" if "device_mb" in peak else ""))
        run.close("FINISHED", replace(outcome, result=outcome.result | {"peak_memory": peak}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except NatinvError as exc:
        print(f"natinv {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"natinv {args.stage}: interrupted", file=sys.stderr)
        return 130
    finally:
        from natinv.io import confine

        confine()  # a caller in the same process (a test) writes where it likes again
    return 0
