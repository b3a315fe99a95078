"""Parameters: load YAML files (a default plus profile overlays), merge them, validate into dataclasses.

Every error names the file and key that set the bad value, the value, and what is allowed, in one line.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from natinv.errors import ConfigError

# ---------------------------------------------------------------------------------------------- schema


def _min(value: float, *, exclusive: bool = False) -> dict:
    return {"min": value, "exclusive": exclusive}


@dataclass
class DataConfig:
    dataset: Literal["fashion-mnist", "cifar10", "cifar100", "custom"] = "fashion-mnist"
    root: str = "data"  # where datasets are looked up, cached and downloaded to
    path: str | None = None  # custom data: an image folder or an .npz file
    train_limit: int | None = field(default=None, metadata=_min(1))  # first N training images (tiny runs)
    test_limit: int | None = field(default=None, metadata=_min(1))
    test_fraction: float = field(default=0.1, metadata=_min(0, exclusive=True))  # custom data without a test split
    image_size: int | None = field(default=None, metadata=_min(8))  # custom data: resize to this (square)
    # Offline smoke runs: instead of reading the dataset, make a stand-in with its shape and class count (random class
    # patterns, not real images; train_limit / test_limit images, default 5,000 / 1,000). fashion-mnist, cifar10, cifar100.
    standin: bool = False


@dataclass
class ModelSpec:
    arch: str
    width: int | None = field(default=None, metadata=_min(1))  # base channel width; None = the arch's default


@dataclass
class TeacherConfig:
    models: list[str] = field(default_factory=list)  # keys of `models` to train as teachers
    epochs: int = field(default=3, metadata=_min(1))
    batch_size: int = field(default=128, metadata=_min(1))
    lr: float = field(default=0.1, metadata=_min(0, exclusive=True))
    momentum: float = field(default=0.9, metadata=_min(0))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    warmup_epochs: float = field(default=0.0, metadata=_min(0))  # linear warm-up before the cosine decay


@dataclass
class CoTrainConfig:
    """The student a method distils while it synthesizes (ADI, NI+ADI, DAFL, DFAD). The `kd` job of (method, student)
    adopts it as its result; other students are distilled from the method's images as usual."""

    student: str = ""  # a key of `models` (required)
    steps: int = field(default=1, metadata=_min(1))  # ADI: KD steps after each new batch; DAFL: per generator step (1); DFAD: per generator step (5)
    batch_size: int = field(default=128, metadata=_min(1))  # ADI: the KD batch drawn from the images so far (DAFL, DFAD: the generator's batch)
    lr: float = field(default=0.1, metadata=_min(0, exclusive=True))  # SGD (Nesterov), cosine decay over all student steps
    momentum: float = field(default=0.9, metadata=_min(0))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    temperature: float = field(default=1.0, metadata=_min(0, exclusive=True))  # KL temperature (ADI, DAFL); DFAD matches logits by L1


@dataclass
class NIConfig:
    """NaturalInversion (paper Alg. 1). Defaults are the paper's CIFAR-10 settings."""

    kind: Literal["naturalinversion"] = "naturalinversion"
    iterations: int = field(default=2000, metadata=_min(1))
    lr_generator: float = field(default=1e-3, metadata=_min(0, exclusive=True))
    lr_ftp: float = field(default=5e-4, metadata=_min(0, exclusive=True))
    lr_alpha: float = field(default=5e-2, metadata=_min(0, exclusive=True))
    lambda_bn: float = field(default=10.0, metadata=_min(0))
    lambda_tv: float = field(default=6e-3, metadata=_min(0))
    lambda_l2: float = field(default=1.5e-5, metadata=_min(0))
    latent_dim: int = field(default=1024, metadata=_min(1))
    generator_width: int = field(default=128, metadata=_min(2))  # channels of the paper's Table 6 generator
    alpha_mean: float = 5.0  # ACS init ~ N(alpha_mean, alpha_std)
    alpha_std: float = field(default=1.0, metadata=_min(0))
    jitter: int = field(default=2, metadata=_min(0))  # random roll of +-jitter pixels
    flip: bool = True
    o2o: bool = True  # one-to-one: a fresh generator per batch (off: one generator for the whole shard)
    ftp: bool = True  # Feature Transfer Pyramid
    acs: bool = True  # Adaptive Channel Scaling (off: alpha fixed to 1)
    ftp_stages: list[int] | None = None  # 1-based teacher stages the FTP uses (paper Table 4); None = all
    competition: float = field(default=0.0, metadata=_min(0))  # ADI's teacher-student competition weight (needs cotrain)
    cotrain: CoTrainConfig | None = None  # a student distilled while synthesizing (ADI; the method then runs as one shard)


@dataclass
class DIConfig:
    """DeepInversion: the same loss optimized on pixels. Defaults: NVlabs' CIFAR-10 settings."""

    kind: Literal["deepinversion"] = "deepinversion"
    iterations: int = field(default=2000, metadata=_min(1))
    lr: float = field(default=0.05, metadata=_min(0, exclusive=True))
    lambda_bn: float = field(default=10.0, metadata=_min(0))
    lambda_tv: float = field(default=2.5e-5, metadata=_min(0))
    lambda_l2: float = field(default=0.0, metadata=_min(0))
    jitter: int = field(default=2, metadata=_min(0))
    flip: bool = True
    clamp: bool = False  # keep pixels inside the valid [0, 1] range (in normalized space) after every step
    competition: float = field(default=0.0, metadata=_min(0))  # ADI's teacher-student competition weight (needs cotrain)
    cotrain: CoTrainConfig | None = None  # a student distilled while synthesizing (ADI; the method then runs as one shard)


@dataclass
class DAFLConfig:
    """DAFL (Chen et al. 2019): a generator trained so the teacher's outputs look like real data's (confident one-hot
    predictions, strong features, balanced classes), the co-trained student distilled on every generated batch.
    Defaults: the DAFL README's CIFAR-10 command and the script's defaults."""

    kind: Literal["dafl"] = "dafl"
    iterations: int = field(default=240000, metadata=_min(1))  # generator steps (2,000 epochs x 120)
    batch_size: int = field(default=1024, metadata=_min(1))
    lr_generator: float = field(default=0.02, metadata=_min(0, exclusive=True))  # Adam
    latent_dim: int = field(default=1000, metadata=_min(1))
    generator_width: int = field(default=128, metadata=_min(2))
    lambda_onehot: float = field(default=1.0, metadata=_min(0))
    lambda_activation: float = field(default=0.1, metadata=_min(0))
    lambda_entropy: float = field(default=5.0, metadata=_min(0))
    cotrain: CoTrainConfig | None = None  # required


@dataclass
class DFADConfig:
    """DFAD (Fang et al. 2019): a generator trained to maximize the student-teacher L1 distance of the logits while the
    student minimizes it (`cotrain.steps` student steps per generator step). Defaults: DFAD's CIFAR script."""

    kind: Literal["dfad"] = "dfad"
    iterations: int = field(default=25000, metadata=_min(1))  # generator steps (500 epochs x 50)
    batch_size: int = field(default=256, metadata=_min(1))
    lr_generator: float = field(default=1e-3, metadata=_min(0, exclusive=True))  # Adam
    latent_dim: int = field(default=256, metadata=_min(1))
    generator_width: int = field(default=128, metadata=_min(2))  # 2 x ngf (64)
    cotrain: CoTrainConfig | None = None  # required


MethodConfig = Union[NIConfig, DIConfig, DAFLConfig, DFADConfig]
METHOD_KINDS: dict[str, type] = {"naturalinversion": NIConfig, "deepinversion": DIConfig, "dafl": DAFLConfig, "dfad": DFADConfig}
GENERATIVE_KINDS = ("dafl", "dfad")  # methods that train a generator, then sample their images from it


@dataclass
class SynthesisConfig:
    run: list[str] = field(default_factory=list)  # method keys (of `methods`) to run
    num_images: int = field(default=1024, metadata=_min(1))
    batch_size: int = field(default=128, metadata=_min(1))
    shards: int = field(default=1, metadata=_min(1))
    save_scaling: Literal["clamp", "minmax"] = "clamp"  # uint8 rendering: clamp to [0,1] or per-image min-max
    methods: dict[str, MethodConfig] = field(default_factory=dict)
    teachers: dict[str, list[str]] = field(default_factory=dict)  # method -> the only teachers it inverts (default: all)


@dataclass
class InceptionConfig:
    """IS / FID / P&R of the paper's Table 1 with torch-fidelity; computed only when the extractor's weights are here."""

    enabled: bool = True
    feature_extractor: str = "inception-v3-compat"  # a torch-fidelity extractor name, or 'module:Class' to register one
    weights: str | None = None  # a local weights file; null = torch-fidelity's copy in the torch hub cache, if there
    batch_size: int = field(default=64, metadata=_min(1))


@dataclass
class TSNEConfig:
    """t-SNE of the teacher's features for real and synthesized images (paper Figs. 4, 7): one job per teacher."""

    images: int = field(default=500, metadata=_min(2))  # per set: real training images and each method's (paper: 10k)
    layers: list[str] = field(default_factory=lambda: ["stage1", "embedding"])  # 'stageK' (1-based) or 'embedding'
    methods: list[str] | None = None  # the methods whose images are embedded beside real ones (null = every method run)
    perplexity: float = field(default=30.0, metadata=_min(1))


@dataclass
class MetricsConfig:
    """How real the images are: embeddings of synthesized (or held-out real) images against real training images."""

    evaluators: list[str] = field(default_factory=list)  # keys of `models` trained on real data to embed the images
    reference_images: int = field(default=10000, metadata=_min(2))  # real training images on the reference side
    neighborhood: int = field(default=3, metadata=_min(1))  # k of the k-NN precision/recall
    inception: InceptionConfig = field(default_factory=InceptionConfig)
    tsne: TSNEConfig = field(default_factory=TSNEConfig)


@dataclass
class KDConfig:
    students: list[str] = field(default_factory=list)  # every synthesis method in synthesis.run, plus real data, per student
    methods: list[str] | None = None  # the methods whose images the students learn from (null = every method run)
    epochs: int = field(default=30, metadata=_min(1))
    batch_size: int = field(default=128, metadata=_min(1))
    lr: float = field(default=0.05, metadata=_min(0, exclusive=True))
    momentum: float = field(default=0.9, metadata=_min(0))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    temperature: float = field(default=4.0, metadata=_min(0, exclusive=True))
    real_images: int | None = field(default=None, metadata=_min(1))  # method=real: image count (None = synthesis.num_images)


@dataclass
class ScratchConfig:
    """Training from scratch (paper Tables 2, 9): a random student on synthesized images and their synthesis labels."""

    students: list[str] = field(default_factory=list)  # each trained on every method in synthesis.run and on real data
    methods: list[str] | None = None  # the methods whose images the students train on (null = every method run)
    epochs: int = field(default=200, metadata=_min(1))  # paper: 200
    batch_size: int = field(default=128, metadata=_min(1))
    lr: float = field(default=0.05, metadata=_min(0, exclusive=True))
    momentum: float = field(default=0.9, metadata=_min(0))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    train_eval_images: int | None = field(default=None, metadata=_min(1))  # real training images scored (None = all)
    real_images: int | None = field(default=None, metadata=_min(1))  # method=real: image count (None = synthesis.num_images)


@dataclass
class PruneConfig:
    """L1 filter pruning of the teacher, fine-tuned on synthesized images (paper Fig. 6)."""

    ratios: list[float] = field(default_factory=list)  # fraction of filters removed in every layer (paper: 0.5 .. 0.9)
    teachers: list[str] | None = None  # the teachers pruned (null = every teacher)
    methods: list[str] | None = None  # the methods whose images fine-tune them (null = every method run)
    epochs: int = field(default=20, metadata=_min(1))  # paper: 20
    batch_size: int = field(default=128, metadata=_min(1))
    lr: float = field(default=1e-3, metadata=_min(0, exclusive=True))  # paper: 1e-3
    momentum: float = field(default=0.9, metadata=_min(0))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    targets: Literal["teacher", "labels"] = "teacher"  # fine-tune on the unpruned teacher's soft targets, or the labels
    temperature: float = field(default=4.0, metadata=_min(0, exclusive=True))  # targets=teacher
    real_images: int | None = field(default=None, metadata=_min(1))


@dataclass(frozen=True)
class EngineConfig:
    """How synthesis runs its teacher passes; none of it changes the method, so it is not tracked as a parameter of
    the results (like `device`), but every shard records it. Defaults chosen by measurement (benchmarks/README.md,
    "Synthesis engine")."""

    channels_last: bool = True  # the teacher passes in channels_last: the same values up to float rounding
    autocast: Literal["bf16"] | None = None  # bf16: teacher passes in bfloat16, losses in float32 (changes numerics)
    compile: bool = False  # torch.compile the teacher passes (a one-off compile in every synthesize process)
    batches_per_step: int = field(default=1, metadata=_min(1))  # one-to-one batches advanced in one vectorized step


@dataclass
class JobThreads:
    """Snakemake: threads (= torch threads) of each job, so that shards and students run side by side up to --cores.
    A stage run by hand or by `dvc repro` (one at a time) uses `threads` instead."""

    data: int = field(default=1, metadata=_min(1))
    teacher: int = field(default=2, metadata=_min(1))
    synthesize: int = field(default=1, metadata=_min(1))
    kd: int = field(default=1, metadata=_min(1))
    evaluator: int = field(default=1, metadata=_min(1))
    metrics: int = field(default=1, metadata=_min(1))
    scratch: int = field(default=1, metadata=_min(1))
    prune: int = field(default=1, metadata=_min(1))
    report: int = field(default=1, metadata=_min(1))


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = field(default=None, metadata=_min(1))  # torch CPU threads (None = torch's default)
    job_threads: JobThreads = field(default_factory=lambda: JobThreads())
    # Snakemake: GPUs each job of a GPU stage (teacher, evaluator, synthesize, kd, metrics, scratch, fine-tuned prune)
    # asks for, as its `gpu` resource (the SLURM plugin passes it on as --gpus). 0 = CPU jobs; data, tsne, prune
    # without fine-tuning and report never ask for one.
    job_gpus: int = field(default=0, metadata=_min(0))
    engine: EngineConfig = field(default_factory=EngineConfig)
    results: str = "results"
    data: DataConfig = field(default_factory=DataConfig)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    @property
    def exp_dir(self) -> Path:
        return Path(self.results) / self.experiment

    def kind_of(self, method: str) -> str:
        """`real`, or the kind of a synthesis method (naturalinversion, deepinversion, dafl, dfad)."""
        return "real" if method == "real" else self.synthesis.methods[method].kind

    def cotrained(self, method: str) -> CoTrainConfig | None:
        """The student `method` distils while it synthesizes, if any."""
        return None if method == "real" else self.synthesis.methods[method].cotrain

    def shards_of(self, method: str) -> int:
        return method_shards(self.synthesis.methods[method], self.synthesis)


def method_shards(method: MethodConfig, syn: SynthesisConfig) -> int:
    """Shards of a method: synthesis.shards, or 1 for a co-trained method (its student sees the batches in order)."""
    return 1 if method.cotrain is not None else syn.shards


# ---------------------------------------------------------------------------------------- merge and load


def _merge(base: dict, over: dict, origin: dict, source: str, prefix: str = "") -> None:
    """Deep-merge `over` into `base`, recording in `origin` which file set each key."""
    for key, value in over.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            origin.setdefault(path, source)
            _merge(base[key], value, origin, source, path + ".")
        else:
            base[key] = value
            for k in [k for k in origin if k.startswith(path + ".")]:
                del origin[k]
            origin[path] = source


def read_params_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def load_config(paths: list[str | Path], overrides: list[dict[str, Any]] = ()) -> Config:
    """Load and validate params files in order (later files override earlier ones), then `overrides`."""
    if not paths:
        raise ConfigError("no params file given: pass --params params/default.yaml")
    merged: dict = {}
    origin: dict[str, str] = {}
    for p in paths:
        _merge(merged, read_params_file(Path(p)), origin, str(p))
    for over in overrides:
        _merge(merged, over, origin, "command line")
    return config_from_dict(merged, origin)


def config_from_dict(raw: dict, origin: dict[str, str] | None = None) -> Config:
    conv = _Converter(origin or {})
    cfg = conv.build(Config, raw, "")
    _check_references(cfg, conv)
    return cfg


# ------------------------------------------------------------------------------------------ validation


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(_describe(a) for a in args)
        return text + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


class _Converter:
    def __init__(self, origin: dict[str, str]):
        self.origin = origin

    def where(self, path: str) -> str:
        key = path
        while key and key not in self.origin:
            key = key.rpartition(".")[0]
        return self.origin.get(key, "params")

    def fail(self, path: str, message: str) -> None:
        raise ConfigError(f"{self.where(path)}: {path}: {message}")

    def bad(self, path: str, value: Any, tp: Any) -> None:
        self.fail(path, f"got {value!r} ({type(value).__name__}); expected {_describe(tp)}")

    def build(self, cls: type, raw: Any, path: str) -> Any:
        if not isinstance(raw, dict):
            self.bad(path or "(top level)", raw, cls)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in raw if k not in fields]
        if unknown:
            key = f"{path}.{unknown[0]}" if path else str(unknown[0])
            self.fail(key, f"unknown key; allowed keys here: {', '.join(fields)}")
        kwargs = {}
        for name, f in fields.items():
            key = f"{path}.{name}" if path else name
            if name in raw:
                value = self.convert(hints[name], raw[name], key)
                self.check_min(f, value, key)
                kwargs[name] = value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(key, "missing required key")
        return cls(**kwargs)

    def check_min(self, f: dataclasses.Field, value: Any, key: str) -> None:
        if "min" not in f.metadata or value is None:
            return
        lo, exclusive = f.metadata["min"], f.metadata["exclusive"]
        if value < lo or (exclusive and value == lo):
            self.fail(key, f"got {value!r}; must be {'>' if exclusive else '>='} {lo}")

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if tp is MethodConfig:
            return self.method(value, path)
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in (a for a in args if a is not type(None)):
                try:
                    return self.convert(arg, value, path)
                except ConfigError:
                    continue
            self.bad(path, value, tp)
        if origin is Literal:
            if value not in typing.get_args(tp):
                self.bad(path, value, tp)
            return value
        if origin is list:
            if not isinstance(value, list):
                self.bad(path, value, tp)
            (item,) = typing.get_args(tp)
            return [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                self.bad(path, value, tp)
            _, item = typing.get_args(tp)
            return {str(k): self.convert(item, v, f"{path}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)
        if tp is bool:
            if not isinstance(value, bool):
                self.bad(path, value, tp)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.bad(path, value, tp)
            return value
        if tp is float:
            # YAML reads 1e-3 (no dot) as a string; accept numeric strings of that form only
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    self.bad(path, value, tp)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.bad(path, value, tp)
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                self.bad(path, value, tp)
            return value
        raise TypeError(f"unsupported config type {tp}")  # a bug in the schema, not user input

    def method(self, value: Any, path: str) -> MethodConfig:
        if not isinstance(value, dict):
            self.bad(path, value, dict)
        kind = value.get("kind")
        if kind not in METHOD_KINDS:
            self.fail(f"{path}.kind", f"got {kind!r}; expected one of {', '.join(map(repr, METHOD_KINDS))}")
        return self.build(METHOD_KINDS[kind], value, path)


def _check_references(cfg: Config, conv: _Converter) -> None:
    from natinv.models import ARCHS  # late import: models import torch

    for key, spec in cfg.models.items():
        if spec.arch not in ARCHS:
            conv.fail(f"models.{key}.arch", f"got {spec.arch!r}; expected one of {', '.join(ARCHS)}")

    def known(keys: list[str], pool: dict | list, path: str, what: str) -> None:
        for i, k in enumerate(keys):
            if k not in pool:
                allowed = ", ".join(pool) or "(none defined)"
                conv.fail(f"{path}[{i}]", f"got {k!r}; expected one of the {what}: {allowed}")

    known(cfg.teacher.models, cfg.models, "teacher.models", "keys of `models`")
    known(cfg.synthesis.run, cfg.synthesis.methods, "synthesis.run", "keys of synthesis.methods")
    known(cfg.kd.students, cfg.models, "kd.students", "keys of `models`")
    known(cfg.metrics.evaluators, cfg.models, "metrics.evaluators", "keys of `models`")
    known(cfg.scratch.students, cfg.models, "scratch.students", "keys of `models`")
    for method, teachers in cfg.synthesis.teachers.items():
        if method not in cfg.synthesis.methods:
            conv.fail(f"synthesis.teachers.{method}", f"unknown method; expected keys of synthesis.methods: "
                      f"{', '.join(cfg.synthesis.methods) or '(none defined)'}")
        known(teachers, cfg.teacher.models, f"synthesis.teachers.{method}", "teachers (teacher.models)")
    for section, chosen in (("kd", cfg.kd.methods), ("scratch", cfg.scratch.methods), ("prune", cfg.prune.methods),
                            ("metrics.tsne", cfg.metrics.tsne.methods)):
        if chosen is not None:
            known(chosen, cfg.synthesis.run, f"{section}.methods", "methods run (synthesis.run)")
    if cfg.prune.teachers is not None:
        known(cfg.prune.teachers, cfg.teacher.models, "prune.teachers", "teachers (teacher.models)")
    for i, r in enumerate(cfg.prune.ratios):
        if not 0 < r < 1:
            conv.fail(f"prune.ratios[{i}]", f"got {r!r}; expected a fraction of filters, 0 < ratio < 1")
    if cfg.data.dataset == "custom" and not cfg.data.path and not cfg.data.standin:
        conv.fail("data.path", "missing: dataset 'custom' needs an image folder or an .npz file")
    if cfg.data.standin and cfg.data.dataset == "custom":
        conv.fail("data.standin", "a stand-in imitates fashion-mnist, cifar10 or cifar100; dataset 'custom' has no fixed shape")
    for reserved, why in (("real", "the real-data reference rows"), ("none", "pruning without fine-tuning"),
                         ("tsne", "the t-SNE outputs beside the metrics")):
        if reserved in cfg.synthesis.methods:
            conv.fail(f"synthesis.methods.{reserved}", f"'{reserved}' is reserved for {why}")
    syn = cfg.synthesis
    batches = -(-syn.num_images // syn.batch_size)
    if syn.shards > batches:
        conv.fail("synthesis.shards", f"got {syn.shards}; at most {batches} (one batch per shard at least)")
    for layer in cfg.metrics.tsne.layers:
        if not re.fullmatch(r"stage[1-9]\d*|embedding", layer):
            conv.fail("metrics.tsne.layers", f"got {layer!r}; expected 'stageK' (K >= 1) or 'embedding'")
    for key, m in syn.methods.items():
        where = f"synthesis.methods.{key}"
        if m.cotrain is None and (m.kind in GENERATIVE_KINDS or getattr(m, "competition", 0) > 0):
            why = f"kind {m.kind!r}" if m.kind in GENERATIVE_KINDS else f"competition = {m.competition:g}"
            conv.fail(f"{where}.cotrain", f"missing: {why} trains a student while it synthesizes; set cotrain.student to a key of `models`")
        if m.cotrain is not None and m.cotrain.student not in cfg.models:
            conv.fail(f"{where}.cotrain.student", f"got {m.cotrain.student!r}; expected one of the keys of `models`: "
                      f"{', '.join(cfg.models) or '(none defined)'}")
        if isinstance(m, NIConfig) and m.ftp_stages is not None:
            if not m.ftp_stages or any(s < 1 for s in m.ftp_stages) or len(set(m.ftp_stages)) != len(m.ftp_stages):
                conv.fail(f"synthesis.methods.{key}.ftp_stages", f"got {m.ftp_stages!r}; expected distinct stage numbers >= 1")


# ------------------------------------------------------------------------------ what each stage depends on


def _settings(cls: type, section: str, skip: tuple[str, ...] = ()) -> list[str]:
    return [f"{section}.{f.name}" for f in dataclasses.fields(cls) if f.name not in skip]


_DATA = ["data"]
_TEACHER = [*_DATA, "seed", "models.{teacher}", *_settings(TeacherConfig, "teacher", skip=("models",))]
_SYNTH = [*_TEACHER, *_settings(SynthesisConfig, "synthesis", skip=("run", "methods", "teachers")),
          "synthesis.methods.{method}"]
_KD = ["models.{student}", *_settings(KDConfig, "kd", skip=("students", "methods", "real_images"))]
_SCRATCH = ["models.{student}", *_settings(ScratchConfig, "scratch", skip=("students", "methods", "real_images"))]
_PRUNE = _settings(PruneConfig, "prune", skip=("ratios", "teachers", "methods", "real_images"))  # the ratio is in the job's name

# The parameters each stage's outputs depend on, directly or through its inputs, as dotted keys ({wildcards} filled
# per job). Snakemake passes their values through `params:`, dvc.yaml tracks the same keys and MLflow logs them, so
# editing one re-runs (and `dvc status` lists) exactly the jobs downstream of it. Lists that only say which jobs
# exist (teacher.models, synthesis.run, synthesis.teachers, kd.students, the sections' `methods`) are not settings of
# a job (natinv.plan lists the jobs).
STAGE_PARAMS: dict[str, list[str]] = {
    "data": _DATA,
    "teacher": _TEACHER,
    "synthesize": _SYNTH,
    "kd": [*_SYNTH, *_KD],
    "kd_real": [*_TEACHER, *_KD, "kd.real_images", "synthesis.num_images"],
    "evaluator": [*_DATA, "seed", "models.{evaluator}", *_settings(TeacherConfig, "teacher", skip=("models",))],
    "metrics": [*_SYNTH, *_settings(MetricsConfig, "metrics", skip=("tsne",))],
    "metrics_real": [*_TEACHER, *_settings(MetricsConfig, "metrics", skip=("tsne",))],
    "tsne": [*_TEACHER, "synthesis", "metrics.tsne"],
    "scratch": [*_SYNTH, *_SCRATCH],
    "scratch_real": [*_DATA, "seed", *_SCRATCH, "scratch.real_images", "synthesis.num_images"],
    "prune": [*_SYNTH, *_PRUNE],
    "prune_real": [*_TEACHER, *_PRUNE, "prune.real_images", "synthesis.num_images"],
    "prune_none": _TEACHER,
    "report": ["data", "seed", "models", "teacher", "synthesis", "kd", "metrics", "scratch", "prune"],
}


def tracked_stage(stage: str, method: str | None) -> str:
    """The STAGE_PARAMS entry of a job: a reference row's own (kd_real, prune_none, ...) when it has one, else the
    stage's."""
    return f"{stage}_{method}" if f"{stage}_{method}" in STAGE_PARAMS else stage


def stage_params(cfg: Config, stage: str, **wildcards: str) -> dict[str, Any]:
    """{dotted key: value} of the parameters one job of `stage` depends on."""
    tree = dataclasses.asdict(cfg)
    out: dict[str, Any] = {}
    for pattern in STAGE_PARAMS[stage]:
        key = pattern.format(**wildcards)
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None  # an unknown key: the stage reports it
        out[key] = node
    return out


def write_resolved(cfg: Config, path: Path) -> None:
    """Every parameter, defaults included (loadable again with load_config); the file is left alone when unchanged."""
    from natinv.io import atomic_write_bytes

    text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode()
    if not path.is_file() or path.read_bytes() != text:
        atomic_write_bytes(path, text)
