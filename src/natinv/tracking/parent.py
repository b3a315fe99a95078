"""The parent run of a pipeline run (Snakemake's onstart/onsuccess/onerror): the stage runs nest under it, and at
the end it carries the run's headline results, so MLflow's first view compares methods and pipeline runs."""
from __future__ import annotations

import os
import socket
import time

from natinv.config import Config
from natinv.runtime import log
from natinv.tracking.store import (PARENT_ENV, create_run, drop_twins, enabled, experiment_of, git_commit, log_batches,
                                   mlflow_experiment, retry, store, tracking_uri, warn_on_failure)

def start_pipeline(cfg: Config, driver: str) -> str | None:
    """Create the parent run of a pipeline run and export its id to the stage processes; None when tracking is off or fails."""
    if not enabled():
        return None
    run_id = None
    with warn_on_failure(f"pipeline start: {tracking_uri(cfg)}"):
        tags = {"stage": "pipeline", "driver": driver, "experiment": cfg.experiment, "driver_host": socket.gethostname(),
                "driver_pid": str(os.getpid()), "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
                **git_commit()}
        with store(cfg) as client:
            experiment_id = experiment_of(client, cfg)
            _end_orphans(client, experiment_id)
            run = create_run(client, experiment_id, tags)
            run_id = os.environ[PARENT_ENV] = run.info.run_id
            log(f"MLflow: parent run {run_id} in experiment {mlflow_experiment(cfg)!r} at {tracking_uri(cfg)}")
            drop_twins(client, run)
    return run_id


def end_pipeline(cfg: Config, status: str) -> None:
    """End the parent run with `status`. A run in which no stage ran (everything up to date, `snakemake --touch`) is
    deleted rather than left empty; a finished one gets the headline numbers as metrics, the resolved parameters
    (`params.yaml`) and the report as artifacts, its main settings as params and a description."""
    run_id = os.environ.get(PARENT_ENV)
    if not run_id or not enabled():
        return
    with warn_on_failure(f"pipeline end: {tracking_uri(cfg)}"):
        with store(cfg) as client:
            run = retry(client.get_run, run_id)
            children = retry(client.search_runs, [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'",
                             max_results=1)
            if not children:
                retry(client.delete_run, run_id)
            else:
                if status == "FINISHED":
                    _log_headline(cfg, client, run_id)
                retry(client.set_terminated, run_id, status)
            drop_twins(client, run)


def _log_headline(cfg: Config, client, run_id: str) -> None:
    from natinv import paths
    from natinv.io import read_json
    from natinv.report.headline import mlflow_metrics

    exp = cfg.exp_dir
    summary = paths.at(exp, paths.REPORT["summary"])
    metrics = mlflow_metrics(cfg, read_json(summary)) if summary.is_file() else {}
    log_batches(client, run_id, main_settings(cfg), {"mlflow.note.content": description(cfg, metrics)},
                [(k, v, 0, None) for k, v in metrics.items()])
    for path in (exp / "params.yaml", paths.at(exp, paths.REPORT["html"]), summary):
        if path.is_file():
            retry(client.log_artifact, run_id, str(path))


def main_settings(cfg: Config) -> dict[str, str]:
    """Every setting of the run (the methods it runs, not every one defined), so MLflow's compare view of two pipeline
    runs shows what differs ("Show diff only"); the same as the params.yaml artifact."""
    import dataclasses

    from natinv.tracking.stage import neutral_params

    return {k: str(v) for k, v in neutral_params(dataclasses.asdict(cfg), None, cfg.run_methods).items()}


def description(cfg: Config, metrics: dict[str, float]) -> str:
    """The parent run's description (MLflow's Description box, markdown): what ran and where its numbers are."""
    methods = ", ".join(cfg.synthesis.run)
    seeds = [cfg.seed, *cfg.extra_seeds]
    lines = [f"natinv pipeline run of experiment `{cfg.experiment}` ({cfg.data.dataset}; teacher(s) "
             f"{', '.join(cfg.teacher.models)}; methods {methods} and real images; {len(seeds)} seed(s) {seeds}).", ""]
    if metrics:
        lines += ["Metrics, per method (mean over the seeds): `METHOD/kd` and `METHOD/scratch` student accuracy (%), "
                  "`METHOD/prune_R` the teacher with R % of its filters removed and fine-tuned (%), `METHOD/fd` and "
                  "`METHOD/fd_eval` Fréchet distance to real images in the teacher's and the evaluator's embedding "
                  "(lower is closer), `METHOD/precision`, `METHOD/recall`; `teacher/test_acc`.", "",
                  "The stage runs are nested below this one; the full report with its spread and verdicts is the "
                  "`report.html` artifact, every setting the `params.yaml` artifact."]
    return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _end_orphans(client, experiment_id: str) -> None:
    """Runs still RUNNING whose process (Snakemake for a pipeline's parent run, the stage's own process for a stage
    run), on this host, no longer exists were killed: mark them KILLED, ended now, so they do not stay running in
    the UI for ever."""
    host = socket.gethostname()
    runs = retry(client.search_runs, [experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
    for run in runs:
        tags = run.data.tags
        run_host, pid = tags.get("driver_host", tags.get("host")), tags.get("driver_pid", tags.get("pid", ""))
        if run_host == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            retry(client.set_terminated, run.info.run_id, "KILLED")
            what = "a pipeline" if tags.get("stage") == "pipeline" else f"stage {tags.get('mlflow.runName', '')!r}"
            log(f"MLflow: run {run.info.run_id} of {what} that was killed (pid {pid}) marked KILLED")
