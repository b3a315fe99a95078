"""NaturalInversion (paper Alg. 1): I = alpha * tanh(W1(x + m_L)), m_L = FTP(teacher stage features of x), x = G(z|y).

With `acs_center: range`, I = c + alpha * tanh(...), c the midpoint of the data's valid pixel range per channel: the
paper's render is symmetric about 0, and on data whose valid range is not (Fashion-MNIST: [-0.66, 2.35] normalized)
a saturated tanh renders the background exactly when alpha falls to its level (0.66), which then caps the bright
pixels; a few iterations per batch from a meta-learned start (ni-fast) carry that fall from batch to batch.

With `ftp_input: jittered` (the official code) x is the generator output rolled and flipped at random (the same
augmentation the teacher's loss pass applies, drawn independently), so the image is rendered in that iteration's
jittered frame; with `clean` (the paper's Alg. 1) x = G(z|y). The kept image is the rendered one either way.

One-to-one (o2o): generator, FTP and alpha are re-initialized for every batch. With o2o off, one generator
and FTP serve all batches of a shard (alpha and z stay per batch), the paper's one-to-many ablation. With `meta`
(ni-fast), each batch's generator, FTP and head start from meta-learned parameters (natinv.synthesis.meta) instead of a
fresh initialization; alpha and z stay the batch's own.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from natinv.checkpoint import load_state
from natinv.config import NIConfig
from natinv.errors import ConfigError
from natinv.synthesis.ftp import FeatureTransferPyramid
from natinv.synthesis.generator import Generator
from natinv.synthesis.grouped import GroupedImages, to_batches, to_grouped
from natinv.synthesis.meta import MetaInit
from natinv.synthesis.objective import BatchResult, Carry, InversionObjective, chunks, concat, optimize, split_batches
from natinv.synthesis.priors import GroupJitter
from natinv.train import adam


class NaturalInversionImage(nn.Module):
    """Generator + FTP + output head; alpha (ACS) is kept outside so a shared generator can have per-batch alphas."""

    def __init__(self, cfg: NIConfig, num_classes: int, shape: tuple[int, int, int], stage_shapes: list[tuple[int, int, int]]):
        super().__init__()
        channels, size, _ = shape
        self.generator = Generator(num_classes, channels, size, cfg.latent_dim, cfg.generator_width)
        if cfg.generator_init == "official":
            self.generator.official_init()
        self.stages = [s - 1 for s in cfg.ftp_stages] if cfg.ftp_stages else list(range(len(stage_shapes)))
        self.ftp = FeatureTransferPyramid([stage_shapes[i] for i in self.stages], channels, size) if cfg.ftp else None
        self.head = nn.Conv2d(channels, channels, 1)

    def render(self, x: torch.Tensor, feats: list[torch.Tensor] | None, alpha: torch.Tensor) -> torch.Tensor:
        """The image from the generator output x and the teacher's stage features of x (None without FTP)."""
        if feats is not None:
            x = x + self.ftp([feats[i] for i in self.stages])
        return alpha * torch.tanh(self.head(x))


def synthesize(
    objective: InversionObjective,
    batches: list[tuple[torch.Tensor, int]],
    cfg: NIConfig,
    num_classes: int,
    shape: tuple[int, int, int],
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
    meta: MetaInit | None = None,
    fresh_z: bool = False,
    carry: Carry | None = None,
    pixel_range: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Iterator[BatchResult]:
    """One BatchResult per batch, in order. With objective.engine.batches_per_step = K > 1 (one-to-one only), K
    batches advance together: their generators, FTPs and alphas stay separate, the teacher passes are shared.
    `meta`: every batch starts from a copy of these meta-parameters (its alpha drawn around theirs), which are updated
    after each batch (in order).
    `fresh_z`: a new z every iteration (as one-to-many does), so the generator learns to map any z (a warm-up).
    `carry`: where one-to-many keeps the generator it carries from batch to batch (a resumed shard's is restored).
    `pixel_range`: the data's valid (lo, hi) per channel, normalized (data.pixel_range); needed by `acs_center: range`."""
    stage_shapes = check_stages(objective, cfg, shape)
    center = acs_center(cfg, pixel_range)
    per_step = objective.engine.batches_per_step if cfg.o2o else 1  # one-to-many: the generator carries over in order
    carry = Carry() if carry is None else carry
    for group in chunks(batches, per_step):
        models, zs, alpha0s, gens = [], [], [], []
        for labels, seed in group:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                if meta is not None:
                    shared = meta.start()
                elif cfg.o2o:
                    shared = NaturalInversionImage(cfg, num_classes, shape, stage_shapes)
                elif carry.module is None:
                    shared = carry.adopt(NaturalInversionImage(cfg, num_classes, shape, stage_shapes))
                else:
                    shared = carry.module
                models.append(shared.to(device).train())
                zs.append(torch.randn(len(labels), cfg.latent_dim))
                mean = cfg.alpha_mean if meta is None else meta.alpha_start(cfg.alpha_mean, shape[0])
                alpha0s.append(torch.randn(len(labels), shape[0], 1, 1) * cfg.alpha_std + mean)
            gens.append(torch.Generator().manual_seed(seed))
        sizes = [len(labels) for labels, _ in group]
        y = concat([labels for labels, _ in group]).to(device)
        draws = objective.draws(gens)
        jitter = draws if cfg.ftp and cfg.ftp_input == "jittered" else None
        # equal one-to-one batches run as one module of stacked parameters; otherwise each batch's module on its own
        render = (Grouped(models, alpha0s, cfg, device) if cfg.o2o and len(group) > 1 and len(set(sizes)) == 1
                  else Separate(models, alpha0s, cfg, device))
        optimizer = adam(render.groups, capturable=objective.engine.capture)
        if not cfg.o2o or fresh_z:  # one-to-many (the generator carries over) or a warm-up: a fresh z every iteration
            z_gen = torch.Generator(device=device).manual_seed(group[0][1])  # drawn where it is used: no copy per iteration
            z_gens = (z_gen,)

            def make_images():
                z = torch.randn(len(y), cfg.latent_dim, generator=z_gen, device=device)
                return centered(render.images(z, y, sizes, objective, jitter), center)
        else:
            z, z_gens = concat(zs).to(device), ()

            def make_images():
                return centered(render.images(z, y, sizes, objective, jitter), center)
        best, curve, best_iters = optimize(make_images, optimizer, objective, y, cfg.iterations, draws, on_step=on_step,
                                           sizes=sizes, generators=z_gens)
        if meta is not None:
            render.write_back()
            for model, alpha in zip(models, render.learned_alphas()):
                meta.update(model, {id(p): g["lr"] for g in param_groups(model, None, cfg) for p in g["params"]}, alpha)
        for k, (images, (labels, seed)) in enumerate(zip(split_batches(best, sizes), group)):
            yield BatchResult(images, labels, curve[:, k], best_iters[k], seed)


def acs_center(cfg: NIConfig, pixel_range: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | None:
    """The offset c of I = c + alpha * tanh(...), (1, C, 1, 1): None for `acs_center: zero` (the paper's render), the
    midpoint of the valid pixel range for `range`."""
    if cfg.acs_center == "zero":
        return None
    if pixel_range is None:
        raise ConfigError("acs_center = range: the data's valid pixel range was not given to the synthesis")
    lo, hi = pixel_range
    return (lo + hi) / 2


def centered(images: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
    return images if center is None else images + center


class Separate:
    """The modules of a group's batches, each run on its own (one batch, one-to-many's carried module, or batches of
    unequal sizes); the FTP's teacher features of the whole group still come from one shared pass."""

    def __init__(self, models: list[NaturalInversionImage], alpha0s: list[torch.Tensor], cfg: NIConfig, device: torch.device):
        self.models = models
        self.alphas = [nn.Parameter(a.to(device)) if cfg.acs else torch.ones_like(a, device=device) for a in alpha0s]
        self.groups = [g for model, alpha in zip(models, self.alphas) for g in param_groups(model, alpha, cfg)]

    def images(self, z: torch.Tensor, y: torch.Tensor, sizes: list[int], objective: InversionObjective,
               jitter: GroupJitter | None) -> torch.Tensor:
        """I = alpha * tanh(W1(x + m_L)) of the group's batches. jitter: the batches' draws that roll and flip
        x = G(z|y) first."""
        xs = [m.generator(z_k, y_k) for m, z_k, y_k in zip(self.models, split_batches(z, sizes), split_batches(y, sizes))]
        if jitter is not None:
            xs = split_batches(jitter(concat(xs), sizes), sizes)
        feats = objective.stage_features(concat(xs)) if self.models[0].ftp is not None else None
        per_batch = zip(*(split_batches(f, sizes) for f in feats)) if feats is not None else [None] * len(xs)
        return concat([m.render(x, None if f is None else list(f), alpha)
                       for m, x, f, alpha in zip(self.models, xs, per_batch, self.alphas)])

    def write_back(self) -> None:
        """Nothing to do: the modules are optimized themselves."""

    def learned_alphas(self) -> list[torch.Tensor | None]:
        """Each batch's alpha, with its last gradient (None without ACS)."""
        return [a if isinstance(a, nn.Parameter) else None for a in self.alphas]


class Grouped:
    """The modules of K equal one-to-one batches run as one (natinv.synthesis.grouped): every layer one grouped
    operator for all K, one stacked alpha, one Adam parameter group per kind of parameter."""

    def __init__(self, models: list[NaturalInversionImage], alpha0s: list[torch.Tensor], cfg: NIConfig, device: torch.device):
        self.stacked = GroupedImages(models)
        self.alpha = nn.Parameter(torch.stack(alpha0s).to(device)) if cfg.acs else None
        self.groups = param_groups(self.stacked, self.alpha, cfg)

    def images(self, z: torch.Tensor, y: torch.Tensor, sizes: list[int], objective: InversionObjective,
               jitter: GroupJitter | None) -> torch.Tensor:
        k, template = len(sizes), self.stacked.template
        x = self.stacked.generate(z, y)
        feats = None
        if jitter is not None or template.ftp is not None:
            seen = to_batches(x, k)
            if jitter is not None:
                seen = jitter(seen, sizes)
                x = to_grouped(seen, k)
            if template.ftp is not None:
                feats = objective.stage_features(seen)
                feats = [feats[i] for i in template.stages]
        return self.stacked.render(x, feats, self.alpha)

    def write_back(self) -> None:
        self.stacked.write_back()

    def learned_alphas(self) -> list[torch.Tensor | None]:
        """Each batch's alpha, with its last gradient (None without ACS), as Separate gives them."""
        if self.alpha is None:
            return [None] * self.stacked.k
        alphas = [a.detach().clone() for a in self.alpha]
        for k, a in enumerate(alphas):
            a.grad = None if self.alpha.grad is None else self.alpha.grad[k].clone()
        return alphas


def check_stages(objective: InversionObjective, cfg: NIConfig, shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The teacher's stage shapes for images of `shape`; an error when ftp_stages names a stage it does not have."""
    stage_shapes = objective.teacher.stage_shapes(shape[0], shape[1])
    if cfg.ftp_stages and max(cfg.ftp_stages) > len(stage_shapes):
        raise ConfigError(f"ftp_stages = {cfg.ftp_stages}: the teacher has {len(stage_shapes)} stages (1..{len(stage_shapes)})")
    return stage_shapes


def new_meta(objective: InversionObjective, cfg: NIConfig, num_classes: int, shape: tuple[int, int, int], seed: int,
             device: torch.device) -> MetaInit:
    """Meta-parameters initialized as one batch's generator, FTP and head would be (from `seed`), and with ACS alpha's
    mean at `alpha_mean`, on `device`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NaturalInversionImage(cfg, num_classes, shape, check_stages(objective, cfg, shape))
    alpha_mean = torch.full((shape[0],), cfg.alpha_mean, device=device) if cfg.acs else None
    return MetaInit(model.to(device).train(), cfg.meta, alpha_mean, cfg.lr_alpha)


def param_groups(model: NaturalInversionImage | GroupedImages, alpha: torch.Tensor | None, cfg: NIConfig) -> list[dict]:
    """Adam's parameter groups of one batch's module (or of K batches' stacked ones): the generator at lr_generator,
    the FTP and the output conv W1 at lr_ftp (lr_head when set), alpha at lr_alpha (with ACS; None: left out)."""
    if isinstance(model, GroupedImages):
        part = model.parameters
    else:
        def part(name: str) -> list[torch.Tensor]:
            return list(getattr(model, name).parameters())
    groups = [{"params": part("generator"), "lr": cfg.lr_generator},
              {"params": part("head"), "lr": cfg.lr_ftp if cfg.lr_head is None else cfg.lr_head}]
    if cfg.ftp:
        groups.append({"params": part("ftp"), "lr": cfg.lr_ftp})
    if cfg.acs and alpha is not None:
        groups.append({"params": [alpha], "lr": cfg.lr_alpha})
    return groups


def run_shard(job):
    """One shard of NaturalInversion (natinv.synthesis.shard.ShardJob -> ShardImages)."""
    from natinv.data import pixel_range
    from natinv.synthesis.inversion import run_batches

    meta: MetaInit | None = None  # with `meta`: the shard's meta-parameters, from the warm-up's file, then its batches'

    def optimize(objective: InversionObjective, batches: list[tuple[torch.Tensor, int]], carry: Carry) -> Iterator[BatchResult]:
        nonlocal meta
        if job.method.meta is not None and meta is None:
            meta = new_meta(objective, job.method, job.meta.num_classes, job.shape, 0, job.device)
            load_state(job.meta_path, meta, "the meta-parameters of this method's generator, FTP, head and alpha")
            carry.adopt(meta)  # a resumed shard continues from the meta-parameters its batches so far made
        return synthesize(objective, batches, job.method, job.meta.num_classes, job.shape, job.device,
                          on_step=job.on_step, meta=meta, carry=carry,
                          pixel_range=pixel_range(job.meta.mean, job.meta.std, job.device))

    return run_batches(job, optimize)
