"""Stage `report`: report.md, figures, summary.json and the headline numbers from the stage outputs, made by the parts
in natinv.report (collect gathers the results, plots draws the figures, markdown writes the tables, html the
self-contained page of report.md, headline the few numbers per method that DVC and MLflow show first)."""
from __future__ import annotations

import json
import time

from natinv import paths
from natinv.config import Config
from natinv.data import read_manifest
from natinv.io import atomic_write_bytes, atomic_write_json, staged
from natinv.report import headline, html
from natinv.report.collect import collect
from natinv.report.markdown import render
from natinv.report.plots import write_figures
from natinv.tracking import Outcome


def run(cfg: Config, device=None) -> Outcome:
    """Every file of the report, written only once all of them are made: a report that fails on any input leaves the
    previous report, figures and plots as they were."""
    start = time.perf_counter()
    manifest = read_manifest(paths.data_dir(cfg.exp_dir))
    report, page, summary_json = (paths.at(cfg.exp_dir, paths.REPORT[k]) for k in ("report", "html", "summary"))
    with staged():
        summary = collect(cfg)
        made = write_figures(cfg, summary, manifest)
        text = render(cfg, summary, manifest, made)
        atomic_write_bytes(report, text.encode())
        atomic_write_bytes(page, html.render(text, report.parent, f"natinv report: {cfg.experiment}").encode())
        summary["report_seconds"] = time.perf_counter() - start
        atomic_write_json(summary_json, summary)
        write_headline(paths.at(cfg.exp_dir, paths.REPORT["headline"]), headline.rows(cfg, summary))
    from natinv.runtime import log

    log(f"report: {report} ({len(made)} figures, {summary['report_seconds']:.1f} s)")
    out = paths.report_dir(cfg.exp_dir)  # the figures' paths in `made` are relative to it, as report.md links them
    return Outcome(summary, artifacts=[report, page, summary_json, *(out / p for p in made.values())])


def write_headline(folder, rows: dict[str, dict[str, float]]) -> None:
    """One `{row}.json` per headline row in `folder` (those of rows no longer in the run removed): plain JSON, no seal
    (a view of summary.json for DVC and MLflow, which no stage reads back)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        if stale.stem not in rows:
            stale.unlink()
    for name, values in rows.items():
        atomic_write_bytes(folder / f"{name}.json", (json.dumps(values, indent=1) + "\n").encode())
