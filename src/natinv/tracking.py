"""MLflow tracking: one run per stage invocation, nested under one parent run per pipeline run.

The files under results/ are the truth; tracking only mirrors them. Every tracking call is wrapped so that a
failure (no MLflow, a locked database, a server that is down) is one warning line, never a failed stage.

A stage's run is created (RUNNING) when the stage starts, with its settings as params (a synthesis method's under
method-neutral names, `method.lr_generator`, so NI and DI line up in MLflow's compare view), its inputs as datasets
(name and content digest) and its tags. While it runs, the curves the stage emits (`emit`: per-epoch accuracy, each
synthesis batch's losses with the times they were reached) and a sample of system metrics (CPU, memory) are sent
every FLUSH_SECONDS in one batched call; at the end its results, files and output weights, and its status. Writers
of one SQLite store take turns (a file lock) and retry "database is locked", so parallel shard jobs never hold
SQLite's single write lock for long. A run whose process was killed is marked KILLED by the next pipeline start.

Store: `MLFLOW_TRACKING_URI` if set, else SQLite at `{results}/mlflow.db` with artifacts in `{results}/mlartifacts`
(stored relative to the project when `results` is: run `mlflow ui` from the project folder). `NATINV_TRACKING=off`
disables tracking. The parent run's id travels in `NATINV_MLFLOW_PARENT_RUN`.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from natinv.config import Config, seeds
from natinv.runtime import log

PARENT_ENV = "NATINV_MLFLOW_PARENT_RUN"
FLUSH_SECONDS = float(os.environ.get("NATINV_MLFLOW_FLUSH_SECONDS", "15"))  # how often a running stage's points are sent
T = TypeVar("T")
# Result entries that describe the job rather than measure it: logged as params, not metrics
SETTING_KEYS = {"batch_size", "batches", "iterations", "shard", "images", "steps", "ratio", "train_images", "test_images",
                "reference_images", "retries"}
SETTING_PREFIXES = ("model.", "engine.", "images.")


CURVE_STEPS = 100  # a thinned curve's points at most (`thin`)


@dataclass
class Outcome:
    """What a stage hands to tracking: its JSON result, curves (name -> values at steps 1, 2, ..., or {step: value}),
    files to attach, and arrays to attach as `.npz` files (file name -> arrays)."""

    result: dict
    series: dict[str, Sequence[float] | Mapping[int, float]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    arrays: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def thin(values: Sequence[float], at_most: int = CURVE_STEPS) -> dict[int, float]:
    """A curve (values at steps 1..n) at no more than `at_most` evenly spaced steps, its last step always among them."""
    n = len(values)
    stride = max(1, -(-n // at_most))
    steps = [*range(stride, n, stride), n] if n else []
    return {s: float(values[s - 1]) for s in dict.fromkeys(steps)}


def live_curves(cfg: Config, points: int) -> bool:
    """Whether a curve family of `points` points (e.g. a synthesis method's batches x iterations) goes to MLflow as
    metrics while it runs (tracking.live_curve_points), rather than as one artifact per run."""
    return points <= cfg.tracking.live_curve_points


_UNREACHABLE: list[str] = []  # set when the tracking server could not be reached: the process stops trying


def enabled() -> bool:
    return not _UNREACHABLE and os.environ.get("NATINV_TRACKING", "on").lower() not in ("0", "off", "false", "no")


# An HTTP tracking server that does not answer costs a stage a bounded wait, not MLflow's default of 7 retries with
# exponential backoff and 120 s per request (minutes): one retry, 15 s per request; then this process stops trying.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


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
def _warn_on_failure(what: str, said: list[bool] | None = None) -> Iterator[None]:
    """A failure inside is one warning line (once per `said` flag: a run whose start failed does not warn again)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a stage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _is_unreachable(exc):
            if not _UNREACHABLE:
                log(f"warning: MLflow tracking server {os.environ.get('MLFLOW_TRACKING_URI')} not reachable ({what}): "
                    f"{first[:200]}; tracking is off for this stage, its files under results/ are complete")
            _UNREACHABLE.append(what)
        elif said is None or not said[0]:
            log(f"warning: MLflow tracking failed ({what}): {first[:300]}; the stage's files under results/ are complete")
        if said is not None:
            said[0] = True


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
def _store(cfg: Config) -> Iterator[Any]:
    """A client of the store, during this process's turn at it. MLflow is imported first (seconds of CPU, outside the
    turn); creating the client opens the database (and creates and migrates a new one), so that happens inside it."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines about creating the store
    for key, value in HTTP_DEFAULTS.items():  # a user's own settings win
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if (why := _server_silent(tracking_uri(cfg))) is not None:
        raise ConnectionError(f"not reachable: {why}")  # _warn_on_failure: one warning, tracking off for the process
    with _store_lock(cfg):
        yield MlflowClient(tracking_uri=tracking_uri(cfg))


PROBE_S = 5.0  # how long an HTTP tracking server may take to answer the first request of a process


@functools.cache
def _server_silent(uri: str) -> str | None:
    """Why an HTTP(S) tracking server cannot be used (no connection, or no answer within PROBE_S), or None: it
    answered (any HTTP status: a server behind a login answers too) or the store is not a server. Asked once per
    process, so a stage's wait for a server that never answers is bounded by PROBE_S, not by MLflow's retries."""
    import urllib.error
    import urllib.parse
    import urllib.request

    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_S):
            return None
    except urllib.error.HTTPError:
        return None
    except Exception as exc:  # noqa: BLE001 - refused, timed out, no such host, a reset, a broken answer
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def _experiment_id(client, cfg: Config) -> str:
    found = _retry(client.get_experiment_by_name, cfg.experiment)
    if found is not None:
        return found.experiment_id
    try:
        experiment_id = _retry(client.create_experiment, cfg.experiment, artifact_location=_artifact_location(cfg))
    except Exception:  # noqa: BLE001 - created by a parallel job in the meantime
        return _retry(client.get_experiment_by_name, cfg.experiment).experiment_id
    _retry(_keep_artifacts_relative, cfg, experiment_id)
    return experiment_id


Point = tuple[str, float, int, int | None]  # (metric, value, step, time in ms; None: when it is sent)


def _log_batches(client, run_id: str, params: dict[str, Any], tags: dict[str, str], points: list[Point]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    param_list = [Param(k, str(v)[:6000]) for k, v in params.items()]
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    metric_list = [Metric(k, float(v), now if ms is None else ms, step) for k, v, step, ms in points]
    for i in range(0, len(param_list), 100):
        _retry(client.log_batch, run_id, params=param_list[i:i + 100])
    for i in range(0, len(tag_list), 100):
        _retry(client.log_batch, run_id, tags=tag_list[i:i + 100])
    for i in range(0, len(metric_list), 1000):
        _retry(client.log_batch, run_id, metrics=metric_list[i:i + 1000])


def _log_arrays(client, run_id: str, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Each (name, arrays) as one `.npz` artifact, written to a temporary folder first."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="natinv-artifacts-") as tmp:
        for name, arrays in files.items():
            path = Path(tmp) / name
            np.savez_compressed(path, **arrays)
            _retry(client.log_artifact, run_id, str(path))


def _is_setting(key: str) -> bool:
    return key in SETTING_KEYS or key.startswith(SETTING_PREFIXES)


def _results(outcome: Outcome, sent: set[str]) -> tuple[dict[str, Any], list[Point]]:
    """(params, points) of a stage's outcome: entries that describe the job as `result.*` params; measured scalars as
    step-0 metrics; per-epoch records and series as stepped metrics, except the curves `sent` while it ran."""
    scalars = {k: v for k, v in flatten({k: v for k, v in outcome.result.items() if k != "settings"}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    params = {f"result.{k}": v for k, v in scalars.items() if _is_setting(k)}
    points: list[Point] = [(k, float(v), 0, None) for k, v in scalars.items() if not _is_setting(k)]
    for record in outcome.result.get("epochs", []):
        points += [(name, v, step, None) for name, v, step in _epoch_points(record) if name not in sent]
    for name, values in outcome.series.items():
        if name not in sent:
            at = values.items() if isinstance(values, Mapping) else enumerate(values, start=1)
            points += [(name, float(v), int(step), None) for step, v in at]
    return params, points


def neutral_params(params: Mapping[str, Any], method: str | None) -> dict[str, Any]:
    """The job's settings with its synthesis method's under `method.*` (`synthesis.methods.ni.lr` -> `method.lr`; a seed
    replica's, `ni-seed1`, are its method's), so every method's run has the same names and MLflow's compare view lines
    NI and DI up."""
    prefix = f"synthesis.methods.{seeds.split(method)[0] if method else method}"
    out: dict[str, Any] = {}
    for key, value in flatten(params).items():
        out["method" + key[len(prefix):] if method and (key == prefix or key.startswith(prefix + ".")) else key] = value
    return out


def _system_sample(process: Any) -> list[Point]:
    """CPU and memory of the machine and of this process, under MLflow's system-metric names (its System metrics tab)."""
    import psutil

    ms, memory = int(time.time() * 1000), psutil.virtual_memory()
    sample = {"system/cpu_utilization_percentage": psutil.cpu_percent(),
              "system/system_memory_usage_megabytes": (memory.total - memory.available) / 2**20,
              "system/system_memory_usage_percentage": memory.percent,
              "system/process_memory_rss_megabytes": process.memory_info().rss / 2**20,
              "system/process_cpu_percentage": process.cpu_percent()}
    return [(k, float(v), 0, ms) for k, v in sample.items()]


_current: StageRun | None = None


def emit(name: str, values: Sequence[float], steps: Sequence[int], times: Sequence[float] | None = None) -> None:
    """Points of a curve of the running stage (`times`: when each was reached, in seconds since the epoch; default now),
    sent to its MLflow run with the next batch. Nothing happens when no run is open."""
    if _current is not None:
        _current.queue(name, values, steps, times)


def _epoch_points(record: Mapping[str, float]) -> list[tuple[str, float, int]]:
    """One epoch's record (train loss, accuracy, seconds) as `epoch/{key}` points at its epoch."""
    return [(f"epoch/{k}", float(v), int(record["epoch"])) for k, v in record.items() if k != "epoch"]


def emit_epoch(record: Mapping[str, float]) -> None:
    """One epoch's record, sent to the running stage's MLflow run with the next batch."""
    for name, value, step in _epoch_points(record):
        emit(name, [value], [step])


class StageRun:
    """One MLflow run for one stage invocation: created RUNNING by `start`, fed while the stage runs, ended by `close`."""

    def __init__(self, cfg: Config, stage: str, keys: Mapping[str, Any], params: Mapping[str, Any],
                 inputs: Sequence[tuple[str, str, list[Path]]] = (), weights: Sequence[Path] = ()):
        self.cfg, self.stage, self.keys, self.params = cfg, stage, dict(keys), dict(params)
        self.inputs, self.weights = list(inputs), list(weights)  # (name, context, files) per dataset; output weights
        self.started = time.time()
        self.run_id: str | None = None
        self.pending: list[Point] = []
        self.sent: set[str] = set()  # the curves emitted while it ran (not logged again at the end)
        self.guard = threading.Lock()
        self.stop = threading.Event()
        self.worker: threading.Thread | None = None
        self.warned = [False]  # one warning per run

    @property
    def name(self) -> str:
        """The method first and its teacher last, so a narrow column of MLflow's runs table still tells runs apart."""
        keys = self.keys
        if "method" not in keys:
            return " ".join([self.stage, *map(str, keys.values())])
        rest = [f"shard-{v}" if k == "shard" else f"{v}" for k, v in keys.items() if k not in ("method", "teacher")]
        return " ".join([str(keys["method"]), self.stage, *rest, *([f"({keys['teacher']})"] if "teacher" in keys else [])])

    def tags(self) -> dict[str, str]:
        tags = {"stage": self.stage, **{k: str(v) for k, v in self.keys.items()}, "experiment": self.cfg.experiment,
                "mlflow.runName": self.name, "host": socket.gethostname(), "pid": str(os.getpid()), **_git_commit()}
        if "method" in self.keys and (kind := self.params.get(f"synthesis.methods.{seeds.split(str(self.keys['method']))[0]}")):
            tags["method.kind"] = str(kind.get("kind")) if isinstance(kind, Mapping) else ""
        if parent := os.environ.get(PARENT_ENV):
            tags["mlflow.parentRunId"] = parent
        return tags

    def start(self) -> StageRun:
        """Create the run (RUNNING) with its params, tags and inputs, and start sending what the stage emits."""
        global _current
        if not enabled():
            return self
        with _warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}", self.warned):
            datasets = _datasets(self.inputs)
            with _store(self.cfg) as client:
                run = _retry(client.create_run, _experiment_id(client, self.cfg), start_time=int(self.started * 1000))
                self.run_id = run.info.run_id
                _log_batches(client, self.run_id, neutral_params(self.params, self.keys.get("method")), self.tags(), [])
                if datasets:
                    _retry(client.log_inputs, self.run_id, datasets=datasets)
            _current = self
            self.worker = threading.Thread(target=self._send_every, name="mlflow", daemon=True)
            self.worker.start()
        return self

    def queue(self, name: str, values: Sequence[float], steps: Sequence[int], times: Sequence[float] | None) -> None:
        now = time.time()
        with self.guard:
            self.sent.add(name)
            self.pending += [(name, float(v), int(s), int(1000 * (now if times is None else times[i])))
                             for i, (v, s) in enumerate(zip(values, steps))]

    def _send_every(self) -> None:
        import psutil

        process = psutil.Process()
        process.cpu_percent()  # the first reading only starts the count
        while not self.stop.wait(FLUSH_SECONDS):
            self._send(_system_sample(process))

    def _send(self, extra: list[Point] = ()) -> None:
        with self.guard:
            points, self.pending = self.pending + list(extra), []
        if points and self.run_id is not None:
            with _warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}", self.warned), _store(self.cfg) as client:
                _log_batches(client, self.run_id, {}, {}, points)

    def close(self, status: str, outcome: Outcome | None = None) -> None:
        global _current
        if not enabled():
            return
        _current = None
        self.stop.set()
        if self.worker is not None:
            self.worker.join()
        with _warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}", self.warned):
            params, points = _results(outcome, self.sent) if outcome else ({}, [])
            with self.guard:
                points, self.pending = self.pending + points, []
            with _store(self.cfg) as client:
                if self.run_id is None:  # the start failed (e.g. the store was down): the whole run now
                    run = _retry(client.create_run, _experiment_id(client, self.cfg), start_time=int(self.started * 1000))
                    self.run_id = run.info.run_id
                    params |= neutral_params(self.params, self.keys.get("method"))
                    _log_batches(client, self.run_id, {}, self.tags(), [])
                _log_batches(client, self.run_id, params, {}, points)
                for path in outcome.artifacts if outcome else []:
                    if path.is_file():
                        _retry(client.log_artifact, self.run_id, str(path))
                if outcome and outcome.arrays:
                    _log_arrays(client, self.run_id, outcome.arrays)
                for path in self.weights if outcome else []:
                    if path.is_file():
                        _retry(client.log_artifact, self.run_id, str(path), "weights")
                _retry(client.set_terminated, self.run_id, status, int(time.time() * 1000))


def datasets_of(exp: Path, files: Sequence[Path], dataset: str) -> list[tuple[str, str, list[Path]]]:
    """A job's input files as MLflow datasets (name, context, files), by the file contract's folders: the real data,
    a teacher or evaluator checkpoint, a method's synthesized images or meta-learned start (other stages' results, which the report reads,
    are not datasets)."""
    groups: dict[tuple[str, str], list[Path]] = {}
    for f in files:
        parts = Path(f).relative_to(exp).parts
        kind = {
            "data": (f"{dataset} (real)", "real data"),
            "teachers": (f"teacher {Path(parts[-1]).stem}", "teacher"),
            "evaluators": (f"evaluator {Path(parts[-1]).stem}", "evaluator"),
            "synth": (f"{'/'.join(parts[1:3][::-1])} images", "synthesized images"),
            "meta": (f"{Path(parts[-1]).stem}/{parts[-2]} meta-parameters", "meta-learned start"),
        }.get(parts[0])
        if kind is not None and (parts[0] != "synth" or f.suffix == ".npz"):  # the images, not the shards' summaries
            groups.setdefault(kind, []).append(Path(f))
    return [(name, context, fs) for (name, context), fs in groups.items()]


def _datasets(inputs: Sequence[tuple[str, str, list[Path]]]) -> list[Any]:
    """MLflow dataset inputs: per input, its name, a digest of its files' contents, where it is and how it is used."""
    import hashlib

    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for name, context, files in inputs:
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        source = str(files[0].parent if len(files) > 1 else files[0])
        out.append(DatasetInput(Dataset(name, digest.hexdigest()[:16], "local", f'{{"uri": "{source}"}}'),
                                [InputTag("mlflow.data.context", context)]))
    return out


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
    """Runs still RUNNING whose process (Snakemake for a pipeline's parent run, the stage's own process for a stage
    run), on this host, no longer exists were killed: mark them KILLED, ended now, so they do not stay running in
    the UI for ever."""
    host = socket.gethostname()
    runs = _retry(client.search_runs, [experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
    for run in runs:
        tags = run.data.tags
        run_host, pid = tags.get("driver_host", tags.get("host")), tags.get("driver_pid", tags.get("pid", ""))
        if run_host == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _retry(client.set_terminated, run.info.run_id, "KILLED")
            what = "a pipeline" if tags.get("stage") == "pipeline" else f"stage {tags.get('mlflow.runName', '')!r}"
            log(f"MLflow: run {run.info.run_id} of {what} that was killed (pid {pid}) marked KILLED")
