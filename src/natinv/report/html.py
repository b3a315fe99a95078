"""report.html: report.md rendered as one self-contained page (tables as HTML, every figure embedded), readable in a
browser without the figures folder and embedded as is in Snakemake's report (`snakemake --report report.html`)."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from natinv.io import current_bytes

STYLE = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:0 .2rem}h1,h2,h3{margin-top:2rem}"""


def _embed(page: str, folder: Path) -> str:
    """Every <img src="relative.png"> of `page` as a data URI of the file under `folder` (a missing file stays a link)."""
    def data_uri(match: re.Match) -> str:
        src = html.unescape(match[2])
        data = None if "://" in src else current_bytes(folder / src)  # a figure of this report run, written or not yet
        if data is None:
            return match[0]
        return f'{match[1]}data:image/png;base64,{base64.b64encode(data).decode()}{match[3]}'

    return re.sub(r'(<img src=")([^"]+)(")', data_uri, page)


def render(markdown: str, folder: Path, title: str) -> str:
    """The page of `markdown` (report.md's text), whose relative image links are files under `folder`."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{_embed(body, folder)}</body></html>\n")
