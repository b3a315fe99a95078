"""The bad-input matrix: every case exits 2 with one stderr line that names the file or key and the value, and leaves
nothing new (and nothing changed) under results/. Then the payload test: a file that would run code when unpickled,
planted wherever natinv loads a file, runs nothing."""
from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors

from natinv.checkpoint import ModelMeta, checkpoint_digest, save_model
from natinv.integrity import place
from natinv.cli import main
from pipeline import tiny_params
from natinv.models import build_model

TEACHER = "resnet8-w16"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny profile's data and an (untrained) teacher checkpoint, tracking off."""
    tmp = tmp_path_factory.mktemp("bad-input")
    params = tiny_params(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NATINV_TRACKING", "off")
        assert main(["data", *params, "--threads", "1"]) == 0
    exp = tmp / "results" / "tiny"
    m = json.loads((exp / "data/manifest.json").read_text())
    meta = ModelMeta("resnet8", m["num_classes"], m["in_channels"], m["image_size"], 8, m["mean"], m["std"])
    torch.manual_seed(0)
    save_model(exp / f"teachers/{TEACHER}.safetensors", build_model("resnet8", 10, 1, 8), meta)
    return tmp, params, meta


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------------- bad files


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def images(n: int, size: int = 32, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, size, size, channels), dtype=np.uint8)


def image_folder(root: Path, sizes: dict[str, tuple[int, int]], broken: str | None = None) -> Path:
    for i, (name, size) in enumerate(sizes.items()):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(size, 128, dtype=np.uint8)).save(folder / name)
    if broken:
        (root / "class0" / broken).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def checkpoint_with(path: Path, meta_text: str | None, model: torch.nn.Module | None = None, seal: bool = False) -> Path:
    """A safetensors teacher with the given natinv metadata text (None: none at all); seal: with the digest that
    natinv would write for these weights and this metadata (so that the checks after it are reached)."""
    model = model or build_model("resnet8", 10, 1, 8)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if seal:
        meta_text = json.dumps(json.loads(meta_text) | {"sha256": checkpoint_digest(state, ModelMeta(**json.loads(meta_text)),
                                                                                  place(path))})
    metadata = {"natinv": meta_text} if meta_text is not None else {}
    path.write_bytes(save_safetensors(state, metadata=metadata))
    return path


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_pt(path: Path, marker: Path) -> Path:
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(marker)}, path)
    return path


def payload_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(Payload(marker)))
    return path


# ------------------------------------------------------------------------------------------------- the matrix


@dataclass
class Case:
    id: str
    stage: list[str]  # the sub-command and its job arguments
    expected: list[str]  # every string must be on the one error line (the file/key and the value)
    sets: list[str] = field(default_factory=list)  # --set KEY=VALUE
    make: Callable[[Path], list[str]] | None = None  # builds bad files in a scratch folder; returns extra argv
    params_only: list[str] | None = None  # replaces the --params list


SYN = ["synthesize", "--teacher", TEACHER, "--method", "ni", "--shard", "0"]
KD = ["kd", "--teacher", TEACHER, "--method", "ni", "--student", "resnet8-w8"]


def custom(path: str) -> list[str]:
    return ["--set", "data.dataset=custom", "--set", f"data.path={path}"]


def params_file(text: bytes | str, name: str = "p.yaml") -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        p = d / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--params", str(p)]
    return make


def data_npz(**arrays) -> Callable[[Path], list[str]]:
    return lambda d: custom(str(npz(d / "set.npz", **arrays)))


def _meta(**change) -> str:
    m = ModelMeta("resnet8", 10, 1, 32, 8, [0.2], [0.3])
    return json.dumps(asdict(m) | change)


labels10 = np.arange(60) % 10
CASES = [
    # --- params: keys, types, ranges, files (the first five blame the command line, not params/default.yaml)
    Case("unknown-key", ["data"], ["command line: kd.foo: unknown key"], ["kd.foo=1"]),
    Case("wrong-type", ["data"], ["command line: kd.epochs: got 'abc'"], ["kd.epochs=abc"]),
    Case("below-minimum", ["data"], ["command line: kd.epochs: got 0; must be >= 1"], ["kd.epochs=0"]),
    Case("nan-float", ["data"], ["command line: synthesis.methods.ni.lr_generator: got nan; expected a finite number"],
         ["synthesis.methods.ni.lr_generator=.nan"]),
    Case("inf-float", ["data"], ["command line: kd.lr: got inf; expected a finite number"], ["kd.lr=.inf"]),
    Case("list-item", ["data"], ["command line: prune.ratios[0]: got 1.5"], ["prune.ratios=[1.5]"]),
    Case("bad-literal", ["data"], ["command line: device: got 'tpu'"], ["device=tpu"]),
    Case("bad-set-syntax", ["data"], ["--set 'kd.epochs': expected key.path=value"], ["kd.epochs"]),
    Case("unknown-kind", ["data"], ["synthesis.methods.ni.kind: got 'gan'"], ["synthesis.methods.ni.kind=gan"]),
    Case("unknown-student", ["data"], ["command line: kd.students[0]: got 'giant'"], ["kd.students=[giant]"]),
    Case("binary-params", ["data"], ["p.yaml: not a text file"], make=params_file(bytes(range(256)) * 4)),
    Case("invalid-yaml", ["data"], ["p.yaml", "not valid YAML"], make=params_file("a: [1,\nb: }\n")),
    Case("params-not-mapping", ["data"], ["p.yaml: expected a mapping", "got list"], make=params_file("- 1\n- 2\n")),
    Case("params-missing", ["data"], ["nowhere.yaml: params file not found"], make=lambda d: ["--params", str(d / "nowhere.yaml")]),
    Case("file-blamed", ["data"], ["p.yaml: kd.epochs: got 'x'"], make=params_file("kd: {epochs: x}\n")),
    # --- names that become paths
    Case("experiment-dotdot", ["data"], ["experiment: got '../x'", "a letter or digit"], ["experiment=../x"]),
    Case("experiment-slash", ["data"], ["experiment: got 'a/b'"], ["experiment=a/b"]),
    Case("experiment-absolute", ["data"], ["experiment: got '/tmp/natinv-escape'"], ["experiment=/tmp/natinv-escape"]),
    Case("experiment-empty", ["data"], ["experiment: got ''"], ["experiment=''"]),
    Case("model-key", ["data"], ["p.yaml: models.../evil: bad key '../evil'"],
         make=params_file("models: {'../evil': {arch: resnet8}}\n")),
    Case("method-key", ["data"], ["p.yaml: synthesis.methods.a/b: bad key 'a/b'"],
         make=params_file("synthesis: {methods: {'a/b': {kind: deepinversion}}}\n")),
    Case("teacher-traversal", ["synthesize", "--teacher", "../../../../trav/t", "--method", "ni", "--shard", "0"],
         ["--teacher = '../../../../trav/t'", "a letter or digit"]),
    Case("method-absolute", ["synthesize", "--teacher", TEACHER, "--method", "/etc/x", "--shard", "0"], ["--method = '/etc/x'"]),
    Case("student-dotdot", ["kd", "--teacher", TEACHER, "--method", "ni", "--student", ".."], ["--student = '..'"]),
    Case("evaluator-empty", ["evaluator", "--evaluator", ""], ["--evaluator = ''"]),
    Case("import-traversal", ["import-checkpoint", "--teacher", "../../t", "--checkpoint", "x.pt"], ["--teacher = '../../t'"]),
    Case("teacher-unknown", ["synthesize", "--teacher", "nobody", "--method", "ni", "--shard", "0"], ["--teacher = 'nobody'"]),
    Case("method-unknown", ["synthesize", "--teacher", TEACHER, "--method", "gan", "--shard", "0"], ["method = 'gan'"]),
    Case("shard-range", ["synthesize", "--teacher", TEACHER, "--method", "ni", "--shard", "5"], ["shard = 5"]),
    # --- data at the door
    Case("float-labels", ["data"], ["set.npz:labels: labels must be integers", "float64"],
         make=data_npz(images=images(60), labels=labels10.astype(float))),
    Case("negative-labels", ["data"], ["set.npz", "training labels range -1..8"], make=data_npz(images=images(60), labels=labels10 - 1)),
    Case("sparse-labels", ["data"], ["set.npz", "1000 of 1010 classes have no training image"],
         make=data_npz(images=images(60), labels=np.where(labels10 == 9, 1009, labels10))),
    Case("one-class", ["data"], ["set.npz", "hold 1 class"], make=data_npz(images=images(60), labels=np.zeros(60, int))),
    Case("test-classes", ["data"], ["set.npz", "test labels range 0..9; expected class indices 0..8"],
         make=data_npz(images=images(60), labels=labels10 % 9, test_images=images(10), test_labels=np.arange(10))),
    Case("zero-images", ["data"], ["set.npz", "0 training images"],
         make=data_npz(images=np.zeros((0, 32, 32), np.uint8), labels=np.zeros(0, int))),
    Case("count-mismatch", ["data"], ["set.npz: 60 images but 59 labels"], make=data_npz(images=images(60), labels=labels10[:59])),
    Case("missing-labels", ["data"], ["set.npz: missing array 'labels'"], make=data_npz(images=images(60))),
    Case("float-images", ["data"], ["set.npz:images: images must be uint8", "float32"],
         make=data_npz(images=images(60).astype(np.float32), labels=labels10)),
    Case("huge-images", ["data"], ["set.npz", "images are 1024x1024; at most 256x256"],
         make=data_npz(images=np.zeros((4, 1024, 1024), np.uint8), labels=np.arange(4) % 2)),
    Case("pickled-npz", ["data"], ["set.npz: not a readable .npz"],
         make=data_npz(images=np.array([object()], dtype=object), labels=labels10)),
    Case("unreadable-png", ["data"], ["broken.png: unreadable image"],
         make=lambda d: custom(str(image_folder(d / "imgs", {f"{i}.png": (32, 32) for i in range(4)}, broken="broken.png")))),
    Case("mixed-sizes", ["data"], ["images have different sizes"],
         make=lambda d: custom(str(image_folder(d / "imgs", {"a.png": (32, 32), "b.png": (16, 16), "c.png": (32, 32)})))),
    Case("empty-folder", ["data"], ["imgs: not an image folder"], make=lambda d: custom(str((d / "imgs").mkdir() or d / "imgs"))),
    Case("data-missing", ["data"], ["data.path = ", "nothing.npz: not found"], make=lambda d: custom(str(d / "nothing.npz"))),
    # --- checkpoints (planted in place of the teacher's)
    Case("not-safetensors", SYN, [f"{TEACHER}.safetensors: not a readable safetensors checkpoint"]),
    Case("meta-broken-json", SYN, [f"{TEACHER}.safetensors: natinv metadata is not valid JSON"]),
    Case("meta-incomplete", SYN, [f"{TEACHER}.safetensors: natinv metadata has keys", "expected exactly"]),
    Case("meta-arch", SYN, [f"{TEACHER}.safetensors: metadata arch = 'resnet9'"]),
    Case("meta-classes", SYN, [f"{TEACHER}.safetensors: metadata num_classes = 1"]),
    Case("weights-swapped", SYN, [f"{TEACHER}.safetensors: its weights or metadata are not the ones"]),
    Case("weights-nan", SYN, [f"{TEACHER}.safetensors: 1 tensors hold NaN"]),
    Case("wrong-architecture", SYN, [f"{TEACHER}.safetensors: does not fit architecture vgg11"]),
    Case("import-pickle", ["import-checkpoint", "--teacher", TEACHER], ["payload.pt: cannot be loaded with weights_only=True"],
         make=lambda d: ["--checkpoint", str(payload_pt(d / "payload.pt", d / "MARKER"))]),
    Case("import-wrong-arch", ["import-checkpoint", "--teacher", TEACHER], ["other.pt: does not fit architecture resnet8"],
         make=lambda d: (torch.save(build_model("vgg11", 10, 1, 4).state_dict(), d / "other.pt"), ["--checkpoint", str(d / "other.pt")])[1]),
    # --- numbers that go wrong
    Case("synthesis-diverges", SYN[:4] + ["di"] + SYN[5:], ["resnet8-w16/di batch 0 (shard 0): loss or images not finite from iteration"],
         ["synthesis.methods.di.lr=1e30", "synthesis.methods.di.clamp=false", "synthesis.retries=0"]),
    Case("teacher-diverges", ["teacher", "--teacher", TEACHER], ["teacher resnet8-w16 epoch 1/1: the training loss is", "diverged at lr 1e+12"],
         ["teacher.lr=1e12"]),
    Case("results-is-a-file", ["data"], ["is a file, not a folder"], make=lambda d: ["--set", f"results={(d / 'f').touch() or d / 'f'}"]),
    Case("results-under-a-file", ["data"], ["is a file, not a folder"],
         make=lambda d: ["--set", f"results={(d / 'g').touch() or d / 'g' / 'sub'}"]),
]

PLANTED = {  # what the teacher's checkpoint holds in the checkpoint cases
    "not-safetensors": lambda p: p.write_bytes(b"not a checkpoint") or p,
    "meta-broken-json": lambda p: checkpoint_with(p, "{arch: resnet8"),
    "meta-incomplete": lambda p: checkpoint_with(p, json.dumps({"arch": "resnet8", "num_classes": 10})),
    "meta-arch": lambda p: checkpoint_with(p, _meta(arch="resnet9")),
    "meta-classes": lambda p: checkpoint_with(p, _meta(num_classes=1)),
    "weights-swapped": lambda p: checkpoint_with(p, json.dumps(json.loads(_meta()) | {"sha256": "0" * 64})),
    "weights-nan": lambda p: checkpoint_with(p, _meta(), model=_nan_model(), seal=True),
    "wrong-architecture": lambda p: checkpoint_with(p, _meta(arch="vgg11"), seal=True),
}


def _nan_model() -> torch.nn.Module:
    model = build_model("resnet8", 10, 1, 8)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    return model


def test_the_matrix_has_at_least_40_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_new_under_results(case: Case, project, tmp_path, capsys, monkeypatch):
    tmp, params, _ = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    results = tmp / "results"
    extra = case.make(tmp_path) if case.make else []
    planted = results / f"tiny/teachers/{TEACHER}.safetensors"
    good = planted.read_bytes()
    if case.id in PLANTED:
        PLANTED[case.id](planted)
    before = snapshot(results)
    argv = [case.stage[0], *params, *(a for s in case.sets for a in ("--set", s)), *extra, *case.stage[1:], "--threads", "1"]
    capsys.readouterr()
    try:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, err
        assert len(err) == 1, err
        assert err[0].startswith(f"natinv {case.stage[0]}: error: "), err
        for text in case.expected:
            assert text in err[0], err[0]
        assert snapshot(results) == before  # nothing new, nothing changed
        assert not (tmp_path / "MARKER").exists()
        assert not (tmp.parent / "trav").exists() and not Path("/tmp/natinv-escape").exists()
    finally:
        if case.id in PLANTED:
            planted.write_bytes(good)


def test_a_bad_params_file_is_one_line_from_the_process_too(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(bytes(range(256)))
    proc = subprocess.run([sys.executable, "-m", "natinv", "data", "--params", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bad.yaml: not a text file" in proc.stderr


# ------------------------------------------------------------------------------------------------- payloads


def test_no_planted_payload_runs_anywhere_a_file_is_loaded(project, tmp_path, capsys, monkeypatch):
    """A pickle that runs `touch MARKER` when unpickled, planted as: the Inception weights file, torch-fidelity's copy in
    the torch hub cache, the feature cache (ours and torch-fidelity's old .pt names), a teacher checkpoint, a checkpoint
    to import, the dataset's .npz, a shard's .npz and a YAML tag in a params file. Nothing runs."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    tmp, params, _ = project
    monkeypatch.setenv("NATINV_TRACKING", "off")
    exp = tmp / "results" / "tiny"
    marker = tmp_path / "MARKER"
    live = payload_pt(tmp_path / "live.pt", marker)
    torch.load(live, weights_only=False)  # the payload is live: unpickled unsafely, it runs
    assert marker.exists()
    marker.unlink()

    def run(*argv: str, code: int = 2, expected: str = "") -> None:
        capsys.readouterr()
        assert main([argv[0], *params, *argv[1:], "--threads", "1"]) == code
        err = capsys.readouterr().err.strip().splitlines()
        if code == 2:
            assert len(err) == 1 and expected in err[0], err
        assert not marker.exists(), f"{argv}: the payload ran"

    # 1. metrics.inception.weights, 2. the torch hub cache (weights: null)
    for shard in (0, 1):
        run(*SYN[:-1], str(shard), code=0)
    metrics = ["metrics", "--teacher", TEACHER, "--method", "ni", "--set", "metrics.evaluators=[]"]
    run(*metrics, "--set", f"metrics.inception.weights={payload_pt(tmp_path / 'w.pth', marker)}",
        expected="w.pth': not a plain weights file")
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    payload_pt(hub / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1], marker)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    run(*metrics, expected="not a plain weights file (refused by torch.load(weights_only=True)")
    # 3. the feature cache: our safetensors file replaced by a pickle, and torch-fidelity's .pt cache names beside it
    tiny_extractor = ["--set", "metrics.inception.feature_extractor=test_metrics:TinyExtractor"]
    run(*metrics, *tiny_extractor, code=0)
    cache = tmp / "results" / "feature-cache"
    (cached,) = cache.glob("*.safetensors")
    payload_pickle(cached, marker)
    for name in ("emb", "logits"):
        payload_pt(cache / f"{cached.name.split('-TinyExtractor')[0]}-features-{name}.pt", marker)
    run(*metrics, *tiny_extractor, code=0)
    assert cached.read_bytes()[:8] != pickle.dumps(0)[:8] and not marker.exists()  # recomputed and rewritten as arrays
    # 4. a teacher checkpoint, 5. a checkpoint to import
    teacher = exp / f"teachers/{TEACHER}.safetensors"
    good = teacher.read_bytes()
    try:
        payload_pt(teacher, marker)
        run(*SYN, expected="not a readable safetensors checkpoint")
    finally:
        teacher.write_bytes(good)
    run("import-checkpoint", "--teacher", TEACHER, "--checkpoint", str(payload_pt(tmp_path / "t.pt", marker)),
        expected="cannot be loaded with weights_only=True")
    # 6. the dataset's .npz, a shard's .npz
    run("data", *custom(str(npz(tmp_path / "set.npz", images=np.array([Payload(marker)], dtype=object), labels=labels10))),
        expected="not a readable .npz")
    shard = exp / "synth" / TEACHER / "ni" / "shard-0.npz"
    npz(shard, images=np.array([Payload(marker)], dtype=object), labels=np.zeros(1, int))
    run(*KD, expected="shard-0.npz: it has no digest")
    # 7. a YAML tag that would call a function
    tagged = tmp_path / "tag.yaml"
    tagged.write_text(f"kd: !!python/object/apply:os.system ['touch {marker}']\n")
    run("data", "--params", str(tagged), expected="tag.yaml")
