"""DVC's plots in the project's colours, offline: the Vega-Lite templates dvc.yaml's charts use (a line per method in
its colour, natinv.palette; a dashed line per other revision in `dvc plots diff`), and the HTML page `dvc plots show`
fills (Vega, Vega-Lite and Vega-Embed inline, from vl-convert-python: no CDN, so the page renders without a network).

    python -m natinv.dvc_plots PAGE    # write the offline page (workflow/setup.sh does; .dvc/config names it)

Importing this module does not import torch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from natinv.config import Config
from natinv.io import atomic_write_bytes
from natinv.palette import method_colors

PAGE = Path("workflow/dvc/offline.html")  # .dvc/config's plots.html_template (relative to .dvc/: ../workflow/dvc/offline.html)


def template_path(cfg: Config, log_y: bool) -> Path:
    """The template of an experiment's charts, relative to the repository root (where DVC looks for it)."""
    return Path("workflow") / "dvc" / "plots" / f"{cfg.experiment}-{'log' if log_y else 'linear'}.json"


def template(cfg: Config, log_y: bool) -> dict:
    """A Vega-Lite line chart with DVC's anchors, coloured by the `method` column of the CSV files (the legend lists
    real images, the teacher and the methods the run uses)."""
    shown = {"real", "teacher", *cfg.run_methods}
    colors = {m: c for m, c in method_colors(cfg).items() if m in shown}
    y_scale = {"type": "log"} if log_y else {"zero": False}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": "<DVC_METRIC_DATA>"}, "title": "<DVC_METRIC_TITLE>", "width": 420, "height": 300,
        "mark": {"type": "line", "tooltip": True},
        "encoding": {
            "x": {"field": "<DVC_METRIC_X>", "type": "quantitative", "title": "<DVC_METRIC_X_LABEL>"},
            "y": {"field": "<DVC_METRIC_Y>", "type": "quantitative", "title": "<DVC_METRIC_Y_LABEL>", "scale": y_scale},
            "color": {"field": "method", "type": "nominal", "title": "method",
                      "scale": {"domain": list(colors), "range": list(colors.values())}},
            "strokeDash": {"field": "rev", "type": "nominal", "title": "revision"},
            "detail": {"field": "filename", "type": "nominal"},
        },
    }


def write_templates(cfg: Config) -> dict[bool, Path]:
    """Both templates of an experiment (linear and log y), written under the current folder (the repository root)."""
    out = {}
    for log_y in (False, True):
        path = template_path(cfg, log_y)
        atomic_write_bytes(path, (json.dumps(template(cfg, log_y), indent=1) + "\n").encode())
        out[log_y] = path
    return out


def offline_page() -> str:
    """DVC's HTML page template with the Vega libraries inline ({plot_divs}: where DVC puts the charts)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots (natinv)</title>\n"
            f"<script>{bundle}</script>\n<style>body{{font-family:system-ui,sans-serif}}</style>\n</head>\n"
            "<body>\n{plot_divs}\n</body>\n</html>\n")


def write_page(path: Path = PAGE) -> Path:
    atomic_write_bytes(Path(path), offline_page().encode())
    return Path(path)


if __name__ == "__main__":
    print(f"natinv: wrote {write_page(Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE)} (DVC's offline plots page)")
