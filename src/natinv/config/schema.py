"""The parameters' schema: one dataclass per params section, with defaults and bounds (`_min`). Loading and checking
live in natinv.config.loader and natinv.config.checks."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Union

from natinv.config.seeds import split as seeds_split


def _min(value: float, *, exclusive: bool = False, below: float | None = None) -> dict:
    """The bounds of a number: at least `value` (more than, when `exclusive`) and, when `below` is given, less than it."""
    return {"min": value, "exclusive": exclusive} | ({} if below is None else {"below": below})


@dataclass
class DataConfig:
    dataset: Literal["fashion-mnist", "cifar10", "cifar100", "custom"] = "fashion-mnist"
    root: str = "data"  # where datasets are looked up, cached and downloaded to
    path: str | None = None  # custom data: an image folder or an .npz file
    train_limit: int | None = field(default=None, metadata=_min(1))  # first N training images (tiny runs)
    test_limit: int | None = field(default=None, metadata=_min(1))
    test_fraction: float = field(default=0.1, metadata=_min(0, exclusive=True, below=1))  # custom data without a test split
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
    momentum: float = field(default=0.9, metadata=_min(0, below=1))
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
    momentum: float = field(default=0.9, metadata=_min(0, below=1))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    temperature: float = field(default=1.0, metadata=_min(0, exclusive=True))  # KL temperature (ADI, DAFL); DFAD matches logits by L1


@dataclass
class MetaConfig:
    """A meta-learned starting point for NaturalInversion's generator, FTP and output head (the `ni-fast` variant): each
    batch starts from shared meta-parameters instead of a fresh initialization, is adapted for the method's (few)
    `iterations`, and the meta-parameters then move toward what the batch learned. A warm-up stage (`python -m natinv
    meta`) learns them on `warmup_batches` batches of its own, whose images are discarded; every shard starts from its
    output and carries the meta-updates over its own batches, in order."""

    algorithm: Literal["reptile", "fomaml"] = "reptile"  # reptile: theta += lr (adapted - theta); fomaml: theta -= lr *
    # inner rate * the gradient at the adapted parameters (first-order MAML)
    lr: float = field(default=0.5, metadata=_min(0, exclusive=True))  # the meta step (reptile: 1 = take the adapted one)
    warmup_batches: int = field(default=8, metadata=_min(1))  # batches of the warm-up stage
    warmup_iterations: int | None = field(default=None, metadata=_min(1))  # their iterations; empty = the method's


@dataclass
class NIConfig:
    """NaturalInversion (paper Alg. 1). Defaults are the paper's CIFAR-10 settings."""

    kind: Literal["naturalinversion"] = "naturalinversion"
    iterations: int = field(default=2000, metadata=_min(1))
    lr_generator: float = field(default=1e-3, metadata=_min(0, exclusive=True))
    lr_ftp: float = field(default=5e-4, metadata=_min(0, exclusive=True))
    lr_alpha: float = field(default=5e-2, metadata=_min(0, exclusive=True))
    # the output 1x1 conv W1; None = lr_ftp (the official code optimizes it with the FTP)
    lr_head: float | None = field(default=None, metadata=_min(0, exclusive=True))
    lambda_bn: float = field(default=10.0, metadata=_min(0))
    lambda_tv: float = field(default=6e-3, metadata=_min(0))
    lambda_l2: float = field(default=1.5e-5, metadata=_min(0))
    latent_dim: int = field(default=1024, metadata=_min(1))
    generator_width: int = field(default=128, metadata=_min(2))  # channels of the paper's Table 6 generator
    alpha_mean: float = 5.0  # ACS init ~ N(alpha_mean, alpha_std)
    alpha_std: float = field(default=1.0, metadata=_min(0))
    jitter: int = field(default=2, metadata=_min(0))  # random roll of +-jitter pixels
    flip: bool = True
    priors_on: Literal["jittered", "clean"] = "jittered"  # the image TV and l2 are taken on (both originals: jittered)
    # the generator output the FTP's teacher features come from and m_L is added to: jittered and flipped (the official
    # code) or as generated (the paper's Alg. 1)
    ftp_input: Literal["jittered", "clean"] = "jittered"
    # official: Kaiming-normal convs, zero biases, BN weights ~ N(1, 0.02) (the official code); pytorch: PyTorch's own
    generator_init: Literal["official", "pytorch"] = "official"
    o2o: bool = True  # one-to-one: a fresh generator per batch (off: one generator for the whole shard)
    ftp: bool = True  # Feature Transfer Pyramid
    acs: bool = True  # Adaptive Channel Scaling (off: alpha fixed to 1)
    # zero: I = alpha * tanh(...) (the paper); range: I = c + alpha * tanh(...), c the midpoint of the data's valid pixel
    # range per channel (normalized), so that an asymmetric range ([-0.66, 2.35] for Fashion-MNIST) is reached at both ends
    acs_center: Literal["zero", "range"] = "zero"
    ftp_stages: list[int] | None = None  # 1-based teacher stages the FTP uses (paper Table 4); None = all
    competition: float = field(default=0.0, metadata=_min(0))  # ADI's teacher-student competition weight (needs cotrain)
    cotrain: CoTrainConfig | None = None  # a student distilled while synthesizing (ADI; the method then runs as one shard)
    meta: MetaConfig | None = None  # start every batch from meta-learned parameters (needs o2o; ni-fast)


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
    flip: bool = False  # NVlabs' CIFAR script only rolls
    priors_on: Literal["jittered", "clean"] = "jittered"  # the image TV and l2 are taken on (NVlabs: jittered)
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



MethodConfig = Union[NIConfig, DIConfig, DAFLConfig, DFADConfig]  # one per kind of natinv.synthesis.registry


@dataclass
class SynthesisConfig:
    run: list[str] = field(default_factory=list)  # method keys (of `methods`) to run
    num_images: int = field(default=1024, metadata=_min(1))
    batch_size: int = field(default=128, metadata=_min(1))
    shards: int = field(default=1, metadata=_min(1))
    save_scaling: Literal["clamp", "minmax"] = "clamp"  # uint8 rendering: clamp to [0,1] or per-image min-max
    methods: dict[str, MethodConfig] = field(default_factory=dict)
    teachers: dict[str, list[str]] = field(default_factory=dict)  # method -> the only teachers it inverts (default: all)
    # A batch whose loss or images become NaN/infinite is optimized again from a new seed (derived from its own, so a
    # re-run gives the same bytes) up to this many times; then the shard fails and nothing is written.
    retries: int = field(default=2, metadata=_min(0))
    # Snakemake on a cluster: a method key or a teacher key -> how many of its shards share one cluster job (a Snakemake
    # group job that asks for the sum of their GPUs, memory and threads and the longest one's runtime, and runs them side
    # by side, each shard process on a GPU of its own). A method's entry wins over its teacher's. Local runs ignore it.
    shards_per_job: dict[str, int] = field(default_factory=dict)

    def shards_per_job_of(self, teacher: str, method: str) -> int:
        return self.shards_per_job.get(seeds_split(method)[0], self.shards_per_job.get(teacher, 1))

    def shards_for(self, method: MethodConfig) -> int:
        """Shards of a method: `shards`, or 1 for a co-trained method (its student sees the batches in order)."""
        return 1 if method.cotrain is not None else self.shards


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
    momentum: float = field(default=0.9, metadata=_min(0, below=1))
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
    momentum: float = field(default=0.9, metadata=_min(0, below=1))
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
    momentum: float = field(default=0.9, metadata=_min(0, below=1))
    weight_decay: float = field(default=5e-4, metadata=_min(0))
    targets: Literal["teacher", "labels"] = "teacher"  # fine-tune on the unpruned teacher's soft targets, or the labels
    temperature: float = field(default=4.0, metadata=_min(0, exclusive=True))  # targets=teacher
    real_images: int | None = field(default=None, metadata=_min(1))


@dataclass(frozen=True)
class EngineConfig:
    """How synthesis and training run on their device; none of it changes the method, so it is not tracked as a
    parameter of the results (like `device`), but every shard records it. Defaults chosen by measurement (benchmarks/README.md,
    "Synthesis engine")."""

    channels_last: bool = True  # the teacher passes in channels_last: the same values up to float rounding
    # bf16: synthesis under bfloat16 autocast (generator, FTP, ACS, teacher passes, co-trained students), losses and
    # BN statistics in float32 (changes numerics)
    autocast: Literal["bf16"] | None = None
    # bf16: the training loops (teachers, evaluators, KD, scratch, pruning's fine-tuning) under bfloat16 autocast
    train_autocast: Literal["bf16"] | None = None
    compile: bool = False  # torch.compile the teacher passes (a one-off compile in every synthesize process)
    batches_per_step: int = field(default=1, metadata=_min(1))  # one-to-one batches advanced in one vectorized step
    # NI and DI: after a few eager iterations, each batch group's iteration is captured once as a CUDA graph and
    # replayed (one launch per iteration instead of hundreds of kernels); on a device without CUDA graphs the same
    # static iteration runs uncaptured (the same numbers, no speed-up)
    capture: bool = False
    # a shard saves its progress (images so far, a co-trained student, generators) at the first batch or generator-step
    # boundary after this many minutes, and a re-run continues from there (0: at every boundary)
    save_every_minutes: float = field(default=10.0, metadata=_min(0))


@dataclass(frozen=True)
class TrackingConfig:
    """What a stage sends to MLflow; none of it changes a result, so it is not tracked as a parameter of one."""

    # every synthesis batch's losses per iteration go to MLflow as metrics while they run (a live view), while a
    # (teacher, method)'s batches x iterations is at most this; above it, each shard run gets one point per batch (its
    # losses at the best iteration) as it finishes, its mean curves at most CURVE_STEPS points long, and every batch's
    # curves as one artifact, curves.npz (the arrays the report reads from the shard)
    live_curve_points: int = field(default=100_000, metadata=_min(0))


@dataclass
class JobThreads:
    """Snakemake: threads (= torch threads) of each job, so that shards and students run side by side up to --cores.
    A stage run by hand or by `dvc repro` (one at a time) uses `threads` instead."""

    data: int = field(default=1, metadata=_min(1))
    teacher: int = field(default=2, metadata=_min(1))
    synthesize: int = field(default=1, metadata=_min(1))
    meta: int = field(default=1, metadata=_min(1))
    kd: int = field(default=1, metadata=_min(1))
    evaluator: int = field(default=1, metadata=_min(1))
    metrics: int = field(default=1, metadata=_min(1))
    tsne: int = field(default=1, metadata=_min(1))
    scratch: int = field(default=1, metadata=_min(1))
    prune: int = field(default=1, metadata=_min(1))
    report: int = field(default=1, metadata=_min(1))


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    # the seeds synthesis and the applications run with; each one besides `seed` adds a replica of every such job
    # (natinv.config.seeds), and the report gives mean ± std over them. null = `seed` alone
    seeds: list[int] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"  # cuda: a job with no usable GPU stops at once, saying why
    # GPU jobs: true = the same bytes on every re-run on the same GPU (no cuDNN autotuning, deterministic kernels, TF32
    # off; slower); false = autotuned kernels and TF32 convolutions (a re-run may differ in the last bits)
    deterministic: bool = False
    threads: int | None = field(default=None, metadata=_min(1))  # torch CPU threads (None = torch's default)
    job_threads: JobThreads = field(default_factory=lambda: JobThreads())
    # Snakemake: GPUs each job of a GPU stage (teacher, evaluator, synthesize, kd, metrics, scratch, fine-tuned prune)
    # asks for, as its `gpu` resource (the SLURM plugin passes it on as --gpus). 0 = CPU jobs, 1 = one GPU (a stage
    # process uses one; synthesis.shards_per_job gives a job several, one per shard); data, tsne, prune without
    # fine-tuning and report never ask for one.
    job_gpus: int = field(default=0, metadata=_min(0))
    # the device whose rates (natinv.cost.RATES) turn a job's FLOPs into the runtime a cluster is asked for; each job's
    # memory request is what it holds by design (python -m natinv cost prints both)
    cluster_device: Literal["cpu", "h100", "h200"] = "cpu"
    # the cluster's time limit per job (minutes): runtime requests stop there, and a longer synthesis shard continues in
    # the next submission from its saved progress (the SLURM profile's `retries` must cover how many it needs)
    job_max_minutes: int = field(default=1440, metadata=_min(10))
    engine: EngineConfig = field(default_factory=EngineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
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

    @property
    def extra_seeds(self) -> list[int]:
        """The seeds of `seeds` other than `seed`, in order: one replica of every synthesis and application job each."""
        return [s for s in dict.fromkeys(self.seeds or []) if s != self.seed]

    @property
    def run_methods(self) -> list[str]:
        """The methods synthesis.run lists, in order (a seed replica as its method): those whose settings, colours and
        results a run shows."""
        return list(dict.fromkeys(seeds_split(m)[0] for m in self.synthesis.run))

    @property
    def job_methods(self) -> dict[str, MethodConfig]:
        """Every method name a job may carry: the keys of synthesis.methods and their replicas at the seeds of `seeds`
        (`ni-seed1`; a replica job runs with its seed as `seed`, so the run's own seed is among them)."""
        from natinv.config.seeds import replicated

        return {k: self.synthesis.methods[seeds_split(k)[0]] for k in replicated(list(self.synthesis.methods), self.seeds or [])}

    def for_job(self, method: str | None) -> Config:
        """The parameters a job of `method` runs with: a seed replica's own seed, else these."""
        seed = None if method is None else seeds_split(method)[1]
        return self if seed is None else replace(self, seed=seed)

    def cotrained(self, method: str) -> CoTrainConfig | None:
        """The student `method` distils while it synthesizes, if any."""
        return None if seeds_split(method)[0] == "real" else self.job_methods[method].cotrain

    def shards_of(self, method: str) -> int:
        return self.synthesis.shards_for(self.job_methods[method])
