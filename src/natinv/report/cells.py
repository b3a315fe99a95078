"""The report's cells and small lookups: a result with its spread over seeds, a comparison's verdict in words, a
markdown table, the embeddings the metrics used."""
from __future__ import annotations

from natinv.config import Config
from natinv.report.spread import cell as spread_cell


def stats_of(summary: dict, section: str, key: str, name: str) -> dict | None:
    """A result's statistics over the run's seeds (natinv.report.spread), if collected."""
    return summary.get("seeds", {}).get(section, {}).get(key, {}).get(name)


def acc_cell(summary: dict, section: str, key: str, value: dict, name: str = "test_acc", digits: int = 2) -> str:
    """A result's cell: mean ± std over the run's seeds when it has several, else this seed's value, in bold."""
    s = stats_of(summary, section, key, name)
    return spread_cell(s, digits) if s and s["n"] > 1 else f"**{value[name]:.{digits}f}**"


def mean_of(summary: dict, section: str, key: str, value: dict, name: str = "test_acc") -> float:
    """A result's mean over the run's seeds, or this seed's value."""
    s = stats_of(summary, section, key, name)
    return s["mean"] if s else value[name]


def verdict_words(summary: dict, section: str, row: str, a: str, b: str, value: str = "test_acc") -> str:
    """What the comparison of methods a and b on `row` can say (natinv.report.spread), in words."""
    for c in summary.get("comparisons", []):
        if (c["section"], c["row"], c["value"], c["b"]) == (section, row, value, b):
            if c["spread"] is None:
                return "one seed, spread unknown"
            return f"means over {min(c['n'])} seeds, {c['verdict']}: spread ±{c['spread']:.2f}"
    return "one seed, spread unknown"


def md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(map(str, r)) + " |" for r in rows), ""]


def embeddings_of(summary: dict) -> list[str]:
    """The embeddings the metrics were computed in: the teacher first, then the evaluators."""
    return sorted({k.split("/")[0] for v in summary["metrics"].values() for k in v if "/" in k}, key=lambda n: (n != "teacher", n))


def reference_count(summary: dict) -> str:
    """How many real training images the metrics jobs compared against, as they report it (metrics.reference_images,
    or every training image when there are fewer)."""
    counts = sorted({v["reference_images"] for v in summary["metrics"].values() if "reference_images" in v})
    return " to ".join(f"{n:,}" for n in (counts[:1] + counts[-1:] if len(counts) > 1 else counts)) or "the"


def sum_max(values: list[float]) -> list[str]:
    return [f"{sum(values):.0f}", f"{max(values, default=0):.0f}"]


def model_words(cfg: Config, key: str) -> str:
    spec = cfg.models[key]
    return spec.arch if spec.width is None else f"{spec.arch} width {spec.width}"
