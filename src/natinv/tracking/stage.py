"""One MLflow run per stage invocation: created RUNNING when the stage starts, fed while it runs, ended with its results.

A stage's run carries its settings as params (a synthesis method's under method-neutral names, `method.lr_generator`,
so NI and DI line up in MLflow's compare view), its inputs as datasets (name and content digest) and its tags. While
it runs, the curves the stage emits (`emit`: per-epoch accuracy, each synthesis batch's losses with the times they
were reached) and system metrics (CPU, memory: a time series, one step per sample) are sent every FLUSH_SECONDS in
one batched call; at the end its results, files, output weights (as a logged model) and its status.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natinv.config import Config, seeds
from natinv.tracking.inputs import mlflow_datasets
from natinv.tracking.models import log_weights
from natinv.tracking.store import (PARENT_ENV, Point, create_run, drop_twins, enabled, experiment_of, flatten, git_commit,
                                   log_arrays, log_batches, log_named, retry, store, tracking_uri, warn_on_failure)

FLUSH_SECONDS = float(os.environ.get("NATINV_MLFLOW_FLUSH_SECONDS", "15"))  # how often a running stage's points are sent


# Result entries that describe the job rather than measure it: logged as params, not metrics
SETTING_KEYS = {"batch_size", "batches", "iterations", "shard", "images", "steps", "ratio", "train_images", "test_images",
                "reference_images", "retries"}
SETTING_PREFIXES = ("model.", "engine.", "images.")


CURVE_STEPS = 100  # a thinned curve's points at most (`thin`)


@dataclass
class Outcome:
    """What a stage hands to tracking: its JSON result, curves (name -> values at steps 1, 2, ..., or {step: value}),
    files to attach, files to attach under a name of their own (the same in every run of the stage, e.g. a shard's
    class grid as `grid.png`, so MLflow's compare view shows NI's and DI's side by side), and arrays to attach as
    `.npz` files (file name -> arrays)."""

    result: dict
    series: dict[str, Sequence[float] | Mapping[int, float]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    arrays: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    named: dict[str, Path] = field(default_factory=dict)


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


def neutral_params(params: Mapping[str, Any], method: str | None, used: Collection[str] | None = None) -> dict[str, Any]:
    """The job's settings with its synthesis method's under `method.*` (`synthesis.methods.ni.lr` -> `method.lr`; a seed
    replica's, `ni-seed1`, are its method's), so every method's run has the same names and MLflow's compare view lines
    NI and DI up. Other methods' settings (a report's or t-SNE's job reads them all) only for the methods in `used`
    (those the experiment runs; None: all)."""
    prefix = f"synthesis.methods.{seeds.split(method)[0] if method else method}"
    out: dict[str, Any] = {}
    for key, value in flatten(params).items():
        if method and (key == prefix or key.startswith(prefix + ".")):
            out["method" + key[len(prefix):]] = value
        elif used is None or not key.startswith("synthesis.methods.") or key.split(".")[2] in used:
            out[key] = value
    return out


def _system_sample(process: Any, step: int) -> list[Point]:
    """CPU and memory of the machine and of this process, under MLflow's system-metric names (its System metrics tab),
    as the `step`-th point of each series."""
    import psutil

    ms, memory = int(time.time() * 1000), psutil.virtual_memory()
    sample = {"system/cpu_utilization_percentage": psutil.cpu_percent(),
              "system/system_memory_usage_megabytes": (memory.total - memory.available) / 2**20,
              "system/system_memory_usage_percentage": memory.percent,
              "system/process_memory_rss_megabytes": process.memory_info().rss / 2**20,
              "system/process_cpu_percentage": process.cpu_percent()}
    return [(k, float(v), step, ms) for k, v in sample.items()]


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
        self.run: Any = None  # the MLflow run, once created
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
                "mlflow.runName": self.name, "host": socket.gethostname(), "pid": str(os.getpid()), **git_commit()}
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
        with warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}", self.warned):
            datasets = mlflow_datasets(self.inputs)
            with store(self.cfg) as client:
                self.run = create_run(client, experiment_of(client, self.cfg), self.tags(), start_time=int(self.started * 1000))
                self.run_id = self.run.info.run_id
                log_batches(client, self.run_id, neutral_params(self.params, self.keys.get("method"), self.cfg.run_methods), {}, [])
                if datasets:
                    retry(client.log_inputs, self.run_id, datasets=datasets)
            _current = self
            self.worker = threading.Thread(target=self._send_every, name="mlflow", daemon=True)
            self.worker.start()
            with store(self.cfg) as client:
                drop_twins(client, self.run)
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
        step = 0
        while not self.stop.wait(FLUSH_SECONDS):
            step += 1
            self._send(_system_sample(process, step))

    def _send(self, extra: list[Point] = ()) -> None:
        with self.guard:
            points, self.pending = self.pending + list(extra), []
        if points and self.run_id is not None:
            with warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}", self.warned), store(self.cfg) as client:
                log_batches(client, self.run_id, {}, {}, points)

    def close(self, status: str, outcome: Outcome | None = None) -> None:
        global _current
        if not enabled():
            return
        _current = None
        self.stop.set()
        if self.worker is not None:
            self.worker.join()
        with warn_on_failure(f"{self.name}: {tracking_uri(self.cfg)}", self.warned):
            params, points = _results(outcome, self.sent) if outcome else ({}, [])
            with self.guard:
                points, self.pending = self.pending + points, []
            with store(self.cfg) as client:
                if self.run is None:  # the start failed (e.g. the store was down): the whole run now
                    self.run = create_run(client, experiment_of(client, self.cfg), self.tags(), start_time=int(self.started * 1000))
                    self.run_id = self.run.info.run_id
                    params |= neutral_params(self.params, self.keys.get("method"), self.cfg.run_methods)
                log_batches(client, self.run_id, params, {}, points)
                for path in outcome.artifacts if outcome else []:
                    if path.is_file():
                        retry(client.log_artifact, self.run_id, str(path))
                if outcome and outcome.named:
                    log_named(client, self.run_id, outcome.named)
                if outcome and outcome.arrays:
                    log_arrays(client, self.run_id, outcome.arrays)
                for path in self.weights if outcome else []:
                    if path.is_file():
                        log_weights(self.cfg, client, self.run_id, path)
                retry(client.set_terminated, self.run_id, status, int(time.time() * 1000))
                drop_twins(client, self.run)
