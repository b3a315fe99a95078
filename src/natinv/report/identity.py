"""Which of the paper's methods a configured method is (natinv.synthesis.registry knows each kind's rules), so
that the report can put the paper's numbers beside ours."""
from __future__ import annotations

from natinv.config import Config
from natinv.synthesis import registry


def ni_switches(cfg: Config, method: str) -> tuple[bool, bool, bool] | None:
    """(o2o, ftp, acs) of an NI method whose FTP uses every stage, without ADI's competition (the Table 3 / Fig. 5
    variants); None otherwise."""
    c = cfg.synthesis.methods[method]
    return registry.of(c).switches(c)


def paper_key(cfg: Config, method: str) -> str | None:
    """Which of the paper's methods `method` is, for its published numbers: real, dafl, dfad, deepinversion, adi,
    naturalinversion (all components, every FTP stage) or ni-adi; None for an ablation variant."""
    if method == "real":
        return "real"
    c = cfg.synthesis.methods[method]
    return registry.of(c).paper_key(c)


def kd_accs(summary: dict, teacher: str, method: str) -> list[float]:
    """KD test accuracies of every student distilled from (teacher, method)'s images."""
    return [v["test_acc"] for k, v in summary["kd"].items() if k.startswith(f"{teacher}/{method}/")]


def fig5_methods(cfg: Config, ran: list[str]) -> dict[str, str]:
    """Paper Fig. 5's three curves when this run has them: DI, NI's generator without one-to-one (and without FTP and
    ACS), and NI with everything; label -> method key. Empty when one is missing."""
    def first(test) -> str | None:
        return next((m for m in ran if test(m)), None)

    picks = {"DI": first(lambda m: paper_key(cfg, m) == "deepinversion"),
             "one-to-many": first(lambda m: ni_switches(cfg, m) == (False, False, False)),
             "NI (ours)": first(lambda m: ni_switches(cfg, m) == (True, True, True))}
    return {f"{label}: {m}": m for label, m in picks.items()} if all(picks.values()) else {}
