"""Stage `report`: report.md, figures and summary.json from the stage outputs. collect gathers the results, plots
draws the figures, markdown writes the tables (identity: which paper method each configured method is)."""
from __future__ import annotations

import time

from natinv import paths
from natinv.config import Config
from natinv.data import read_manifest
from natinv.io import atomic_write_bytes, atomic_write_json
from natinv.report.collect import collect, report_dir
from natinv.report.markdown import render
from natinv.report.plots import write_figures
from natinv.tracking import Outcome


def run(cfg: Config, device=None) -> Outcome:
    start = time.perf_counter()
    manifest = read_manifest(paths.data_dir(cfg.exp_dir))
    summary = collect(cfg)
    made = write_figures(cfg, summary, manifest)
    out = report_dir(cfg)
    text = render(cfg, summary, manifest, made)
    atomic_write_bytes(out / "report.md", text.encode())
    summary["report_seconds"] = time.perf_counter() - start
    atomic_write_json(out / "summary.json", summary)
    from natinv.runtime import log

    log(f"report: {out / 'report.md'} ({len(made)} figures, {summary['report_seconds']:.1f} s)")
    return Outcome(summary, artifacts=[out / "report.md", out / "summary.json", *(out / p for p in made.values())])
