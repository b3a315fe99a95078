"""The claims matrix: each of the paper's claims, checked on every setting that ran, from the runs' job results.

    .venv/bin/python benchmarks/claims_matrix.py default=results/default \
        default-paper=results/default:ni-paper,di-paper digits=results/claims-digits ... \
        [--out benchmarks/claims-matrix.md] [--json benchmarks/claims-matrix.jsonl]

Each argument is `label=results/{experiment}` of a run, ideally with `seeds: [0, 1, 2]`, optionally with `:NI,DI`,
the methods that stand for NI and DI in that column (default `ni,di`; e.g. `ni-paper,di-paper`). Every kd, metrics,
scratch, prune and synthesis JSON in the folder counts, whichever overlay made it (a component study run on the same
experiment fills its rows; re-run an overlay after a settings change so that no row mixes recipes). A cell is the
verdict the report gives (natinv.report.spread: a gap is within noise when it is no larger than the two standard
deviations added) with both sides' mean ± std: **holds** (NI's side ahead beyond the spread), within noise,
**reversed** (the other side ahead beyond it), "one seed" where the spread is unknown, "not run"; "—" where the column
does not make the claim (a column with its own NI and DI has no component or FTP-stage rows: those variants are
built on `ni`). Claims (the paper's tables and figures):

- KD: a student distilled from NI's images beats one from DI's (Table 5);
- FD (teacher / evaluator embedding): NI's images are closer to real ones (Tables 1, 8);
- scratch: a student trained from scratch on NI's images generalizes better (Tables 2, 9);
- pruning: NI's images recover a pruned teacher better (Fig. 6), at each ratio;
- convergence: NI ends lower than DI in CE and in the BN term at the same iterations (Fig. 5; the kept iteration of each
  batch, mean over the shards);
- components (Table 3, KD): one-to-one beats one-to-many; FTP and ACS each add to one-to-one; all three beat each pair;
- FTP stages (Table 4, teacher FD): more stages in the FTP, closer to real data. The rows compare the FTP from the
  teacher's top k + 1 stages with its top k, whatever the teacher's depth: `ni-ftp<stages>` variants (`ni-ftp23`: stages 2
  and 3) name their stages, `ni` has all of them (as many as the deepest variant names); a row beyond the teacher's
  stages reads "n/a".
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from natinv.config import seeds
from natinv.report.spread import METRIC_KEYS, stats, verdict

# (claim, section, row template, value name, the better side, the other side, higher is better)
# row templates: {t} teacher, {s} student, {m} method, {r} pruning ratio; `*` in a value: the first evaluator
CLAIMS: list[tuple[str, str, str, str, str, str, bool]] = [
    ("KD accuracy (Table 5)", "kd", "{t}/{m}/{s}", "test_acc", "ni", "di", True),
    ("FD, teacher embedding (Tables 1, 8)", "metrics", "{t}/{m}", "teacher/fd", "ni", "di", False),
    ("FD, evaluator embedding", "metrics", "{t}/{m}", "evaluator:*/fd", "ni", "di", False),
    ("from scratch, real test accuracy (Tables 2, 9)", "scratch", "{t}/{m}/{s}", "test_acc", "ni", "di", True),
    ("pruned {r}, fine-tuned (Fig. 6)", "prune", "{t}/{m}/{r}", "test_acc", "ni", "di", True),
    ("CE at the kept iteration (Fig. 5)", "synthesis", "{t}/{m}", "final_ce", "ni", "di", False),
    ("BN term at the kept iteration (Fig. 5)", "synthesis", "{t}/{m}", "final_bn", "ni", "di", False),
    ("Table 3: one-to-one vs one-to-many (KD)", "kd", "{t}/{m}/{s}", "test_acc", "ni-o2o", "ni-o2m", True),
    ("Table 3: + FTP (KD)", "kd", "{t}/{m}/{s}", "test_acc", "ni-o2o-ftp", "ni-o2o", True),
    ("Table 3: + ACS (KD)", "kd", "{t}/{m}/{s}", "test_acc", "ni-o2o-acs", "ni-o2o", True),
    ("Table 3: all three vs one-to-one + FTP (KD)", "kd", "{t}/{m}/{s}", "test_acc", "ni", "ni-o2o-ftp", True),
    ("Table 4: FTP from the top two stages vs the top one (teacher FD)", "metrics", "{t}/{m}", "teacher/fd",
     "ftp:2", "ftp:1", False),
    ("Table 4: FTP from the top three stages vs the top two (teacher FD)", "metrics", "{t}/{m}", "teacher/fd",
     "ftp:3", "ftp:2", False),
    ("Table 4: FTP from the top four stages vs the top three (teacher FD)", "metrics", "{t}/{m}", "teacher/fd",
     "ftp:4", "ftp:3", False),
]
FTP_VARIANT = re.compile(r"ni-ftp(\d+)")  # ni-ftp34: the FTP from teacher stages 3 and 4


def _per_seed(records: list[tuple[str, dict]]) -> dict[str, dict[str, dict]]:
    """{row: {value: stats over the seeds}} from (row key with the method's seed suffix, {value: number}) pairs."""
    groups: dict[str, dict[str, list[float]]] = {}
    for key, values in records:
        parts = key.split("/")
        parts[1] = seeds.split(parts[1])[0]
        for name, value in values.items():
            groups.setdefault("/".join(parts), {}).setdefault(name, []).append(value)
    return {k: {n: stats(v) for n, v in by.items()} for k, by in groups.items()}


def seed_rows(folder: Path) -> dict[str, dict[str, dict]]:
    """{section: {row without seed suffix: {value: stats}}} from every job's JSON in results/{experiment} (whichever
    params stack made it: a component-study overlay run on the same experiment adds its rows). `synthesis`: each
    seed's CE and BN term at the kept iteration, the mean over its shards."""
    def jobs(pattern: str, values_of, key=lambda k: k) -> dict[str, dict[str, dict]]:
        return _per_seed([(key(str(p.relative_to(folder).with_suffix("")).split("/", 1)[1]),
                           values_of(json.loads(p.read_text()))) for p in folder.glob(pattern)])

    def synthesis(method_dir: Path) -> dict[str, float]:
        shards = [json.loads(p.read_text())["final"] for p in sorted(method_dir.glob("shard-*.json"))]
        return {name: statistics.fmean(f[term] for f in shards) for name, term in (("final_ce", "ce"), ("final_bn", "bn"))}

    acc = lambda j: {"test_acc": j["test_acc"]}  # noqa: E731
    return {
        "kd": jobs("kd/*/*/*.json", acc),
        "scratch": jobs("scratch/*/*/*.json", acc),
        "prune": jobs("prune/*/*/ratio-*.json", acc, key=lambda k: k.replace("ratio-", "")),
        "metrics": jobs("metrics/*/*.json",
                        lambda j: {f"{net}/{k}": v[k] for net, v in j["embeddings"].items() for k in METRIC_KEYS}),
        "synthesis": _per_seed([(f"{d.parent.name}/{d.name}", synthesis(d)) for d in sorted(folder.glob("synth/*/*"))
                                if any(d.glob("shard-*.json"))]),
    }


def _value(by_name: dict, pattern: str) -> dict | None:
    if "*" not in pattern:
        return by_name.get(pattern)
    head, _, tail = pattern.partition("*")
    return next((v for n, v in sorted(by_name.items()) if n.startswith(head) and n.endswith(tail)), None)


def ftp_tops(methods) -> tuple[dict[int, str], int]:
    """({k: the method whose FTP reads the teacher's top k stages}, the teacher's stage count) from the methods that ran:
    `ni-ftp<stages>` variants and `ni` (all stages, as many as the deepest variant names); ({}, 0) without variants."""
    named = {m: [int(d) for d in found.group(1)] for m in methods if (found := FTP_VARIANT.fullmatch(m))}
    if not named:
        return {}, 0
    stages = max(max(s) for s in named.values())
    tops = {len(s): m for m, s in named.items() if s == list(range(stages - len(s) + 1, stages + 1))}
    return {**tops, stages: "ni"}, stages


def cells(folder: Path, pair: tuple[str, str] = ("ni", "di")) -> list[dict]:
    """One dict per claim (and pruning ratio) of one setting: the verdict and both sides' stats, or why none.
    `pair`: the methods that stand for NI and DI."""
    stand_in = dict(zip(("ni", "di"), pair))
    rows = seed_rows(folder)
    teacher = next((k.split("/")[0] for k in sorted(rows["kd"])), "")
    student = next((k.split("/")[2] for k in rows["kd"] if k.startswith(f"{teacher}/")), "")
    ratios = sorted({k.split("/")[2] for k in rows["prune"] if k.startswith(f"{teacher}/")} - {""})
    tops, stages = ftp_tops(k.split("/")[1] for k in rows["metrics"] if k.startswith(f"{teacher}/"))
    out = []
    for claim, section, template, name, a, b, higher in CLAIMS:
        if pair != ("ni", "di") and not {a, b} <= {"ni", "di"}:
            continue  # the component and FTP-stage variants are built on `ni` itself
        by_depth = a.startswith("ftp:")  # Table 4: which methods the row compares depends on the teacher's depth
        named = (a, b) != ("ni", "di") and not by_depth  # the table names the pair unless it is NI against DI
        if by_depth:
            if stages and int(a[4:]) > stages:
                out.append({"claim": claim, "verdict": "n/a", "stages": stages, "named": False})
                continue
            a, b = tops.get(int(a[4:]), a), tops.get(int(b[4:]), b)
        a, b = stand_in.get(a, a), stand_in.get(b, b)
        for r in (ratios if "{r}" in template else [None]):
            label = claim.format(r=f"{float(r):.0%}" if r else "")
            sides = [_value(rows[section].get(template.format(t=teacher, s=student, m=m, r=r), {}), name)
                     for m in (a, b)]
            if None in sides:
                out.append({"claim": label, "a": a, "b": b, "named": named, "verdict": "not run"})
                continue
            out.append({"claim": label, "named": named, **verdict(sides[0], sides[1], higher, (a, b))})
    return out


def fmt(s_mean: float, s_std: float | None) -> str:
    digits = 2 if abs(s_mean) < 20 else 1
    return f"{s_mean:.{digits}f}" + (f" ± {s_std:.{digits}f}" if s_std is not None else "")


def text(c: dict) -> str:
    if c["verdict"] == "not run":
        return "not run"
    if c["verdict"] == "n/a":
        return f"n/a ({c['stages']}-stage teacher)"
    claim_holds = c["verdict"] == f"{c['a']} ahead"
    word = ("**holds**" if claim_holds else "within noise" if c.get("within_noise")
            else "one seed" if c.get("within_noise") is None else "**reversed**")
    return f"{word}: {fmt(c['a_mean'], c['a_std'])} vs {fmt(c['b_mean'], c['b_std'])} (n={min(c['n'])})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="+", help="label=results/{experiment}")
    ap.add_argument("--out", help="write the markdown table here (also printed)")
    ap.add_argument("--json", help="append one JSON line per setting here")
    args = ap.parse_args()
    columns: dict[str, list[dict]] = {}
    pairs = set()
    for arg in args.settings:
        label, _, where = arg.partition("=")
        folder, _, methods = where.partition(":")
        pair = tuple(methods.split(",")) if methods else ("ni", "di")
        if len(pair) != 2:
            sys.exit(f"claims_matrix: {arg}: expected label=folder[:NI,DI]")
        if not (Path(folder) / "kd").is_dir():
            sys.exit(f"claims_matrix: {folder}: no kd/ results (run the setting's pipeline first)")
        columns[label] = cells(Path(folder), pair)
        pairs.add(pair)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"setting": label, "folder": folder, "cells": columns[label]}) + "\n")
    claims = list(dict.fromkeys(c["claim"] for col in columns.values() for c in col))
    only = pairs.pop() if len(pairs) == 1 else ("ni", "di")  # the header names a pair every column compares
    compared = "NI vs DI" if only == ("ni", "di") else " vs ".join(only)
    lines = [f"| claim: {compared} unless named | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for claim in claims:
        row = []
        for col in columns.values():
            c = next((c for c in col if c["claim"] == claim), None)
            row.append("—" if c is None else text(c))  # a claim this column does not make (variants of `ni` itself)
        sides = next(c for col in columns.values() for c in col if c["claim"] == claim)
        pair = f": {sides['a']} vs {sides['b']}" if sides["named"] else ""
        lines.append(f"| {claim}{pair} | " + " | ".join(row) + " |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(table)
        tmp.replace(args.out)


if __name__ == "__main__":
    sys.exit(main())
