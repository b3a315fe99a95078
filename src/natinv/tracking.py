"""MLflow tracking: one run per stage invocation, nested under one parent run per pipeline run.

The files under results/ are the truth; tracking only mirrors them. Every tracking call is wrapped so that a
failure (no MLflow, a locked database, a server that is down) is one warning line, never a failed stage.
Runs are written in one go when the stage ends (a few batched calls), which keeps parallel shard jobs from
holding SQLite's single write lock for long; "database is locked" is retried with back-off.

Store: `MLFLOW_TRACKING_URI` if set, else SQLite at `{results}/mlflow.db` with artifacts in `{results}/mlartifacts`.
`NATINV_TRACKING=off` disables tracking. The parent run's id travels in `NATINV_MLFLOW_PARENT_RUN`.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from natinv.config import Config
from natinv.runtime import log

PARENT_ENV = "NATINV_MLFLOW_PARENT_RUN"
T = TypeVar("T")


@dataclass
class Outcome:
    """What a stage hands to tracking: its JSON result, curves (name -> value per step) and files to attach."""

    result: dict
    series: dict[str, Sequence[float]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


def enabled() -> bool:
    return os.environ.get("NATINV_TRACKING", "on").lower() not in ("0", "off", "false", "no")


def tracking_uri(cfg: Config) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(cfg.results) / 'mlflow.db').resolve()}"


def _artifact_location(cfg: Config) -> str | None:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None  # the server decides
    return (Path(cfg.results) / "mlartifacts").resolve().as_uri()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _git_commit() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()} if commit else {}


def _retry(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """SQLite allows one writer at a time: retry "database is locked" (and the like) for up to a minute."""
    delay = 0.1
    for attempt in range(30):
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mlflow wraps sqlite errors in several exception types
            text = str(exc).lower()
            if attempt == 29 or not any(s in text for s in ("locked", "busy")):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _warn_on_failure(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a stage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log(f"warning: MLflow tracking failed ({what}): {first[:300]}; the stage's files under results/ are complete")


@contextlib.contextmanager
def _store_lock(cfg: Config) -> Iterator[None]:
    """Processes writing one SQLite store take turns, by an exclusive lock on `{db}.lock` beside it. MLflow creates and
    migrates a new store on first use, and parallel first uses race (tables half-created, every run lost); turns also
    keep SQLite's single writer lock from timing out under many parallel jobs. Other stores (a server) need none."""
    uri = tracking_uri(cfg)
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _store(cfg: Config) -> Iterator[Any]:
    """A client of the store, during this process's turn at it. MLflow is imported first (seconds of CPU, outside the
    turn); creating the client opens the database (and creates and migrates a new one), so that happens inside it."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines about creating the store
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with _store_lock(cfg):
        yield MlflowClient(tracking_uri=tracking_uri(cfg))


def _experiment_id(client, cfg: Config) -> str:
    found = _retry(client.get_experiment_by_name, cfg.experiment)
    if found is not None:
        return found.experiment_id
    try:
        return _retry(client.create_experiment, cfg.experiment, artifact_location=_artifact_location(cfg))
    except Exception:  # noqa: BLE001 - created by a parallel job in the meantime
        return _retry(client.get_experiment_by_name, cfg.experiment).experiment_id


def _log_batches(client, run_id: str, params: dict[str, Any], tags: dict[str, str], points: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    param_list = [Param(k, str(v)[:6000]) for k, v in params.items()]
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    metric_list = [Metric(k, float(v), now, step) for k, v, step in points]
    for i in range(0, len(param_list), 100):
        _retry(client.log_batch, run_id, params=param_list[i:i + 100])
    for i in range(0, len(tag_list), 100):
        _retry(client.log_batch, run_id, tags=tag_list[i:i + 100])
    for i in range(0, len(metric_list), 1000):
        _retry(client.log_batch, run_id, metrics=metric_list[i:i + 1000])


def _points(outcome: Outcome) -> list[tuple[str, float, int]]:
    """Scalar results as step-0 metrics; per-epoch records and explicit series as stepped metrics."""
    points = [(k, float(v), 0) for k, v in flatten({k: v for k, v in outcome.result.items() if k != "settings"}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for record in outcome.result.get("epochs", []):
        points += [(f"epoch/{k}", float(v), int(record["epoch"])) for k, v in record.items() if k != "epoch"]
    for name, values in outcome.series.items():
        points += [(name, float(v), step) for step, v in enumerate(values, start=1)]
    return points


class StageRun:
    """One MLflow run for one stage invocation; opened when the stage starts, written when it ends."""

    def __init__(self, cfg: Config, stage: str, keys: Mapping[str, Any], params: Mapping[str, Any]):
        self.cfg, self.stage, self.keys, self.params = cfg, stage, dict(keys), dict(params)
        self.started = time.time()

    @property
    def name(self) -> str:
        return " ".join([self.stage, *(f"{v}" if k != "shard" else f"shard-{v}" for k, v in self.keys.items())])

    def close(self, status: str, outcome: Outcome | None = None) -> None:
        if not enabled():
            return
        with _warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}"):
            tags = {"stage": self.stage, **{k: str(v) for k, v in self.keys.items()}, "experiment": self.cfg.experiment,
                    "mlflow.runName": self.name, **_git_commit()}
            if parent := os.environ.get(PARENT_ENV):
                tags["mlflow.parentRunId"] = parent
            points = _points(outcome) if outcome else []
            with _store(self.cfg) as client:
                run = _retry(client.create_run, _experiment_id(client, self.cfg), start_time=int(self.started * 1000))
                run_id = run.info.run_id
                _log_batches(client, run_id, flatten(self.params), tags, points)
                for path in outcome.artifacts if outcome else []:
                    if path.is_file():
                        _retry(client.log_artifact, run_id, str(path))
                _retry(client.set_terminated, run_id, status, int(time.time() * 1000))


def start_pipeline(cfg: Config, driver: str) -> str | None:
    """Create the parent run of a pipeline run and export its id to the stage processes; None when tracking is off or fails."""
    if not enabled():
        return None
    with _warn_on_failure(f"pipeline start: {tracking_uri(cfg)}"):
        tags = {"stage": "pipeline", "driver": driver, "experiment": cfg.experiment, "driver_host": socket.gethostname(),
                "driver_pid": str(os.getpid()), "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
                **_git_commit()}
        with _store(cfg) as client:
            experiment_id = _experiment_id(client, cfg)
            _end_orphans(client, experiment_id)
            run = _retry(client.create_run, experiment_id, tags=tags)
        os.environ[PARENT_ENV] = run.info.run_id
        log(f"MLflow: parent run {run.info.run_id} in experiment {cfg.experiment!r} at {tracking_uri(cfg)}")
        return run.info.run_id
    return None


def end_pipeline(cfg: Config, status: str) -> None:
    run_id = os.environ.get(PARENT_ENV)
    if not run_id or not enabled():
        return
    with _warn_on_failure(f"pipeline end: {tracking_uri(cfg)}"):
        with _store(cfg) as client:
            _retry(client.set_terminated, run_id, status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _end_orphans(client, experiment_id: str) -> None:
    """Parent runs still RUNNING whose driver (Snakemake, on this host) no longer exists were killed: mark them KILLED,
    ended now, so a killed pipeline does not stay running in the UI for ever."""
    host = socket.gethostname()
    runs = _retry(client.search_runs, [experiment_id], "tags.stage = 'pipeline' and attributes.status = 'RUNNING'",
                  max_results=1000)
    for run in runs:
        tags = run.data.tags
        if tags.get("driver_host") == host and tags.get("driver_pid", "").isdigit() and not _alive(int(tags["driver_pid"])):
            _retry(client.set_terminated, run.info.run_id, "KILLED")
            log(f"MLflow: parent run {run.info.run_id} of a pipeline that was killed (pid {tags['driver_pid']}) marked KILLED")
