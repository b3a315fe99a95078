"""Seed replicas (`seeds: [...]`): the jobs they add, the seed a replica runs with, and the report's mean ± std and
within-noise verdicts."""
import json
from pathlib import Path

import numpy as np
import pytest

from natinv import paths
from natinv.config import load_config
from natinv.errors import ConfigError
from natinv.io import atomic_write_json
from natinv.pipeline import STAGES
from natinv.report.spread import comparisons, over_seeds, verdict

ROOT = Path(__file__).resolve().parents[1]
TINY = [ROOT / "params/default.yaml", ROOT / "params/tiny.yaml"]


def _cfg(tmp_path: Path | None = None, **overrides):
    extra = {"results": str(tmp_path)} if tmp_path else {}
    return load_config(TINY, [{k: v for k, v in {**overrides, **extra}.items()}])


def test_each_other_seed_adds_a_replica_of_every_seeded_job():
    one, three = _cfg(), _cfg(seeds=[0, 1, 2])
    assert three.extra_seeds == [1, 2] and _cfg(seeds=[0]).extra_seeds == [] and _cfg(seeds=[3]).extra_seeds == [3]
    for stage in ("synthesize", "kd", "scratch", "metrics", "prune"):
        base, reps = STAGES[stage].jobs(one), STAGES[stage].jobs(three)
        fixed = [j for j in base if j.get("method") in ("none",) or (stage == "metrics" and j["method"] == "real")]
        assert len(reps) == 3 * (len(base) - len(fixed)) + len(fixed), stage  # `none` and the metrics floor: one each
        assert {j["method"] for j in reps} >= {"ni-seed1", "ni-seed2", "di-seed2"}
    assert {j["method"] for j in STAGES["kd"].jobs(three)} >= {"real-seed1", "real-seed2"}
    for stage in ("data", "teacher", "evaluator", "tsne", "report"):
        assert STAGES[stage].jobs(three) == STAGES[stage].jobs(one)


def test_a_replica_runs_its_method_with_its_own_seed_and_tracks_the_method_settings():
    cfg = _cfg(seeds=[0, 1, 2])
    assert cfg.for_job("ni-seed2").seed == 2 and cfg.for_job("ni").seed == 0 and cfg.for_job(None) is cfg
    assert cfg.job_methods["ni-seed2"] is cfg.synthesis.methods["ni"]
    assert cfg.shards_of("di-seed1") == cfg.shards_of("di")
    w = {"teacher": "resnet8-w16", "method": "ni-seed1", "student": "resnet8-w8"}
    assert STAGES["kd"].params(cfg, w) == STAGES["kd"].params(cfg, {**w, "method": "ni"})
    assert STAGES["kd"].variant({"method": "real-seed1"}) is STAGES["kd"].variant({"method": "real"}) is not None
    assert paths.shard_npz(cfg.exp_dir, "resnet8-w16", "ni-seed1", 0) in STAGES["kd"].inputs(cfg, w, False)


@pytest.mark.parametrize("overrides, key", [
    ({"seeds": [0, 0]}, "seeds"), ({"seeds": [-1]}, "seeds"),
    ({"synthesis": {"methods": {"x-seed3": {"kind": "deepinversion"}}}}, "synthesis.methods.x-seed3"),
])
def test_bad_seeds_and_reserved_method_names_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(**overrides)


def test_verdict_says_within_noise_only_when_the_gap_is_inside_the_spread():
    def s(*v):
        from natinv.report.spread import stats
        return stats(list(v))

    assert verdict(s(60, 62, 64), s(50, 52, 54), True, ("ni", "di"))["verdict"] == "ni ahead"  # gap 10, spread 4
    assert verdict(s(60, 62, 64), s(59, 61, 63), True, ("ni", "di"))["within_noise"] is True  # gap 1, spread 4
    assert verdict(s(60, 62, 64), s(50, 52, 54), False, ("ni", "di"))["verdict"] == "di ahead"  # lower is better (FD)
    one = verdict(s(70), s(50, 52, 54), True, ("ni", "di"))
    assert one["within_noise"] is None and one["spread"] is None and "one seed" in one["verdict"]


def _write_kd(exp: Path, teacher: str, method: str, student: str, acc: float) -> None:
    path = paths.kd_json(exp, teacher, method, student)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"test_acc": acc, "images": 10, "seconds": 1.0, "epochs": []})


def test_the_report_aggregates_the_replicas_and_marks_each_comparison(tmp_path):
    cfg = _cfg(tmp_path, seeds=[0, 1, 2])
    t, s = "resnet8-w16", "resnet8-w8"
    accs = {"ni": [70, 71, 72], "di": [69, 72, 75], "real": [80, 81, 82], "ni-o2m": [50, 51, 52]}
    for m, values in accs.items():
        for seed, acc in zip((0, 1, 2), values):
            _write_kd(cfg.exp_dir, t, m if seed == 0 else f"{m}-seed{seed}", s, acc)
    spread = over_seeds(cfg)
    assert spread["seeds"] == [0, 1, 2]
    ni = spread["kd"][f"{t}/ni/{s}"]["test_acc"]
    assert ni["n"] == 3 and ni["mean"] == 71 and ni["std"] == pytest.approx(1.0) and ni["values"] == [70, 71, 72]
    found = {(c["a"], c["b"]): c for c in comparisons(cfg, spread) if c["section"] == "kd"}
    assert found[("ni", "di")]["verdict"] == "within noise" and found[("ni", "di")]["within_noise"] is True  # 71 vs 72 ± 3
    assert found[("ni", "real")]["verdict"] == "real ahead"
    assert found[("ni-o2m", "di")]["verdict"] == "di ahead"
    assert ("di", "di") not in found and ("real", "di") not in found
    # the plain rows keep this seed's value; summary rows never list a replica
    from natinv.report.collect import collect

    summary = collect(cfg)
    assert summary["kd"][f"{t}/ni/{s}"]["test_acc"] == 70 and not any("seed" in k for k in summary["kd"])
    assert json.loads(json.dumps(summary))["comparisons"]  # what summary.json holds
    # the wall-time table counts every seed's jobs; a replica's shards in its method's row
    for m, seconds in (("ni", 2.0), ("ni-seed1", 3.0), ("ni-seed2", 4.0)):
        shard = paths.shard_json(cfg.exp_dir, t, m, 0)
        shard.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(shard, {"seconds": seconds})
    compute = collect(cfg)["compute"]
    assert compute["kd"] == {"jobs": 12, "seconds": [1.0] * 12}
    assert compute[f"synthesize {t}/ni"] == {"jobs": 3, "seconds": [2.0, 3.0, 4.0]}
    assert set(compute) == {"kd", f"synthesize {t}/ni"}  # only what ran


def test_a_replica_job_through_the_cli_differs_from_its_method_and_repeats_itself(tmp_path):
    """`--method ni-seed1` with seeds [0, 1]: its own images (another seed), the same bytes when run again; without
    the seed in `seeds` the name is refused in one line."""
    from natinv.cli import main
    from pipeline import tiny_params

    params = tiny_params(tmp_path)
    assert main(["data", *params, "--threads", "1"]) == 0
    assert main(["teacher", *params, "--teacher", "resnet8-w16", "--set", "teacher.epochs=1"]) == 0
    seeds = ["--set", "seeds=[0, 1]", "--set", "teacher.epochs=1", "--set", "synthesis.methods.ni.iterations=2"]
    exp = tmp_path / "results" / "tiny"
    shard = {}
    for run, method in enumerate(("ni", "ni-seed1", "ni-seed1")):
        assert main(["synthesize", *params, *seeds, "--teacher", "resnet8-w16", "--method", method, "--shard", "0"]) == 0
        shard[run] = np.load(paths.shard_npz(exp, "resnet8-w16", method, 0))["images"]
    assert not np.array_equal(shard[0], shard[1]) and np.array_equal(shard[1], shard[2])
    assert main(["synthesize", *params, "--set", "teacher.epochs=1", "--teacher", "resnet8-w16", "--method", "ni-seed2",
                 "--shard", "0"]) == 2
