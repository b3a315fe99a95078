"""The systematic search: a matrix of bad and edge inputs generated from the params schema and the file contract, not
typed by hand. Every case ends as exit 2 with one line naming the cause (the key, the file), or as correct handling
of a valid input; nothing outside results/ changes, and nothing earlier under results/ is lost.

Classes (README, "When something goes wrong"):
- params: every leaf key of the default + tiny profile, at its bound, just outside it, NaN, infinities, wrong types
  and edge values that pass the schema (loaded as every stage loads them; accepted ones are then planned, every job
  of every stage);
- files: every file a stage reads back (data, manifest, teacher checkpoint, shard, stage JSONs), truncated, emptied,
  with a flipped byte, replaced by another kind of file natinv wrote, or by the same file of another experiment;
- environment: garbage in every variable natinv reads;
- data: every image mode and bit depth Pillow writes, non-regular files, symbolic link loops, degenerate sizes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natinv.cli import main
from natinv.config import load_config
from natinv.config.loader import read_params_file
from natinv.config.schema import Config
from natinv.errors import NatinvError
from pipeline import ROOT, tiny_params

PROFILES = [ROOT / "params/default.yaml", ROOT / "params/tiny.yaml"]

# ------------------------------------------------------------------------------------------------ params, generated


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def _field(path: str) -> dataclasses.Field | None:
    """The schema field a dotted params key lands on (through `models.<key>` and `synthesis.methods.<key>`)."""
    from natinv.synthesis import registry

    raw = read_params_file(PROFILES[0])
    tp: object = Config
    parts = path.split(".")
    for i, part in enumerate(parts):
        if typing.get_origin(tp) is dict:  # a mapping of named specs: the value type of the mapping
            if parts[i - 1] == "methods" and parts[0] == "synthesis":
                kind = raw["synthesis"]["methods"].get(part, {}).get("kind", "naturalinversion")
                tp = registry.METHODS[kind].config if kind in registry.METHODS else None
            else:
                tp = typing.get_args(tp)[1]
            continue
        if not dataclasses.is_dataclass(tp):
            return None
        fields = {f.name: f for f in dataclasses.fields(tp)}
        if part not in fields:
            return None
        f = fields[part]
        if i == len(parts) - 1:
            return f
        hint = typing.get_type_hints(tp)[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        tp = args[0] if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) and len(args) == 1 else hint
    return None


@dataclass(frozen=True)
class ParamCase:
    key: str
    value: object
    must_fail: bool  # outside what the schema allows: exit 2 naming the key; else either a clean error or accepted

    @property
    def id(self) -> str:
        return f"{self.key}={self.value!r}"[:80]


def _param_cases() -> list[ParamCase]:
    merged: dict = {}
    for p in PROFILES:
        _deep_merge(merged, read_params_file(p))
    cases = []
    for key, value in _leaves(merged):
        if key.startswith(("models.", "synthesis.teachers")) and not key.endswith((".arch", ".width")):
            continue
        f = _field(key)
        meta = dict(f.metadata) if f is not None else {}
        wrong_type = ["abc", [1, 2], {"a": 1}]
        if isinstance(value, bool):
            cases += [ParamCase(key, v, True) for v in ("maybe", 2, [True])]
        elif isinstance(value, (int, float)):
            integer = isinstance(value, int) and not (f is not None and "float" in str(f.type))
            cases += [ParamCase(key, v, True) for v in (math.nan, math.inf, -math.inf, *wrong_type)]
            if "below" in meta:
                cases += [ParamCase(key, meta["below"], True), ParamCase(key, meta["below"] * 10, True)]
            if "min" in meta:
                low = meta["min"]
                outside = low if meta.get("exclusive") else (low - 1 if integer else low - 1e-9)
                cases.append(ParamCase(key, outside, True))
                if not meta.get("exclusive"):
                    cases.append(ParamCase(key, low, False))  # at the bound: valid, however odd
            cases.append(ParamCase(key, 10**9 if integer else 1e12, False))  # passes the schema, makes little sense
            if integer:
                cases.append(ParamCase(key, 2.5, True))
        elif isinstance(value, str):
            cases += [ParamCase(key, v, False) for v in ("", "x" * 300, "a\nb")]
            cases.append(ParamCase(key, 12, False))
        elif isinstance(value, list):
            cases += [ParamCase(key, v, False) for v in ([], "notalist", [None])]
        elif value is None:
            cases += [ParamCase(key, v, False) for v in ("abc", -1, math.nan)]
    return cases


def _deep_merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


def _nest(key: str, value: object) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


PARAM_CASES = _param_cases()


def test_the_generated_matrix_has_at_least_150_cases():
    counts = {"params": len(PARAM_CASES), "files": len(FILE_CASES), "environment": len(ENV_CASES), "data": len(DATA_CASES),
              "runs": len(RUN_CASES)}
    assert sum(counts.values()) >= 150 and all(counts.values()), counts


@pytest.mark.parametrize("case", PARAM_CASES, ids=[c.id for c in PARAM_CASES])
def test_every_params_value_is_one_line_naming_its_key_or_a_plan(case: ParamCase):
    """As every stage loads params: a ConfigError (one line naming the key and the value) or a config whose plan
    (every job of every stage, each job's own config) is made without any other exception."""
    from natinv.pipeline import STAGES

    try:
        cfg = load_config(PROFILES, [_nest(case.key, case.value)])
    except NatinvError as exc:
        text = str(exc)
        assert "\n" not in text.strip() or case.value == "a\nb", text
        assert case.key.split(".")[-1] in text or case.key.rsplit(".", 1)[0] in text, text
        return
    assert not case.must_fail, f"{case.id} was accepted"
    try:
        for stage in STAGES.values():
            for job in stage.jobs(cfg):
                cfg.for_job(job.get("method"))
                stage.output_files(cfg.exp_dir, job)
    except NatinvError:
        pass  # a clean one-line refusal at planning time is fine too


# ------------------------------------------------------------------------------------------------ files, generated


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two tiny experiments (`tiny` and `other`, another seed and data size) run through data, teacher, one NI shard
    and KD: the files every later stage reads back."""
    tmp = tmp_path_factory.mktemp("probe")
    params = tiny_params(tmp)
    quick = ["--set", "teacher.epochs=1", "--set", "synthesis.num_images=32", "--set", "synthesis.batch_size=16",
             "--set", "synthesis.shards=1", "--set", "synthesis.methods.ni.iterations=3", "--set", "kd.epochs=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NATINV_TRACKING", "off")
        for experiment, extra in (("tiny", []), ("other", ["--set", "experiment=other", "--set", "seed=5",
                                                           "--set", "data.train_limit=300"])):
            args = [*params, *quick, *extra, "--threads", "1"]
            assert main(["data", *args]) == 0
            assert main(["teacher", *args, "--teacher", "resnet8-w16"]) == 0
            assert main(["synthesize", *args, "--teacher", "resnet8-w16", "--method", "ni", "--shard", "0"]) == 0
            assert main(["kd", *args, "--teacher", "resnet8-w16", "--method", "ni", "--student", "resnet8-w8"]) == 0
        assert main(["report", *params, *quick, "--threads", "1"]) == 0
    return tmp, [*params, *quick]


READ_BACK = {  # a file a stage reads back -> (the stage command that reads it, what the error must name)
    "data/train.npz": ["teacher", "--teacher", "resnet8-w16"],
    "data/test.npz": ["teacher", "--teacher", "resnet8-w16"],
    "data/manifest.json": ["teacher", "--teacher", "resnet8-w16"],
    "teachers/resnet8-w16.safetensors": ["synthesize", "--teacher", "resnet8-w16", "--method", "ni", "--shard", "0"],
    "synth/resnet8-w16/ni/shard-0.npz": ["kd", "--teacher", "resnet8-w16", "--method", "ni", "--student", "resnet8-w8"],
    "synth/resnet8-w16/ni/shard-0.json": ["report"],
    "teachers/resnet8-w16.json": ["report"],
    "kd/resnet8-w16/ni/resnet8-w8.json": ["report"],
}


def _truncate(p: Path, _: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def _empty(p: Path, _: Path) -> None:
    p.write_bytes(b"")


def _flip(p: Path, _: Path) -> None:
    data = bytearray(p.read_bytes())
    i = len(data) * 2 // 3
    data[i] ^= 0x01
    p.write_bytes(bytes(data))


def _garbage(p: Path, _: Path) -> None:
    p.write_bytes(b"\x00\xff not what natinv wrote \xfe" * 10)


def _other_experiment(p: Path, exp: Path) -> None:
    shutil.copyfile(exp.parent / "other" / p.relative_to(exp), p)


def _other_kind(p: Path, exp: Path) -> None:
    """A file natinv wrote, of another kind with the same suffix (sealed and intact, only not this one)."""
    donors = {".npz": "data/test.npz", ".json": "data/manifest.json", ".safetensors": "kd/resnet8-w16/ni/resnet8-w8.safetensors"}
    donor = exp / donors[p.suffix]
    if donor == p:
        donor = exp / "synth/resnet8-w16/ni/shard-0.npz" if p.suffix == ".npz" else exp / "teachers/resnet8-w16.json"
    shutil.copyfile(donor, p)


def _fifo_file(p: Path, _: Path) -> None:
    p.unlink()
    os.mkfifo(p)


DAMAGE: dict[str, Callable[[Path, Path], None]] = {"truncated": _truncate, "empty": _empty, "flipped-byte": _flip,
                                                   "garbage": _garbage, "other-experiment": _other_experiment,
                                                   "other-kind": _other_kind, "fifo": _fifo_file}
FILE_CASES = [(f, d) for f in READ_BACK for d in DAMAGE]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "mlflow" not in p.name}


@pytest.mark.parametrize("name,damage", FILE_CASES, ids=[f"{f}:{d}" for f, d in FILE_CASES])
def test_every_file_read_back_damaged_is_one_line_naming_it(project, name, damage, capsys, monkeypatch):
    """The stage that reads the damaged file exits 2 with one line naming that file (or, where the damage leaves a
    valid file of this experiment's kind, handles it correctly: exit 0); nothing else under results/ changes."""
    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    exp = tmp / "results" / "tiny"
    target = exp / name
    good = target.read_bytes()
    DAMAGE[damage](target, exp)
    unchanged = target.is_file() and target.read_bytes() == good  # the other experiment's file is this one's, byte for byte (the same test set)
    before = snapshot(tmp)
    stage = READ_BACK[name]
    capsys.readouterr()
    try:
        code = main([stage[0], *params, *stage[1:], "--threads", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        if unchanged:
            assert code == 0, err
            return
        assert code == 2, err
        errors = [line for line in err if line.startswith(f"natinv {stage[0]}: error: ")]
        assert len(errors) == 1 and errors == err[-1:], err
        assert name.split("/")[-1] in errors[0], errors[0]
        assert snapshot(tmp) == before  # nothing written, nothing lost
    finally:
        target.unlink()
        target.write_bytes(good)


# ------------------------------------------------------------------------------------------------ environment


ENV_CASES = [(var, value) for var in ("NATINV_DEVICE", "NATINV_TRACKING", "MLFLOW_TRACKING_URI",
                                      "NATINV_MLFLOW_FLUSH_SECONDS", "CUDA_VISIBLE_DEVICES")
             for value in ("", "garbage", "-1", "nan", "\x7f\x01")]


@pytest.mark.parametrize("var,value", ENV_CASES, ids=[f"{v}={x!r}" for v, x in ENV_CASES])
def test_garbage_in_every_environment_variable_is_one_line_or_handled(tmp_path, var, value, capsys, monkeypatch):
    """The data stage under a garbage value: exit 2 with one line naming the variable, or it runs (a value that
    only switches a feature off, or one the variable's owner ignores) and writes its files."""
    monkeypatch.setenv("NATINV_TRACKING", "off")
    monkeypatch.setenv(var, value)
    params = tiny_params(tmp_path)
    capsys.readouterr()
    code = main(["data", *params, "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    if code == 2:
        assert len(errors) == 1 and var in errors[0], err
    else:
        assert code == 0 and not errors, err
        assert (tmp_path / "results/tiny/data/manifest.json").is_file()
    assert not any(line.lstrip().startswith("Traceback") for line in err), err


# ------------------------------------------------------------------------------------------------ data


def _img(mode: str, size: tuple[int, int] = (8, 8)) -> Image.Image:
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I;16B", "I;16L"):
        return Image.fromarray(rng.integers(0, 65535, size, dtype=np.uint16)).convert(mode) if mode != "I;16" else \
            Image.fromarray(rng.integers(0, 65535, size, dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65535, size).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random(size).astype(np.float32))
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).convert(mode)


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I;16", "I", "F"]  # every mode Pillow writes to a file
SUFFIX = {"YCbCr": ".tiff", "LAB": ".tiff", "CMYK": ".tiff", "F": ".tiff", "I": ".tiff"}


def _folder(root: Path, write: Callable[[Path, int], None], per_class: int = 3) -> Path:
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write(root / f"class{c}", i)
    return root


def _mode_folder(mode: str) -> Callable[[Path], tuple[Path, str | None]]:
    def make(d: Path):
        root = _folder(d / "imgs", lambda folder, i: _img(mode).save(folder / f"{i}{SUFFIX.get(mode, '.png')}"))
        return root, "floating-point pixels" if mode == "F" else None
    return make


def _fifo(d: Path):
    root = _folder(d / "imgs", lambda folder, i: _img("L").save(folder / f"{i}.png"))
    os.mkfifo(root / "class0" / "waiting.png")
    return root, "not a regular file"


def _loop(d: Path):
    root = _folder(d / "imgs", lambda folder, i: _img("L").save(folder / f"{i}.png"))
    os.symlink("..", root / "class0" / "up")
    return root, "the same file as"


def _self_link(d: Path):
    os.symlink(d / "self", d / "self")
    return d / "self", "leads nowhere or loops"


def _fifo_path(d: Path):
    os.mkfifo(d / "set.npz")
    return d / "set.npz", "not a regular file or folder"


def _sized(size: tuple[int, int], expected: str | None) -> Callable[[Path], tuple[Path, str | None]]:
    def make(d: Path):
        return _folder(d / "imgs", lambda folder, i: _img("L", size).save(folder / f"{i}.png")), expected
    return make


def _empty_image(d: Path):
    root = _folder(d / "imgs", lambda folder, i: _img("L").save(folder / f"{i}.png"))
    (root / "class1" / "empty.png").write_bytes(b"")
    return root, "unreadable image"


def _npz_degenerate(images: np.ndarray, labels: np.ndarray, expected: str | None):
    def make(d: Path):
        np.savez(d / "set.npz", images=images, labels=labels)
        return d / "set.npz", expected
    return make


DATA_CASES: dict[str, Callable[[Path], tuple[Path, str | None]]] = {
    **{f"mode-{m}": _mode_folder(m) for m in MODES},
    "fifo-in-folder": _fifo, "link-loop-in-folder": _loop, "self-link": _self_link, "fifo-as-path": _fifo_path,
    "1x1-images": _sized((1, 1), "at least"), "2x2-images": _sized((2, 2), "at least"), "non-square": _sized((8, 5), "square"),
    "empty-image-file": _empty_image,
    "npz-1x1": _npz_degenerate(np.zeros((20, 1, 1), np.uint8), np.arange(20) % 2, "at least"),
    "npz-one-image-per-class": _npz_degenerate(np.zeros((2, 8, 8), np.uint8), np.arange(2), "expected at least 2"),
    "npz-4-channels": _npz_degenerate(np.zeros((20, 8, 8, 4), np.uint8), np.arange(20) % 2, "channels"),
    "npz-bool-images": _npz_degenerate(np.zeros((20, 8, 8), bool), np.arange(20) % 2, "uint8"),
}


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_every_data_format_is_read_right_or_refused_in_one_line(tmp_path, name, capsys, monkeypatch):
    """`data` on custom data of every kind: a refusal is exit 2 with one line naming the path and the cause; an
    accepted set is a manifest of uint8 images, 1 or 3 channels, whose networks can take its size."""
    monkeypatch.setenv("NATINV_TRACKING", "off")
    src = tmp_path / "src"
    src.mkdir()
    path, expected = DATA_CASES[name](src)
    params = tiny_params(tmp_path)
    capsys.readouterr()
    code = main(["data", *params, "--set", "data.dataset=custom", "--set", f"data.path={path}", "--set", "data.test_fraction=0.34",
                 "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    if expected is not None:
        assert code == 2, err
        assert len(err) == 1 and expected in err[0], err
        assert not (tmp_path / "results/tiny/data/manifest.json").exists()
        return
    assert code == 0, err
    manifest = json.loads((tmp_path / "results/tiny/data/manifest.json").read_text())
    assert manifest["in_channels"] in (1, 3) and manifest["image_size"] >= 8


# ------------------------------------------------------------------------------------------------ edges that need a run


RUN_CASES = {  # settings at the edge of sense, run through the stage they reach -> what its one error line names (None: runs)
    "teacher-batch-1": (["teacher", "--teacher", "resnet8-w16"], ["teacher.batch_size=1", "teacher.epochs=1",
                                                                    "data.train_limit=40"], None),
    "ni-batch-1": (["synthesize", "--teacher", "resnet8-w16", "--method", "ni", "--shard", "0"],
                   ["synthesis.batch_size=1", "synthesis.num_images=3", "synthesis.methods.ni.iterations=2"], None),
    "di-one-image": (["synthesize", "--teacher", "resnet8-w16", "--method", "di", "--shard", "0"],
                     ["synthesis.batch_size=1", "synthesis.num_images=1", "synthesis.methods.di.iterations=1"], None),
    "dafl-batch-1": (["synthesize", "--teacher", "resnet8-w16", "--method", "dafl", "--shard", "0"],
                     ["synthesis.batch_size=1", "synthesis.num_images=2", "synthesis.methods.dafl.iterations=2"], None),
    "kd-batch-beyond-images": (["kd", "--teacher", "resnet8-w16", "--method", "ni", "--student", "resnet8-w8"],
                               ["kd.batch_size=100000", "kd.epochs=1"], None),
    "bn-weight-beyond-float32": (["synthesize", "--teacher", "resnet8-w16", "--method", "di", "--shard", "0"],
                                 ["synthesis.methods.di.lambda_bn=1e300", "synthesis.methods.di.iterations=2",
                                  "synthesis.retries=0"], "before any step, so not a learning rate"),
    "vgg-on-small-images": (["evaluator", "--evaluator", "vgg11-w8"], ["data.dataset=custom", "data.path={small}"],
                            "takes images of at least 32x32"),
}


@pytest.mark.parametrize("name", list(RUN_CASES))
def test_settings_at_the_edge_run_or_stop_in_one_line(project, tmp_path, name, capsys, monkeypatch):
    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    stage, sets, expected = RUN_CASES[name]
    small = _folder(tmp_path / "small", lambda folder, i: _img("L", (16, 16)).save(folder / f"{i}.png"), per_class=4)
    sets = [s.format(small=small) for s in sets]
    argv = [*params, *(a for s in sets for a in ("--set", s)), "--set", f"results={tmp_path / 'results'}", "--threads", "1"]
    shutil.copytree(tmp / "results/tiny", tmp_path / "results/tiny")  # this case's own copy of the experiment
    if any(s.startswith("data.") for s in sets):
        assert main(["data", *argv]) == 0
    capsys.readouterr()
    code = main([stage[0], *argv, *stage[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    if expected is None:
        assert code == 0, err[-3:]
    else:
        assert code == 2 and expected in err[-1] and err[-1].startswith(f"natinv {stage[0]}: error: "), err[-3:]


# ------------------------------------------------------------------------------------------------ the principles


def test_a_module_planted_under_results_is_never_imported(project, tmp_path, capsys, monkeypatch):
    """A params value naming a module that is not installed (here one planted under results/, on the import path as
    the project folder is for `python -m natinv`) is refused before any of its code runs."""
    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    planted = tmp_path / "results"
    planted.mkdir()
    marker = tmp_path / "RAN"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    code = main(["metrics", *params, "--set", "metrics.inception.feature_extractor=results.evil:X", "--teacher",
                 "resnet8-w16", "--method", "ni", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "module 'results' is not installed" in err[-1], err
    assert not marker.exists()


def test_a_symbolic_link_inside_the_experiment_is_refused_and_its_target_untouched(project, tmp_path, capsys, monkeypatch):
    """results/{experiment}/teachers as a link to a folder elsewhere: the teacher stage names the link and writes
    nothing there (the experiment folder itself may be a link: followed)."""
    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    exp = tmp_path / "results/tiny"
    shutil.copytree(tmp / "results/tiny/data", exp / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (exp / "teachers").symlink_to(elsewhere)
    capsys.readouterr()
    code = main(["teacher", *params, "--set", f"results={tmp_path / 'results'}", "--teacher", "resnet8-w16", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "teachers: a symbolic link inside" in err[-1], err
    assert list(elsewhere.iterdir()) == []
    linked = tmp_path / "linked-results"  # the whole experiment folder behind a link (a scratch file system): fine
    shutil.copytree(tmp / "results/tiny", tmp_path / "scratch/tiny")
    linked.mkdir()
    (linked / "tiny").symlink_to(tmp_path / "scratch/tiny")
    assert main(["report", *params, "--set", f"results={linked}", "--threads", "1"]) == 0
    assert (tmp_path / "scratch/tiny/report/report.md").is_file()


def test_only_temporaries_natinv_made_are_removed(project, tmp_path, monkeypatch):
    """A re-run removes the temporary files an interrupted write left (their names are natinv's own), never a user's
    file that merely ends in .tmp."""
    from natinv.io import TEMP

    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    shutil.copytree(tmp / "results/tiny", tmp_path / "results/tiny")
    folder = tmp_path / "results/tiny/synth/resnet8-w16/ni"
    mine, theirs = folder / ".shard-0.npz.natinv-k1ll3d00.tmp", folder / ".notes.tmp"
    mine.write_bytes(b"half")
    theirs.write_bytes(b"the user's")
    assert TEMP.match(mine.name) and not TEMP.match(theirs.name)
    (folder / "shard-0.npz").unlink()
    assert main(["synthesize", *params, "--set", f"results={tmp_path / 'results'}", "--teacher", "resnet8-w16",
                 "--method", "ni", "--threads", "1"]) == 0
    assert not mine.exists() and theirs.read_bytes() == b"the user's"


def test_a_damaged_shard_is_made_again_by_a_run_of_every_shard(project, tmp_path, capsys, monkeypatch):
    """`synthesize` without --shard (what `dvc repro` runs) keeps a finished shard only when its files are intact: a
    truncated .npz under an intact JSON is made again, to the same bytes."""
    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    shutil.copytree(tmp / "results/tiny", tmp_path / "results/tiny")
    npz = tmp_path / "results/tiny/synth/resnet8-w16/ni/shard-0.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])
    capsys.readouterr()
    assert main(["synthesize", *params, "--set", f"results={tmp_path / 'results'}", "--teacher", "resnet8-w16",
                 "--method", "ni", "--threads", "1"]) == 0
    assert "kept shard" not in capsys.readouterr().err
    assert npz.read_bytes() == good


@pytest.mark.parametrize("edit", ["image_size", "no-digest"])
def test_a_checkpoint_whose_metadata_was_edited_is_refused(project, tmp_path, edit, capsys, monkeypatch):
    """The checkpoint's digest covers every metadata field: an edited image_size (which would make synthesis write
    images of another size) or a removed digest is one line."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    tmp, params = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    shutil.copytree(tmp / "results/tiny", tmp_path / "results/tiny")
    path = tmp_path / "results/tiny/teachers/resnet8-w16.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["natinv"])
    if edit == "image_size":
        meta["image_size"] = 16
    else:
        del meta["sha256"]
    path.write_bytes(save(load_file(str(path)), metadata={"natinv": json.dumps(meta)}))
    capsys.readouterr()
    code = main(["synthesize", *params, "--set", f"results={tmp_path / 'results'}", "--teacher", "resnet8-w16",
                 "--method", "ni", "--shard", "0", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "resnet8-w16.safetensors" in err[-1], err
    assert ("not the ones it was written with" if edit == "image_size" else "has no sha256") in err[-1], err
