"""The MLflow store: where it is, taking turns at it, retrying a busy one, and a failure as one warning line.

Store: `MLFLOW_TRACKING_URI` if set, else SQLite at `{results}/mlflow.db` with artifacts in `{results}/mlartifacts`
(stored relative to the project when `results` is: run `mlflow ui` from the project folder). `NATINV_TRACKING=off`
disables tracking. Writers of one SQLite store take turns (a file lock) and retry "database is locked", so parallel
shard jobs never hold SQLite's single write lock for long. A tracking server that answers its health check is busy,
not gone, when a request fails (a 5xx answer, no answer in time): the request is tried again, as a locked SQLite
store is; one that does not answer it turns tracking off for the process, with one warning line. A run is created
with a token of its own (`create_run`), so a creation tried again after its answer was lost leaves one run, not two.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from natinv.config import Config
from natinv.runtime import log

PARENT_ENV = "NATINV_MLFLOW_PARENT_RUN"


T = TypeVar("T")


_UNREACHABLE: list[str] = []  # set when the tracking server could not be reached: the process stops trying


def enabled() -> bool:
    return not _UNREACHABLE and os.environ.get("NATINV_TRACKING", "on").lower() not in ("0", "off", "false", "no")


# An HTTP tracking server that does not answer costs a stage a bounded wait, not MLflow's default of 7 retries with
# exponential backoff and 120 s per request (minutes): MLflow retries once, 30 s per request (longer than the 20 s an
# `mlflow server` on SQLite waits for its own write lock, so a request queued there gets its answer); `retry` goes on
# while the server answers its health check. MLflow's usage telemetry is off: a stage sends nothing beyond the store.
ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_DISABLE_TELEMETRY": "true"}


def tracking_uri(cfg: Config) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(cfg.results) / 'mlflow.db').resolve()}"


def _artifact_location(cfg: Config) -> str | None:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None  # the server decides
    return (Path(cfg.results) / "mlartifacts").resolve().as_uri()


def _keep_artifacts_relative(cfg: Config, experiment_id: str) -> None:
    """MLflow stores a new experiment's artifact location as an absolute path; with a relative `results` it is set back
    to the relative one, so a copied or moved project keeps its artifacts in its own folder (every stage and
    `mlflow ui` run in the project folder)."""
    if os.environ.get("MLFLOW_TRACKING_URI") or Path(cfg.results).is_absolute():
        return
    import sqlite3

    with contextlib.closing(sqlite3.connect(tracking_uri(cfg)[len("sqlite:///"):], timeout=60)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                   ((Path(cfg.results) / "mlartifacts").as_posix(), experiment_id))


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


def git_commit() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()} if commit else {}


BUSY_S = 120.0  # how long one tracking call goes on retrying a busy store before the error is the stage's warning


def retry(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call`, tried again with backoff for up to BUSY_S while the store is busy: SQLite allows one writer at a time
    ("database is locked"), and a tracking server under load answers 5xx or not in time. A server that no longer
    answers its health check is gone, not busy: its error is raised at once."""
    deadline = time.monotonic() + BUSY_S
    delay = 0.1
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mlflow wraps sqlite and HTTP errors in several exception types
            if time.monotonic() >= deadline or not _busy(exc):
                raise
        time.sleep(min(delay * (1 + random.random()), max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 3.0)


def _busy(exc: BaseException) -> bool:
    """Whether a failed call met a busy store: locked or busy, a server's 5xx answers (urllib3's "too many 500 error
    responses"), or no answer from a server that still answers its health check."""
    text = str(exc).lower()
    if any(s in text for s in ("locked", "busy", "error responses")):
        return True
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return _is_unreachable(exc) and _is_server(uri) and _health(uri) is None


@contextlib.contextmanager
def warn_on_failure(what: str, said: list[bool] | None = None) -> Iterator[None]:
    """A failure inside is one warning line (once per `said` flag: a run whose start failed does not warn again)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a stage
        first = _shortened(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if _is_unreachable(exc):
            if not _UNREACHABLE:
                log(f"warning: MLflow tracking server {os.environ.get('MLFLOW_TRACKING_URI')} not reachable ({what}): "
                    f"{first}; tracking is off for this stage, its files under results/ are complete")
            _UNREACHABLE.append(what)
        elif said is None or not said[0]:
            log(f"warning: MLflow tracking failed ({what}): {first}; the stage's files under results/ are complete")
        if said is not None:
            said[0] = True


def _shortened(line: str, keep: int = 300) -> str:
    """A long error line as its start and its end, where MLflow and urllib3 put the cause ("Caused by ...")."""
    return line if len(line) <= keep else f"{line[:keep // 3]} ... {line[-(keep - keep // 3):]}"


def _is_unreachable(exc: BaseException) -> bool:
    """Whether a tracking call failed because the server did not answer (refused, timed out, no route, no such host)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("max retries exceeded", "connection refused", "connectionerror", "timed out",
                                   "name or service not known", "no route to host", "failed to establish"))


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
def store(cfg: Config) -> Iterator[Any]:
    """A client of the store, during this process's turn at it. MLflow is imported first (seconds of CPU, outside the
    turn); creating the client opens the database (and creates and migrates a new one), so that happens inside it."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines about creating the store
    for key, value in ENV_DEFAULTS.items():  # a user's own settings win
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if (why := _server_silent(tracking_uri(cfg))) is not None:
        raise ConnectionError(f"not reachable: {why}")  # warn_on_failure: one warning, tracking off for the process
    with _store_lock(cfg):
        yield MlflowClient(tracking_uri=tracking_uri(cfg))


PROBE_S = 5.0  # how long an HTTP tracking server may take to answer a health check


@functools.cache
def _server_silent(uri: str) -> str | None:
    """Why the tracking store at `uri` cannot be used, asked once per process before its first request (so a stage's
    wait for a server that never answers is bounded by PROBE_S, not by MLflow's retries), or None."""
    return _health(uri) if _is_server(uri) else None


def _is_server(uri: str) -> bool:
    """Whether the store at `uri` is an HTTP(S) tracking server."""
    import urllib.parse

    return urllib.parse.urlparse(uri).scheme in ("http", "https")


def _health(uri: str) -> str | None:
    """Why an HTTP(S) tracking server does not answer (no connection, or no answer within PROBE_S), or None: it
    answered (any HTTP status: a server behind a login answers too)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_S):
            return None
    except urllib.error.HTTPError:
        return None
    except Exception as exc:  # noqa: BLE001 - refused, timed out, no such host, a reset, a broken answer
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def mlflow_experiment(cfg: Config) -> str:
    """The MLflow experiment of a natinv experiment: `natinv-{experiment}` (never MLflow's own `Default`)."""
    return f"natinv-{cfg.experiment}"


# MLflow's UI opens an experiment of this kind at its training runs (the runs table), not at the GenAI traces overview
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_of(client, cfg: Config) -> str:
    """The id of the experiment's MLflow experiment, created (with EXPERIMENT_TAGS) when it is not there yet."""
    found = retry(client.get_experiment_by_name, mlflow_experiment(cfg))
    if found is not None:
        return found.experiment_id
    try:
        experiment_id = retry(client.create_experiment, mlflow_experiment(cfg), artifact_location=_artifact_location(cfg),
                              tags=EXPERIMENT_TAGS)
    except Exception:  # noqa: BLE001 - created by a parallel job in the meantime
        return retry(client.get_experiment_by_name, mlflow_experiment(cfg)).experiment_id
    retry(_keep_artifacts_relative, cfg, experiment_id)
    return experiment_id


Point = tuple[str, float, int, int | None]  # (metric, value, step, time in ms; None: when it is sent)


RUN_TOKEN = "natinv.run_token"  # the tag that tells the runs of one `create_run` call apart from every other run


def create_run(client, experiment_id: str, tags: Mapping[str, str], **kwargs: Any) -> Any:
    """`client.create_run` with `tags`, every try of it carrying one token: the server may have made a run whose answer
    never came back (lost, or later than the client waited), and MLflow's client, then `retry`, ask again. The runs
    so made are twins of the one returned, which `drop_twins` deletes."""
    return retry(client.create_run, experiment_id, tags={**tags, RUN_TOKEN: uuid.uuid4().hex}, **kwargs)


def drop_twins(client, run: Any) -> None:
    """Delete the other runs that carry `run`'s creation token. Called last when a run has started (its params and
    tags are logged whatever this meets) and again when it ends, for a lost try the server got to only later (it
    queued behind the store's lock)."""
    if not (token := run.data.tags.get(RUN_TOKEN)):
        return
    for twin in retry(client.search_runs, [run.info.experiment_id], f"tags.`{RUN_TOKEN}` = '{token}'", max_results=100):
        if twin.info.run_id != run.info.run_id:
            retry(client.delete_run, twin.info.run_id)


def log_batches(client, run_id: str, params: dict[str, Any], tags: dict[str, str], points: list[Point]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    param_list = [Param(k, str(v)[:6000]) for k, v in params.items()]
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    metric_list = [Metric(k, float(v), now if ms is None else ms, step) for k, v, step, ms in points]
    for i in range(0, len(param_list), 100):
        retry(client.log_batch, run_id, params=param_list[i:i + 100])
    for i in range(0, len(tag_list), 100):
        retry(client.log_batch, run_id, tags=tag_list[i:i + 100])
    for i in range(0, len(metric_list), 1000):
        retry(client.log_batch, run_id, metrics=metric_list[i:i + 1000])


def log_named(client, run_id: str, files: Mapping[str, Path]) -> None:
    """Each file as an artifact under the name given (a copy in a temporary folder is what is uploaded)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="natinv-artifacts-") as tmp:
        for name, path in files.items():
            if Path(path).is_file():
                retry(client.log_artifact, run_id, shutil.copyfile(path, Path(tmp) / name))


def log_arrays(client, run_id: str, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Each (name, arrays) as one `.npz` artifact, written to a temporary folder first."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="natinv-artifacts-") as tmp:
        for name, arrays in files.items():
            path = Path(tmp) / name
            np.savez_compressed(path, **arrays)
            retry(client.log_artifact, run_id, str(path))
