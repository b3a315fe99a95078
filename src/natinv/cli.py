"""`python -m natinv <stage> ...`: one sub-command per pipeline stage; errors become one line and exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from natinv.errors import ConfigError, NatinvError


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

    stage("data", "fetch the dataset and write canonical uint8 arrays + manifest")
    stage("teacher", "train a teacher on real data", "teacher")
    syn = stage("synthesize", "synthesize images from a teacher: one shard, or all shards in turn", "teacher", "method")
    syn.add_argument("--shard", type=int, help="0..synthesis.shards-1 (default: every shard, one after another)")
    stage("kd", "distill a student from synthesized images (--method real: from real images)", "teacher", "method", "student")
    stage("evaluator", "train an independent network on real data whose embedding judges the images (metrics)",
          "evaluator")
    stage("metrics", "how real the images are: FD and precision/recall against real data (--method real: the floor)",
          "teacher", "method")
    stage("scratch", "train a random student on a method's images and labels only (--method real: on real images)",
          "teacher", "method", "student")
    pr = stage("prune", "L1 filter pruning of the teacher, fine-tuned on a method's images (real: real images; none: not)",
               "teacher", "method")
    pr.add_argument("--ratio", type=float, required=True, help="fraction of filters removed in every layer, 0 < r < 1")
    stage("tsne", "t-SNE of the teacher's features for real and every method's images (paper Figs. 4, 7)", "teacher")
    stage("report", "write report.md, figures and summary.json from the stage outputs")
    dv = sub.add_parser("dvc-yaml", help="write the DVC pipeline of a params stack (e.g. a paper profile on the default)")
    dv.add_argument("--params", action="append", required=True, metavar="YAML",
                    help="params file; repeat to overlay a profile on the default")
    dv.add_argument("--out", type=Path, help="where to write it (default: workflow/dvc/{experiment}/dvc.yaml)")
    imp = stage("import-checkpoint", "convert a PyTorch state_dict into a teacher checkpoint (weights_only)", "teacher")
    imp.add_argument("--checkpoint", required=True, type=Path)
    from natinv.bench import add_parser as add_bench

    add_bench(sub)
    return parser


WILDCARDS = ("teacher", "method", "student", "evaluator", "ratio")


def _jobs(cfg, args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(tracked stage name, wildcards) of each unit of work the command stands for. A reference row (method real,
    or none for prune) is its own tracked stage when STAGE_PARAMS has one (kd_real, prune_none, ...)."""
    from natinv.config import tracked_stage

    keys = {k: getattr(args, k) for k in WILDCARDS if getattr(args, k, None) is not None}
    if args.stage == "synthesize":
        shards = range(cfg.shards_of(args.method)) if args.shard is None else [args.shard]
        return [("synthesize", keys | {"shard": s}) for s in shards]
    return [(tracked_stage(args.stage, keys.get("method")), keys)]


def _runners() -> dict:
    from natinv import stages
    from natinv.report import run_report

    return {
        "data": lambda cfg, a, keys, device: stages.run_data(cfg, device),
        "teacher": lambda cfg, a, keys, device: stages.run_teacher(cfg, a.teacher, device),
        "synthesize": lambda cfg, a, keys, device: stages.run_synthesize(cfg, a.teacher, a.method, keys["shard"], device),
        "kd": lambda cfg, a, keys, device: stages.run_kd(cfg, a.teacher, a.method, a.student, device),
        "evaluator": lambda cfg, a, keys, device: stages.run_teacher(cfg, a.evaluator, device, role="evaluator"),
        "metrics": lambda cfg, a, keys, device: stages.run_metrics(cfg, a.teacher, a.method, device),
        "scratch": lambda cfg, a, keys, device: stages.run_scratch(cfg, a.teacher, a.method, a.student, device),
        "prune": lambda cfg, a, keys, device: stages.run_prune(cfg, a.teacher, a.method, a.ratio, device),
        "tsne": lambda cfg, a, keys, device: stages.run_tsne(cfg, a.teacher, device),
        "report": lambda cfg, a, keys, device: run_report(cfg),
    }


def run(args: argparse.Namespace) -> None:
    if args.stage == "dvc-yaml":  # no torch: it only reads params files
        from natinv.dvc_yaml import write

        print(f"natinv dvc-yaml: wrote {write(args.params, args.out)}; run it with `dvc repro` on that file")
        return
    import torch

    from natinv import stages, tracking
    from natinv.config import load_config, stage_params
    from natinv.runtime import pick_device, reuse_host_memory, set_threads

    if args.stage == "bench":  # no params: a benchmark of the synthesis engine alone
        from natinv import bench

        bench.run(args)
        return
    cfg = load_config(args.params, [_override(text) for text in args.set])
    if args.stage == "import-checkpoint":
        stages.run_import(cfg, args.teacher, args.checkpoint)
        return
    set_threads(args.threads or cfg.threads)
    device = pick_device(args.device or cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if device.type == "cpu":
        reuse_host_memory()
    if args.stage == "synthesize":  # the method (and the shard, when given) before the shards are listed
        stages.check_shard(cfg, args.method, 0 if args.shard is None else args.shard)
    for name, keys in _jobs(cfg, args):
        run = tracking.StageRun(cfg, args.stage, keys, stage_params(cfg, name, **{k: str(v) for k, v in keys.items()}))
        try:
            outcome = _runners()[args.stage](cfg, args, keys, device)
        except BaseException as exc:
            run.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        run.close("FINISHED", outcome)


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
    return 0
