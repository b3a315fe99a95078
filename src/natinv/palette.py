"""One colour per method in every figure: the report's, the t-SNE, DVC's plots and Snakemake's report.

The first method of a kind that a run uses has its kind's colour (the paper's Fig. 4: NaturalInversion orange,
DeepInversion purple; natinv.synthesis.registry); real images are green, the teacher black, "none" (pruned, not
fine-tuned) grey; every other method takes the next free colour of SPARE, in the order the run lists its methods. A
seed replica (`ni-seed1`) has its method's colour.

Importing this module does not import torch.
"""
from __future__ import annotations

from natinv.config import Config, seeds
from natinv.synthesis import registry

REAL, TEACHER, NONE = "#2ca02c", "#000000", "#7f7f7f"
SPARE = ("#1f77b4", "#d62728", "#bcbd22", "#17becf", "#8c564b", "#e377c2", "#393b79", "#ad494a", "#8c6d31", "#7b4173")
FIXED = {"real": REAL, "teacher": TEACHER, "none": NONE}


def method_colors(cfg: Config) -> dict[str, str]:
    """{name: hex colour} for real, teacher, none and every method the run uses (then every other defined method)."""
    methods = cfg.synthesis.methods
    order = list(dict.fromkeys([*cfg.run_methods, *methods]))
    out = dict(FIXED)
    taken = set(out.values())
    for m in order:
        kind = registry.of(methods[m]).color
        if kind is not None and kind not in taken:
            out[m] = kind
        else:
            out[m] = next((c for c in SPARE if c not in taken), SPARE[len(out) % len(SPARE)])
        taken.add(out[m])
    return out


def color_of(colors: dict[str, str], name: str) -> str:
    """The colour of a method, a seed replica of one, or real/teacher/none."""
    return colors.get(name) or colors.get(seeds.split(name)[0], NONE)
