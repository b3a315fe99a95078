# The whole pipeline (the stage table in README.md) for Snakemake. Wiring only: the natinv package loads and validates
# the parameters, and every rule in workflow/rules/ calls `python -m natinv <stage>`.
#
#   snakemake --cores 2                                                        # the embedded default
#   snakemake --cores 2 --configfile params/default.yaml params/<profile>.yaml # a profile on top of it
#   snakemake --profile workflow/profiles/slurm --configfile ...               # on a SLURM cluster
import os
import sys
from pathlib import Path

from natinv import paths, plan, tracking
from natinv.config import config_from_dict, stage_params, write_resolved
from natinv.errors import ConfigError

configfile: "params/default.yaml"

try:
    CFG = config_from_dict(config, {"": " + ".join(dict.fromkeys(map(str, workflow.configfiles)))})
except ConfigError as exc:
    raise WorkflowError(f"natinv: error: {exc}") from None

# Stage commands run the `python` of the environment Snakemake itself runs in.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

EXP = str(CFG.exp_dir)
# The resolved parameters (defaults included) every stage command reads: written when a run starts (not by a
# dry run), and only when they changed.
PARAMS = f"{EXP}/params.yaml"

wildcard_constraints:
    teacher="[^/]+",
    method="[^/]+",
    student="[^/]+",
    evaluator="[^/]+",
    ratio=r"0\.\d+",
    shard=r"\d+",

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/synthesize.smk"
include: "workflow/rules/kd.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/applications.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True


onstart:
    write_resolved(CFG, Path(PARAMS))
    tracking.start_pipeline(CFG, "snakemake")


onsuccess:
    tracking.end_pipeline(CFG, "FINISHED")


onerror:
    tracking.end_pipeline(CFG, "FAILED")
