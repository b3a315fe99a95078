"""The stage table: every stage of the pipeline in one place, read by the Snakefile (one rule per stage), the DVC
generator (natinv.dvc_yaml: one DVC stage per job), the CLI (`python -m natinv <stage>`) and MLflow tracking.

A stage has a runner (`natinv.stages.<module>`), wildcards (the CLI's `--teacher`, `--method`, ...), outputs
(templates of the file contract, natinv.paths), inputs (a function of the job's wildcards), the parameters its
outputs depend on, its threads and GPU, and its variants: the reference rows (`--method real`, and `none` for
pruning) that read no synthesized images and depend on other parameters. Which jobs a run holds comes from
natinv.plan.

Importing this module does not import torch.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natinv import paths, plan
from natinv.config import seeds
from natinv.config.schema import Config, KDConfig, MetricsConfig, PruneConfig, ScratchConfig, SynthesisConfig, TeacherConfig

Wildcards = dict[str, str]

# ------------------------------------------------------------------------------ what each stage depends on


def _settings(cls: type, section: str, skip: tuple[str, ...] = ()) -> list[str]:
    return [f"{section}.{f.name}" for f in dataclasses.fields(cls) if f.name not in skip]


# The parameters a stage's outputs depend on, directly or through its inputs, as dotted keys ({wildcards} filled per
# job). Snakemake passes their values through `params:`, dvc.yaml tracks the same keys and MLflow logs them, so
# editing one re-runs (and `dvc status` lists) exactly the jobs downstream of it. Lists that only say which jobs
# exist (teacher.models, synthesis.run, synthesis.teachers, kd.students, the sections' `methods`) are not settings of
# a job (natinv.plan lists the jobs).
_DATA = ["data"]
_TEACHER = [*_DATA, "seed", "models.{teacher}", *_settings(TeacherConfig, "teacher", skip=("models",))]
_SYNTH = [*_TEACHER, *_settings(SynthesisConfig, "synthesis", skip=("run", "methods", "teachers")),
          "synthesis.methods.{method}"]
_META = [*_TEACHER, "synthesis.batch_size", "synthesis.methods.{method}"]
_KD = ["models.{student}", *_settings(KDConfig, "kd", skip=("students", "methods", "real_images"))]
_SCRATCH = ["models.{student}", *_settings(ScratchConfig, "scratch", skip=("students", "methods", "real_images"))]
_PRUNE = _settings(PruneConfig, "prune", skip=("ratios", "teachers", "methods", "real_images"))  # the ratio is in the job's name
_METRICS = _settings(MetricsConfig, "metrics", skip=("tsne",))

# ------------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Output:
    template: str  # natinv.paths template under the experiment folder
    dvc: str = "outs"  # how dvc.yaml lists it: outs or metrics (both cached: `dvc exp show` reads an experiment's metrics
    # from the cache); the report's curves are DVC plots (natinv.report.charts)
    directory: bool = False
    persist: bool = False  # DVC keeps it when the stage re-runs (the stage itself skips what is already done)
    # Snakemake's HTML report (`snakemake --report`): the caption (reStructuredText; Jinja sees `snakemake.wildcards`),
    # its category and subcategory ({wildcards} allowed) and, for a folder, the patterns of the files it shows
    caption: str | None = None
    category: str | None = None
    subcategory: str | None = None
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    """A reference row: the stage with `method` set to a reserved name, reading no synthesized images."""

    tracked: list[str]
    gpu: bool = True


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    runner: str  # natinv.stages.<module>:<function>(cfg, device, **wildcards) -> Outcome
    wildcards: tuple[str, ...]
    outputs: dict[str, Output]
    inputs: Callable[[Config, Wildcards, bool], list[Path]]  # (cfg, wildcards, per_method) -> files read
    tracked: list[str]
    jobs: Callable[[Config], list[Wildcards]]
    gpu: bool = True  # asks for `job_gpus` GPUs on a cluster
    priority: int = 0  # Snakemake: among ready jobs, higher first
    variants: dict[str, Variant] = field(default_factory=dict)  # method value -> its variant
    dvc_job: tuple[str, ...] | None = None  # the wildcards of one DVC stage, when coarser than a Snakemake job
    dvc_outputs: dict[str, Output] | None = None  # its outputs then
    # the keys of `models` a job builds or loads besides its wildcards' (their architecture modules are loaded by name)
    networks: Callable[[Config, Wildcards], list[str]] = lambda cfg, w: []
    method_module: bool = False  # the job runs its synthesis method's module (loaded by name through the registry)

    def variant(self, w: Wildcards) -> Variant | None:
        return self.variants.get(seeds.split(w.get("method", ""))[0])

    def tracked_keys(self, w: Wildcards, bases: Callable[[str], list[str]] = lambda method: []) -> list[str]:
        """The dotted parameter keys one job depends on (a seed replica's: its method's; its seed is in its name). A
        method's settings as written in the params files (DVC tracks those) are its own and, for a variant, the
        settings of the methods it derives from (`bases(method)`: `base: ni` in synthesis.methods)."""
        v = self.variant(w)
        named = {**w, "method": seeds.split(w["method"])[0]} if "method" in w else w
        keys = [k.format(**named) for k in (v.tracked if v else self.tracked)]
        own = f"synthesis.methods.{named.get('method')}"
        return [*keys, *(f"synthesis.methods.{b}" for b in bases(named["method"]) if own in keys)] if "method" in w else keys

    def params(self, cfg: Config, w: Wildcards) -> dict[str, Any]:
        """{dotted key: value} of the parameters one job depends on (None for a key the params lack)."""
        tree = dataclasses.asdict(cfg)
        out: dict[str, Any] = {}
        for key in self.tracked_keys(w):
            node: Any = tree
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            out[key] = node
        return out

    def job_priority(self, cfg: Config, w: Wildcards) -> int:
        """Snakemake's priority of one job: the stage's, one more for the shard of a method that runs as one shard
        (ADI, NI+ADI, DAFL, DFAD: the longest jobs of a run, its critical path, start first)."""
        one_shard = self.name == "synthesize" and cfg.shards_of(w["method"]) < cfg.synthesis.shards
        return self.priority + one_shard

    def job_group(self, cfg: Config, w: Wildcards) -> str | None:
        """Snakemake's group of one job on a cluster: `synthesize-{teacher}-{method}` for the shards of a method that
        synthesis.shards_per_job groups (job_groups says how many share one cluster job), else none."""
        if self.name != "synthesize" or self.shards_per_job(cfg, w) < 2:
            return None
        return f"synthesize-{w['teacher']}-{w['method']}"

    @staticmethod
    def shards_per_job(cfg: Config, w: Wildcards) -> int:
        return min(cfg.synthesis.shards_per_job_of(w["teacher"], w["method"]), cfg.shards_of(w["method"]))

    def uses_gpu(self, w: Wildcards) -> bool:
        v = self.variant(w)
        return v.gpu if v else self.gpu

    def output_files(self, exp: Path, w: Wildcards) -> dict[str, Path]:
        return {name: paths.at(exp, o.template, **w) for name, o in self.outputs.items()}

    def code_version(self, cfg: Config, w: Wildcards) -> str:
        """A digest of the contents of the files `sources` lists: Snakemake re-runs a job when it changes (a code edit),
        as DVC does through the same files."""
        import hashlib

        digest = hashlib.sha256()
        for f in self.sources(cfg, w):
            digest.update(f"{f}\0{_file_digest(SRC.parent / f)}\0".encode())
        return digest.hexdigest()[:16]

    def digest(self, cfg: Config, w: Wildcards) -> str:
        """What one job's outputs are made from: the values of its parameters and the contents of its code."""
        import hashlib
        import json

        text = json.dumps(self.params(cfg, w), sort_keys=True, default=str) + self.code_version(cfg, w)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def log_template(self) -> str:
        """A job's log under the experiment folder: logs/{stage}/{wildcard values joined by -}.log."""
        return f"logs/{self.name}/" + ("-".join(f"{{{k}}}" for k in self.wildcards) or self.name) + ".log"

    @property
    def benchmark_template(self) -> str:
        """A Snakemake job's resource record (wall time, CPU time, peak memory, I/O) under the experiment folder."""
        return "benchmarks/" + self.log_template.removeprefix("logs/").removesuffix(".log") + ".tsv"

    @property
    def module(self) -> str:
        return self.runner.partition(":")[0]

    def sources(self, cfg: Config, w: Wildcards) -> tuple[Path, ...]:
        """The package's files one job runs: its runner's imports (source_modules), plus the modules loaded by name,
        which no import statement shows: the architectures of the networks it builds, and a synthesis method's own
        module."""
        from natinv.models import ARCHS
        from natinv.synthesis import registry

        networks = dict.fromkeys([*(w[k] for k in ("teacher", "student", "evaluator") if k in w), *self.networks(cfg, w)])
        modules = [self.module, *(f"natinv.models.{ARCHS[cfg.models[k].arch][0]}" for k in networks)]
        if self.method_module:
            modules.append(f"natinv.synthesis.{registry.of(cfg.job_methods[w['method']]).module}")
        return source_modules(*modules)


# ---------------------------------------------------------------------------------------------------- inputs


def _data(cfg: Config) -> list[Path]:
    return [paths.at(cfg.exp_dir, t) for t in paths.DATA.values()]


def _teacher(cfg: Config, w: Wildcards) -> list[Path]:
    return [paths.teacher_weights(cfg.exp_dir, w["teacher"])]


def _shard_inputs(cfg: Config, w: Wildcards) -> list[Path]:
    """A shard reads the teacher and, for a method that starts from meta-parameters, the warm-up stage's file."""
    from natinv.synthesis import registry

    has_meta = registry.meta_of(cfg.job_methods[w["method"]]) is not None
    return [*_teacher(cfg, w), *([paths.meta_weights(cfg.exp_dir, w["teacher"], w["method"])] if has_meta else [])]


def images(cfg: Config, teacher: str, method: str, per_method: bool) -> list[Path]:
    """What a job reads of (teacher, method)'s synthesized images: every shard's arrays, or (per_method, as a DVC stage
    sees it) the method's folder; nothing for a reference row."""
    if method not in cfg.job_methods:
        return []
    if per_method:
        return [paths.at(cfg.exp_dir, paths.SYNTH_DIR, teacher=teacher, method=method)]
    return [paths.shard_npz(cfg.exp_dir, teacher, method, s) for s in range(cfg.shards_of(method))]


def _evaluators(cfg: Config) -> list[Path]:
    return [paths.evaluator_weights(cfg.exp_dir, e) for e in cfg.metrics.evaluators]


def _report_inputs(cfg: Config, w: Wildcards, per_method: bool) -> list[Path]:
    """Every output of every other job (per_method: their top folders, as DVC tracks them)."""
    files = [f for stage in STAGES.values() if stage.name != "report" for job in stage.jobs(cfg)
             for f in stage.output_files(cfg.exp_dir, job).values()]
    if per_method:
        return list(dict.fromkeys(cfg.exp_dir / f.relative_to(cfg.exp_dir).parts[0] for f in files))
    return files


def _cotrained_student(cfg: Config, method: str) -> list[str]:
    co = cfg.cotrained(method)
    return [] if co is None else [co.student]


def _jobs(rows: list[tuple], *names: str) -> list[Wildcards]:
    return [{n: (f"{v:g}" if isinstance(v, float) else str(v)) for n, v in zip(names, row)} for row in rows]


def _o(templates: dict[str, str], **dvc: str) -> dict[str, Output]:
    return {name: Output(t, dvc.get(name, "outs")) for name, t in templates.items()}


_SHARD_CAPTION = ("Shard {{ snakemake.wildcards.shard }} of {{ snakemake.wildcards.method }}, synthesized from teacher "
                  "{{ snakemake.wildcards.teacher }}: the first images of each class (one row per class, in label "
                  "order), as stored in uint8.")
_TSNE_CAPTION = ("t-SNE of teacher {{ snakemake.wildcards.teacher }}'s features for real images and every method's "
                 "synthesized images (paper Figs. 4 and 7), one panel per layer.")
_REPORT_CAPTION = ("The run's report: every table (teachers, synthesis, KD beside the paper's Table 5, image metrics, "
                   "training from scratch, pruning, and how sure each comparison is) with its figures, as one page.")
_FIGURES_CAPTION = ("A figure of the report, named by what it shows: grids-*: real and synthesized images side by side, one row per class; "
                    "loss-* and fig5-*: synthesis losses per iteration; kd-*: student accuracy per epoch; prune-*: "
                    "accuracy per pruning ratio; tsne-*: feature embeddings.")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data", "fetch the dataset and write canonical uint8 arrays + manifest", "natinv.stages.data:run", (),
          _o(paths.DATA), lambda cfg, w, pm: [], _DATA, lambda cfg: [{}], gpu=False),
    Stage("teacher", "train a teacher on real data", "natinv.stages.teacher:run_teacher", ("teacher",),
          _o(paths.TEACHER), lambda cfg, w, pm: _data(cfg), _TEACHER,
          lambda cfg: _jobs([(t,) for t in cfg.teacher.models], "teacher"), priority=3),  # every other job waits for one
    Stage("evaluator", "train an independent network on real data whose embedding judges the images (metrics)",
          "natinv.stages.teacher:run_evaluator", ("evaluator",), _o(paths.EVALUATOR),
          lambda cfg, w, pm: _data(cfg),
          [*_DATA, "seed", "models.{evaluator}", *_settings(TeacherConfig, "teacher", skip=("models",))],
          lambda cfg: _jobs([(e,) for e in cfg.metrics.evaluators], "evaluator")),
    Stage("meta", "learn the meta-parameters every shard of a method with `meta` starts from (ni-fast's warm-up)",
          "natinv.stages.meta:run", ("teacher", "method"), _o(paths.META),
          lambda cfg, w, pm: _teacher(cfg, w), _META, lambda cfg: _jobs(plan.meta_jobs(cfg), "teacher", "method"),
          priority=2, method_module=True),
    Stage("synthesize", "synthesize images from a teacher: one shard, or all shards in turn",
          "natinv.stages.synthesize:run", ("teacher", "method", "shard"),
          {**_o(paths.SHARD), "png": Output(paths.SHARD["png"], category="2. Synthesized images", subcategory="{teacher}: {method}",
                                            caption=_SHARD_CAPTION)}, lambda cfg, w, pm: _shard_inputs(cfg, w),
          _SYNTH, lambda cfg: _jobs(plan.synthesis_jobs(cfg), "teacher", "method", "shard"),
          priority=2,  # the longest chain is shards -> their KD: start it before the jobs that only need the teacher
          dvc_job=("teacher", "method"), dvc_outputs={"shards": Output(paths.SYNTH_DIR, directory=True, persist=True)},
          networks=lambda cfg, w: _cotrained_student(cfg, w["method"]), method_module=True),
    Stage("kd", "distill a student from synthesized images (--method real: from real images)", "natinv.stages.kd:run",
          ("teacher", "method", "student"), _o(paths.KD),
          lambda cfg, w, pm: [*_data(cfg), *_teacher(cfg, w), *images(cfg, w["teacher"], w["method"], pm)],
          [*_SYNTH, *_KD], lambda cfg: _jobs(plan.kd_jobs(cfg), "teacher", "method", "student"), priority=1,
          variants={"real": Variant([*_TEACHER, *_KD, "kd.real_images", "synthesis.num_images"])}),
    Stage("metrics", "how real the images are: FD and precision/recall against real data (--method real: the floor)",
          "natinv.stages.metrics:run", ("teacher", "method"), _o(paths.METRICS),
          lambda cfg, w, pm: [*_data(cfg), *_teacher(cfg, w), *_evaluators(cfg), *images(cfg, w["teacher"], w["method"], pm)],
          [*_SYNTH, *_METRICS], lambda cfg: _jobs(plan.metrics_jobs(cfg), "teacher", "method"),
          variants={"real": Variant([*_TEACHER, *_METRICS])}, networks=lambda cfg, w: cfg.metrics.evaluators),
    Stage("tsne", "t-SNE of the teacher's features for real and every method's images (paper Figs. 4, 7)",
          "natinv.stages.tsne:run", ("teacher",),
          {**_o(paths.TSNE), "png": Output(paths.TSNE["png"], category="4. t-SNE", caption=_TSNE_CAPTION)},
          lambda cfg, w, pm: [*_data(cfg), *_teacher(cfg, w),
                              *(f for m in plan.tsne_methods(cfg, w["teacher"]) for f in images(cfg, w["teacher"], m, pm))],
          [*_TEACHER, "synthesis", "metrics.tsne"], lambda cfg: _jobs([(t,) for t in cfg.teacher.models], "teacher"),
          gpu=False),
    Stage("scratch", "train a random student on a method's images and labels only (--method real: on real images)",
          "natinv.stages.scratch:run", ("teacher", "method", "student"), _o(paths.SCRATCH),
          lambda cfg, w, pm: [*_data(cfg), *images(cfg, w["teacher"], w["method"], pm)],
          [*_SYNTH, *_SCRATCH], lambda cfg: _jobs(plan.scratch_jobs(cfg), "teacher", "method", "student"),
          variants={"real": Variant([*_DATA, "seed", *_SCRATCH, "scratch.real_images", "synthesis.num_images"])}),
    Stage("prune", "L1 filter pruning of the teacher, fine-tuned on a method's images (real: real images; none: not)",
          "natinv.stages.prune:run", ("teacher", "method", "ratio"), _o(paths.PRUNE),
          lambda cfg, w, pm: [*_data(cfg), *_teacher(cfg, w), *images(cfg, w["teacher"], w["method"], pm)],
          [*_SYNTH, *_PRUNE], lambda cfg: _jobs(plan.prune_jobs(cfg), "teacher", "method", "ratio"),
          variants={"real": Variant([*_TEACHER, *_PRUNE, "prune.real_images", "synthesis.num_images"]),
                    "none": Variant(_TEACHER, gpu=False)}),
    Stage("report", "write report.md, figures and summary.json from the stage outputs", "natinv.stages.report:run", (),
          {"report": Output(paths.REPORT["report"]), "summary": Output(paths.REPORT["summary"]),
           "headline": Output(paths.REPORT["headline"], "metrics", directory=True),
           "html": Output(paths.REPORT["html"], category="1. Report", caption=_REPORT_CAPTION),
           "figures": Output(paths.REPORT["figures"], directory=True, category="3. Figures", patterns=("{name}.png",),
                             caption=_FIGURES_CAPTION),
           "plots": Output(paths.REPORT["plots"], directory=True)},
          _report_inputs, ["data", "seed", "seeds", "models", "teacher", "synthesis", "kd", "metrics", "scratch", "prune"],
          lambda cfg: [{}], gpu=False, networks=lambda cfg, w: cfg.teacher.models),  # the FTP table counts their stages
)}

@functools.cache
def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


WILDCARD_TYPES: dict[str, type] = {"shard": int, "ratio": float}  # the others are names


def producer(cfg: Config, path: Path) -> tuple[Stage, Wildcards] | None:
    """The job of this run's plan that writes `path`, or None."""
    for stage in STAGES.values():
        for job in stage.jobs(cfg):
            if path in stage.output_files(cfg.exp_dir, job).values():
                return stage, job
    return None


def _contract_match(path: Path):
    """(stage, the experiment folder's name, the path in the file contract) of a stage output's path, or None."""
    import re

    text = Path(path).as_posix()
    for stage in STAGES.values():
        for out in [*stage.outputs.values(), *(stage.dvc_outputs or {}).values()]:
            pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(out.template))
            if m := re.search(f"(?:^|/)([^/]+)/({pattern}" + ("/.+)$" if out.directory else ")$"), text):
                return stage, m[1], m[2]
    return None


def contract_place(path: Path) -> str | None:
    """`{experiment}/{path under it}` of a stage output (the place its seal binds it to), or None outside the contract."""
    found = _contract_match(path)
    return None if found is None else f"{found[1]}/{found[2]}"


def maker_of(path: Path) -> str:
    """Which stage writes a file of this name, from the file contract alone (no params needed): "the `synthesize`
    stage (`natinv synthesize`)", or "natinv" for a file outside it."""
    found = _contract_match(path)
    return "natinv" if found is None else f"the `{found[0].name}` stage (`natinv {found[0].name}`)"


def missing_input_hint(cfg: Config, stage: Stage, w: Wildcards, params: list[str]) -> str | None:
    """One line naming the first input of a job of the plan that is not there and the command that makes it; None if all
    are (or the job is not one of the plan's: the stage then says what is wrong with its names)."""
    missing = next((f for f in stage.inputs(cfg, w, False) if not f.exists()), None) if w in stage.jobs(cfg) else None
    if missing is None:
        return None
    found = producer(cfg, missing)
    if found is None:
        return f"{missing} is missing, and no job of these params makes it"
    maker, job = found
    flags = "".join(f" --params {p}" for p in params) + "".join(f" --{k} {v}" for k, v in job.items())
    return f"{missing} is missing: stage {maker.name} makes it (`python -m natinv {maker.name}{flags}`, or `snakemake` for every stage)"


def stage_params(cfg: Config, stage: str, **wildcards: str) -> dict[str, Any]:
    """{dotted key: value} of the parameters one job of `stage` depends on."""
    return STAGES[stage].params(cfg, wildcards)


# --------------------------------------------------------------------------------------------- source files


SRC = Path(__file__).resolve().parent.parent  # src/: natinv's modules live below it


@functools.cache
def source_modules(*modules: str) -> tuple[Path, ...]:
    """The files of `modules` and of the natinv modules they import, at any depth and inside functions too (read with
    `ast`, so nothing is imported; `if TYPE_CHECKING:` blocks never run and are skipped): what a code edit must
    invalidate. Paths relative to the repository root (src/natinv/...)."""
    seen: dict[str, Path] = {}

    def visit(name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a package's __init__ runs before its module
            sub = ".".join(parts[:i])
            if sub not in seen and (path := _module_file(sub)) is not None:
                seen[sub] = path
                for imported in _imports(sub, path):
                    visit(imported)

    for module in modules:
        visit(module)
    return tuple(sorted(p.relative_to(SRC.parent) for p in seen.values()))


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    return next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.is_file()), None)


@functools.cache
def _imports(module: str, path: Path) -> tuple[str, ...]:
    """The natinv modules (and names that may be modules) `module`, read from `path`, imports when it runs."""
    import ast

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:  # relative: from the package, `level - 1` packages up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            names += [base, *(f"{base}.{a.name}" for a in node.names)]
    return tuple(n for n in names if n.split(".")[0] == "natinv")


def _runtime_nodes(tree):
    """Every node of `tree` except those under `if TYPE_CHECKING:`."""
    import ast

    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def job_groups(cfg: Config) -> dict[str, int]:
    """{Snakemake group: how many of its jobs run in one cluster job} (Snakemake's --group-components) for every group
    `Stage.job_group` names."""
    out: dict[str, int] = {}
    for t, m, _ in plan.synthesis_jobs(cfg):
        w = {"teacher": t, "method": m}
        if (group := STAGES["synthesize"].job_group(cfg, w)) is not None:
            out[group] = Stage.shards_per_job(cfg, w)
    return out
