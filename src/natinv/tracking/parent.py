"""The parent run of a pipeline run (Snakemake's onstart/onsuccess/onerror): the stage runs nest under it, and at
the end it carries the run's headline results, so MLflow's first view compares methods and pipeline runs."""
from __future__ import annotations

import os
import socket
import time

from natinv.config import Config
from natinv.runtime import log
from natinv.tracking.store import PARENT_ENV, enabled, experiment_of, git_commit, retry, store, tracking_uri, warn_on_failure

def start_pipeline(cfg: Config, driver: str) -> str | None:
    """Create the parent run of a pipeline run and export its id to the stage processes; None when tracking is off or fails."""
    if not enabled():
        return None
    with warn_on_failure(f"pipeline start: {tracking_uri(cfg)}"):
        tags = {"stage": "pipeline", "driver": driver, "experiment": cfg.experiment, "driver_host": socket.gethostname(),
                "driver_pid": str(os.getpid()), "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
                **git_commit()}
        with store(cfg) as client:
            experiment_id = experiment_of(client, cfg)
            _end_orphans(client, experiment_id)
            run = retry(client.create_run, experiment_id, tags=tags)
        os.environ[PARENT_ENV] = run.info.run_id
        log(f"MLflow: parent run {run.info.run_id} in experiment {cfg.experiment!r} at {tracking_uri(cfg)}")
        return run.info.run_id
    return None


def end_pipeline(cfg: Config, status: str) -> None:
    run_id = os.environ.get(PARENT_ENV)
    if not run_id or not enabled():
        return
    with warn_on_failure(f"pipeline end: {tracking_uri(cfg)}"):
        with store(cfg) as client:
            retry(client.set_terminated, run_id, status)


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
