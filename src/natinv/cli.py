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
            p.add_argument(f"--{a}", required=True, type=int if a == "shard" else str)
        return p

    stage("data", "fetch the dataset and write canonical uint8 arrays + manifest")
    stage("teacher", "train a teacher on real data", "teacher")
    stage("synthesize", "synthesize one shard of images from a teacher", "teacher", "method", "shard")
    stage("kd", "distill a student from synthesized (or real) images", "teacher", "method", "student")
    stage("summary", "print the experiment's results so far as tables")
    imp = stage("import-checkpoint", "convert a PyTorch state_dict into a teacher checkpoint (weights_only)", "teacher")
    imp.add_argument("--checkpoint", required=True, type=Path)
    return parser


def run(args: argparse.Namespace) -> None:
    import torch

    from natinv import stages
    from natinv.config import load_config
    from natinv.runtime import pick_device, set_threads

    cfg = load_config(args.params, [_override(text) for text in args.set])
    set_threads(args.threads or cfg.threads)
    device = pick_device(args.device or cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if args.stage == "data":
        stages.run_data(cfg, device)
    elif args.stage == "teacher":
        stages.run_teacher(cfg, args.teacher, device)
    elif args.stage == "synthesize":
        stages.run_synthesize(cfg, args.teacher, args.method, args.shard, device)
    elif args.stage == "kd":
        stages.run_kd(cfg, args.teacher, args.method, args.student, device)
    elif args.stage == "summary":
        from natinv.summary import collect, render

        print(render(collect(cfg)))
    elif args.stage == "import-checkpoint":
        stages.run_import(cfg, args.teacher, args.checkpoint)


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
