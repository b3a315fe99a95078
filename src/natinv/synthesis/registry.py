"""The synthesis methods, one entry per `kind` of synthesis.methods: its config class, the module that synthesizes a
shard, whether it runs as one shard, and how the report names it after the paper. Nothing outside this module asks
which kind a method is; adding a method is its config class (natinv.config.schema), its module (a `run_shard(job)`
function, natinv.synthesis.shard.ShardJob) and one entry here.

Importing this module does not import torch: the config loader reads it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from natinv.config.schema import DAFLConfig, DFADConfig, DIConfig, MetaConfig, MethodConfig, NIConfig


def _none(config) -> None:
    return None


@dataclass(frozen=True)
class MethodKind:
    kind: str
    config: type
    paper_name: str  # the method's name in the paper's tables
    module: str  # natinv.synthesis.<module>: run_shard(job) synthesizes one shard
    generative: bool  # trains a generator, then samples its images (one training run, no per-batch optimization)
    color: str | None = None  # the colour of its first method in every figure (natinv.palette; None: a spare colour)
    # which of the paper's rows a method of this kind is, for its published numbers (None: an ablation variant)
    paper_key: Callable[[MethodConfig], str | None] = field(default=lambda c: c.kind)
    # NI's components (one-to-one, FTP, ACS) when every FTP stage is used and there is no competition (the paper's
    # Table 3 / Fig. 5 variants); None for any other method
    switches: Callable[[MethodConfig], tuple[bool, bool, bool] | None] = _none
    # the teacher stages (1-based) a method's FTP reads, given the teacher's stage count; None without an FTP
    ftp_stages: Callable[[MethodConfig, int], list[int] | None] = lambda c, stages: None
    competition: Callable[[MethodConfig], float] = lambda c: 0.0  # ADI's teacher-student competition weight
    # the meta-learned initialization a method's batches start from (ni-fast: NI with `meta`); its warm-up is the
    # `meta` stage, which every shard reads
    meta: Callable[[MethodConfig], MetaConfig | None] = _none
    check: Callable[[MethodConfig, str, Callable[[str, str], None]], None] = lambda c, where, fail: None

    def synthesizer(self) -> Callable:
        """run_shard of the method's module (imports torch)."""
        return importlib.import_module(f"natinv.synthesis.{self.module}").run_shard

    def cotrain_reason(self, c: MethodConfig) -> str | None:
        """Why a method of this kind must train a student while it synthesizes (its `cotrain`), or None."""
        if self.generative:
            return f"kind {self.kind!r}"
        if self.competition(c) > 0:
            return f"competition = {self.competition(c):g}"
        return None


def _ni_key(c: NIConfig) -> str | None:
    if c.ftp_stages or c.meta is not None or not (c.o2o and c.ftp and c.acs):
        return None
    return "ni-adi" if c.competition else "naturalinversion"


def _ni_switches(c: NIConfig) -> tuple[bool, bool, bool] | None:
    return None if c.ftp_stages or c.competition or c.meta is not None else (c.o2o, c.ftp, c.acs)


def _ni_check(c: NIConfig, where: str, fail: Callable[[str, str], None]) -> None:
    s = c.ftp_stages
    if s is not None and (not s or any(k < 1 for k in s) or len(set(s)) != len(s)):
        fail(f"{where}.ftp_stages", f"got {s!r}; expected distinct stage numbers >= 1")
    if c.meta is not None and not c.o2o:
        fail(f"{where}.meta", "set with o2o: false; meta-parameters are the start of each batch's own generator (one-to-one)")
    if c.meta is not None and c.cotrain is not None:
        fail(f"{where}.meta", "set with cotrain; a co-trained method runs as one shard, with no warm-up stage")


METHODS: dict[str, MethodKind] = {k.kind: k for k in (
    MethodKind("naturalinversion", NIConfig, "NaturalInversion", "naturalinversion", False, "#ff7f0e",
               paper_key=_ni_key, switches=_ni_switches,
               ftp_stages=lambda c, stages: list(c.ftp_stages or range(1, stages + 1)) if c.ftp else None,
               competition=lambda c: c.competition, check=_ni_check, meta=lambda c: c.meta),
    MethodKind("deepinversion", DIConfig, "DeepInversion", "deepinversion", False, "#9467bd",
               paper_key=lambda c: "adi" if c.competition else "deepinversion", competition=lambda c: c.competition),
    MethodKind("dafl", DAFLConfig, "DAFL", "dafl", True, "#8c564b"),
    MethodKind("dfad", DFADConfig, "DFAD", "dfad", True, "#e377c2"),
)}


def of(c: MethodConfig) -> MethodKind:
    """The registry entry of a method's config."""
    return METHODS[c.kind]


def meta_of(c: MethodConfig) -> MetaConfig | None:
    """The meta-learned start a method's batches begin from (ni-fast), or None: then no warm-up stage."""
    return of(c).meta(c)


def of_kind(methods: dict[str, MethodConfig], kind: str) -> dict[str, MethodConfig]:
    """The methods of one kind, in order (e.g. the NI methods whose settings a table lists)."""
    return {k: c for k, c in methods.items() if c.kind == kind}
