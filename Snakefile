# The whole pipeline for Snakemake: one rule per stage of natinv.pipeline.STAGES (the stage table: its paths,
# inputs, tracked parameters, threads and GPUs), each running `python -m natinv <stage>`. Wiring only.
#
#   snakemake                                                                  # the embedded default (profiles/default)
#   snakemake --report report.html                                             # its HTML report, after a run
#   snakemake --cores 2 --configfile params/default.yaml params/<profile>.yaml # a profile on top of it
#   snakemake --profile workflow/profiles/slurm --configfile ...               # on a SLURM cluster
import os
import sys
from pathlib import Path

from natinv import cost, pipeline, run_lock
from natinv.tracking import parent as tracking
from natinv.config import config_from_dict, file_origins, retype_lists
from natinv.errors import ConfigError
from natinv.io import atomic_write_bytes

DEFAULT = "params/default.yaml"

configfile: DEFAULT

report: "workflow/report/workflow.rst"  # the first page of `snakemake --report`: what the workflow does

# An error names the params file that set the bad key, or `snakemake --config`. Snakemake merges this directive's
# file first, then the --configfile files in order, then --config.
ORIGIN = file_origins([DEFAULT, *(f for f in workflow.configfiles if str(f) != DEFAULT)], config, "snakemake --config")
try:
    CFG = config_from_dict(retype_lists(config, ORIGIN, "snakemake --config"), ORIGIN)
except ConfigError as exc:
    raise WorkflowError(f"natinv: error: {exc}") from None

# Stage commands run the `python` of the environment Snakemake itself runs in.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

EXP = CFG.exp_dir
# The resolved parameters (defaults included) every stage command reads: written when a run starts (not by a
# dry run), and only when they changed; refused while another run on this folder uses other ones (natinv.run_lock).
PARAMS = f"{EXP}/params.yaml"
HELD = []  # that run lock, held while this run lasts

wildcard_constraints:
    teacher="[^/]+",
    method="[^/]+",
    student="[^/]+",
    evaluator="[^/]+",
    ratio=r"0\.\d+",
    shard=r"\d+",


def job(w):
    return dict(w.items())


def asks(stage, w):
    """(mem_mb, runtime in minutes) a cluster is asked for one job: natinv.cost's estimate for it, with a margin."""
    try:
        return cost.cluster_request(CFG, stage.name, job(w))
    except ConfigError as exc:  # e.g. images a model cannot take: one line, before any job runs
        raise WorkflowError(f"natinv: error: {exc}") from None


def caption(stage, name, text):
    """The caption file of one output for Snakemake's report (it takes captions as files), written from the stage table."""
    path = Path(".snakemake/natinv-captions") / f"{stage}-{name}.rst"
    if not path.is_file() or path.read_text() != text + "\n":
        atomic_write_bytes(path, (text + "\n").encode())
    return str(path)


def declared(stage, name, o):
    """An output as Snakemake declares it: a folder with directory(), a figure of the HTML report with report()."""
    path = (directory if o.directory else str)(str(EXP / o.template))
    if o.caption is None:
        return path
    return report(path, caption=caption(stage.name, name, o.caption), category=o.category, subcategory=o.subcategory,
                  patterns=list(o.patterns))


# Shards that share one cluster job (synthesis.shards_per_job): a Snakemake group per (teacher, method), and how many
# of its shards go in one job, its --group-components (one given on the command line wins). Snakemake sets up its group
# settings after reading this file and reads the counts after asking each job's group, so the count is added then.
# Local runs ignore groups.
GROUPS = pipeline.job_groups(CFG)


def group_of(stage, w):
    group = stage.job_group(CFG, job(w))
    settings = workflow.group_settings
    if group is not None and group not in settings.group_components:  # a new mapping of the same (immutable) type
        settings.group_components = type(settings.group_components)({**settings.group_components, group: GROUPS[group]})
    return group


for stage in pipeline.STAGES.values():
    rule:
        name: stage.name
        input:
            lambda w, stage=stage: [str(p) for p in stage.inputs(CFG, job(w), False)],
        output:
            **{k: declared(stage, k, o) for k, o in stage.outputs.items()},
        params:
            command=f"python -m natinv {stage.name}" + "".join(f" --{k} {{{k}}}" for k in stage.wildcards),
            file=PARAMS,
            tracked=lambda w, stage=stage: stage.params(CFG, job(w)),  # a changed value re-runs the job
            code=lambda w, stage=stage: stage.code_version(CFG, job(w)),  # so does an edit of a file its runner imports
        threads: getattr(CFG.job_threads, stage.name)
        priority: lambda w, stage=stage: stage.job_priority(CFG, job(w))
        group: (lambda w, stage=stage: group_of(stage, w)) if GROUPS else None  # synthesis.shards_per_job
        resources:
            gpu=lambda w, stage=stage: CFG.job_gpus if stage.uses_gpu(job(w)) else 0,
            mem_mb=lambda w, stage=stage: asks(stage, w)[0],  # what this job holds by design (natinv.cost)
            runtime=lambda w, stage=stage: asks(stage, w)[1],  # its FLOPs at the rates of `cluster_device`
        log:
            str(EXP / stage.log_template),
        benchmark:
            str(EXP / stage.benchmark_template),
        shell:
            "{params.command} --params {params.file} --threads {threads} 2>&1 | tee {log}"


rule all:
    input:
        rules.report.output,
    default_target: True


onstart:
    try:
        HELD.append(run_lock.hold(CFG, Path(PARAMS)))
    except run_lock.ExperimentBusy as exc:
        raise WorkflowError(f"natinv: error: {exc}") from None
    tracking.start_pipeline(CFG, "snakemake")


onsuccess:
    tracking.end_pipeline(CFG, "FINISHED")


onerror:
    tracking.end_pipeline(CFG, "FAILED")
