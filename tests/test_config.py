"""Params validation: every bad input is one line naming the file, the key, the value and what is allowed."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from natinv.config import DIConfig, NIConfig, load_config
from natinv.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "params" / "default.yaml"


def overlay(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "profile.yaml"
    p.write_text(text)
    return p


def test_default_and_profiles_load():
    cfg = load_config([DEFAULT])
    assert cfg.data.dataset == "fashion-mnist"
    assert isinstance(cfg.synthesis.methods["ni"], NIConfig) and isinstance(cfg.synthesis.methods["di"], DIConfig)
    for profile in sorted((ROOT / "params").glob("*.yaml")):
        if profile.name != "smoke.yaml":  # an overlay for the paper profiles
            load_config([DEFAULT, profile])


def test_overlay_overrides_only_what_it_sets(tmp_path):
    cfg = load_config([DEFAULT, overlay(tmp_path, "synthesis:\n  methods:\n    ni: {kind: naturalinversion, iterations: 7}\n")])
    assert cfg.synthesis.methods["ni"].iterations == 7
    assert cfg.synthesis.methods["di"] == load_config([DEFAULT]).synthesis.methods["di"]


@pytest.mark.parametrize("text,expected", [
    ("synthesis: {batch_sise: 3}", r"profile.yaml: synthesis.batch_sise: unknown key; allowed keys here: .*batch_size"),
    ("synthesis: {batch_size: many}", r"profile.yaml: synthesis.batch_size: got 'many' \(str\); expected an integer"),
    ("synthesis: {batch_size: 0}", r"synthesis.batch_size: got 0; must be >= 1"),
    ("kd: {temperature: hot}", r"kd.temperature: got 'hot' \(str\); expected a number"),
    ("engine: {autocast: fp16}", r"engine.autocast: got 'fp16' \(str\); expected one of 'bf16' or null"),
    ("engine: {batches_per_step: 0}", r"engine.batches_per_step: got 0; must be >= 1"),
    ("data: {dataset: mnist}", r"data.dataset: got 'mnist' \(str\); expected one of 'fashion-mnist', 'cifar10'"),
    ("models: {x: {arch: resnet9}}", r"models.x.arch: got 'resnet9'; expected one of resnet8, resnet18"),
    ("synthesis: {run: [ni, gan]}", r"synthesis.run\[1\]: got 'gan'; expected one of the keys of synthesis.methods: ni, ni-ftp3, ni-ftp23, ni-ftp4, ni-ftp34, ni-ftp234, ni-o2m, ni-o2o, ni-o2o-ftp, ni-o2o-acs, di"),
    ("kd: {students: [nope]}", r"kd.students\[0\]: got 'nope'"),
    ("synthesis: {methods: {x: {kind: magic}}}", r"synthesis.methods.x.kind: got 'magic'; expected one of 'naturalinversion'"),
    ("synthesis: {methods: {ni: {kind: naturalinversion, flip: 1}}}", r"synthesis.methods.ni.flip: got 1 \(int\); expected true or false"),
    ("synthesis: {shards: 999}", r"synthesis.shards: got 999; at most 8"),
    ("data: {dataset: custom}", r"data.path: missing"),
    ("kd: {methods: [ni, gan]}", r"kd.methods\[1\]: got 'gan'; expected one of the methods run \(synthesis.run\): ni, di"),
    ("prune: {methods: [ni-o2m]}", r"prune.methods\[0\]: got 'ni-o2m'; expected one of the methods run"),
    ("prune: {teachers: [vgg]}", r"prune.teachers\[0\]: got 'vgg'; expected one of the teachers \(teacher.models\): resnet8-w16"),
    ("metrics: {tsne: {methods: [x]}}", r"metrics.tsne.methods\[0\]: got 'x'"),
    ("synthesis: {teachers: {gan: [resnet8-w16]}}", r"synthesis.teachers.gan: unknown method; expected keys of synthesis.methods"),
    ("synthesis: {teachers: {di: [vgg11-w8]}}", r"synthesis.teachers.di\[0\]: got 'vgg11-w8'; expected one of the teachers"),
    ("job_gpus: -1", r"job_gpus: got -1; must be >= 0"),
    ("job_gpus: 2", r"job_gpus: got 2; a stage process uses one GPU, so a job with more would leave all but one idle"),
    ("synthesis: {shards_per_job: {gan: 2}}", r"synthesis.shards_per_job.gan: unknown key; expected a key of synthesis.methods or a teacher"),
    ("synthesis: {shards_per_job: {ni: 0}}", r"synthesis.shards_per_job.ni: got 0; expected a whole number of shards >= 1"),
    ("- a list", r"profile.yaml: expected a mapping"),
    ("a: [unclosed", r"profile.yaml \(line \d+\): not valid YAML"),
    ("synthesis: {methods: {v: {base: nx}}}", r"profile.yaml: synthesis.methods.v.base: got 'nx'; expected the name of another method of synthesis.methods: ni, "),
    ("synthesis: {methods: {v: {base: w}, w: {base: v}}}", r"synthesis.methods.w.base: got 'v'; methods cannot derive from each other in a circle \(v -> w -> v\)"),
    ("synthesis: {methods: {v: {base: v}}}", r"synthesis.methods.v.base: got 'v'; expected the name of another method"),
    ("synthesis: {methods: {v: {base: di, ftp: false}}}", r"synthesis.methods.v.ftp: unknown key; allowed keys here: kind, "),
])
def test_bad_values_give_one_clear_line(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load_config([DEFAULT, overlay(tmp_path, text)])
    assert "\n" not in str(info.value)


def test_error_names_the_file_that_set_the_key(tmp_path):
    good = overlay(tmp_path, yaml.safe_dump({"kd": {"epochs": 2}}))
    bad = tmp_path / "second.yaml"
    bad.write_text("kd: {lr: -1}\n")
    with pytest.raises(ConfigError, match=r"second.yaml: kd.lr: got -1.0; must be > 0"):
        load_config([DEFAULT, good, bad])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: params file not found"):
        load_config([tmp_path / "nope.yaml"])


@pytest.mark.parametrize("key, changed", [
    ("ni-ftp3", {"ftp_stages": [3]}),  # Table 4
    ("ni-ftp23", {"ftp_stages": [2, 3]}),
    ("ni-o2m", {"o2o": False, "ftp": False, "acs": False}),  # Table 3
    ("ni-o2o", {"ftp": False, "acs": False}),
    ("ni-o2o-ftp", {"acs": False}),
    ("ni-o2o-acs", {"ftp": False}),
])
def test_ablation_variants_are_ni_with_only_their_switches_changed(key, changed):
    """The Table 3/4 variants in default.yaml (`base: ni`) are ni's settings with only the named switches changed."""
    cfg = load_config([ROOT / "params/default.yaml"])
    ni = dataclasses.asdict(cfg.synthesis.methods["ni"])
    variant = dataclasses.asdict(cfg.synthesis.methods[key])
    assert {k: v for k, v in variant.items() if v != ni[k]} == changed


@pytest.mark.parametrize("text, expected", [
    ("metrics: {tsne: {layers: [stage0]}}", r"metrics.tsne.layers: got 'stage0'; expected 'stageK' \(K >= 1\) or 'embedding'"),
    ("synthesis: {methods: {real: {kind: deepinversion}}}", r"synthesis.methods.real: 'real' is reserved for the real-data reference rows"),
])
def test_bad_metrics_values_give_one_clear_line(tmp_path, text, expected):
    (tmp_path / "profile.yaml").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config([DEFAULT, tmp_path / "profile.yaml"])


def test_lists_from_snakemake_config_are_read_as_yaml_scalars():
    """Snakemake's --config gives `seeds=[0,1,2]` as strings; keys set elsewhere keep theirs."""
    from natinv.config import config_from_dict, retype_lists

    raw = {"seeds": ["0", "1", "2"], "prune": {"ratios": ["0.5"]}, "kd": {"students": ["resnet8-w8"]}, "experiment": "x"}
    origin = {"seeds": "snakemake --config", "prune.ratios": "snakemake --config"}
    typed = retype_lists(raw, origin, "snakemake --config")
    assert typed == {"seeds": [0, 1, 2], "prune": {"ratios": [0.5]}, "kd": {"students": ["resnet8-w8"]}, "experiment": "x"}
    with pytest.raises(ConfigError, match=r"seeds: got \['0', '1', '2'\] \(list\); expected a list of integers or null"):
        config_from_dict({"seeds": ["0", "1", "2"]}, origin)


def test_a_variant_follows_every_change_of_its_base(tmp_path):
    """`base: ni` derives from ni as the whole stack sets it: a profile that changes ni changes ni-ftp3, and a variant's
    own keys (and a variant of a variant) still win."""
    cfg = load_config([DEFAULT, overlay(tmp_path, "synthesis:\n  methods:\n    ni: {iterations: 7, lambda_bn: 2.0}\n"
                                                  "    ni-x: {base: ni-ftp3, lambda_bn: 5.0}\n")])
    assert cfg.synthesis.methods["ni-ftp3"].iterations == 7 and cfg.synthesis.methods["ni-ftp3"].lambda_bn == 2.0
    assert cfg.synthesis.methods["ni-ftp3"].ftp_stages == [3]
    x = cfg.synthesis.methods["ni-x"]
    assert (x.iterations, x.lambda_bn, x.ftp_stages) == (7, 5.0, [3])


@pytest.mark.parametrize("params", sorted(p.name for p in (ROOT / "params").glob("*.yaml")))
def test_dvc_set_param_changes_only_the_key_it_sets(tmp_path, params):
    """`dvc exp run -S file:key=value` rewrites the whole params file (ruamel, Hydra): every file is written in the form
    that survives it (block lists, no anchors, empty for null), so the only line that changes is the key's."""
    import difflib

    from dvc.utils.hydra import apply_overrides

    text = (ROOT / "params" / params).read_text()
    assert not any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in yaml.parse(text)), (
        f"{params}: YAML anchors/aliases (DVC expands them when it writes the file)")
    copy = tmp_path / params
    copy.write_text(text)
    sets_kd = "\nkd:\n  epochs:" in text
    apply_overrides(copy, ["kd.epochs=31" if sets_kd else "+probe=1"])
    changed = [d for d in difflib.unified_diff(text.splitlines(), copy.read_text().splitlines(), lineterm="", n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    if sets_kd:
        assert len(changed) == 2 and changed[0].startswith("-  epochs: ") and changed[1].startswith("+  epochs: 31"), changed
    else:
        assert changed == ["+probe: 1"], changed
