"""MLflow tracking: parallel stage processes lose no run, and a broken store is a warning, never a failed stage."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natinv.config import Config
from natinv.tracking import PARENT_ENV, Outcome, StageRun, flatten
from natinv.tracking.parent import start_pipeline

JOB = """
import sys
from natinv.config import Config
from natinv.tracking import Outcome, StageRun
cfg = Config(experiment=sys.argv[3] if len(sys.argv) > 3 else "par", results=sys.argv[1])
run = StageRun(cfg, "synthesize", {"teacher": "t", "method": "ni", "shard": int(sys.argv[2])}, {"synthesis.num_images": 8})
run.start()
run.close("FINISHED", Outcome({"seconds": 1.0, "final": {"ce": 0.5}}, {"loss/ce": [3.0, 2.0, 1.0]}))
"""


def test_a_methods_settings_are_logged_under_neutral_names_for_its_seed_replicas_too():
    from natinv.tracking import neutral_params

    params = {"synthesis.methods.ni": {"lr_generator": 0.01, "kind": "naturalinversion"}, "kd.lr": 0.05}
    for method in ("ni", "ni-seed2"):
        assert neutral_params(params, method) == {"method.lr_generator": 0.01, "method.kind": "naturalinversion", "kd.lr": 0.05}
    assert neutral_params(params, None) == {"synthesis.methods.ni.lr_generator": 0.01, "synthesis.methods.ni.kind": "naturalinversion",
                                            "kd.lr": 0.05}


def test_flatten_nests_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}


def test_a_broken_store_is_one_warning_and_the_stage_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")  # cannot be created
    run = StageRun(Config(results=str(tmp_path)), "teacher", {"teacher": "t"}, {}).start()
    run.close("FINISHED", Outcome({"test_acc": 90.0}, artifacts=[Path(tmp_path / "missing.json")]))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: MLflow tracking failed (teacher t:"), err


def test_tracking_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("NATINV_TRACKING", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    StageRun(Config(results=str(tmp_path)), "data", {}, {}).close("FINISHED", Outcome({}))
    assert not (tmp_path / "mlflow.db").exists()


def _sixteen_at_once(results: Path, first: int, server: str | None = None, parent: str | None = None) -> list[str]:
    """16 stage processes started together, on the project's SQLite store or on a tracking `server`, nested under the
    pipeline run `parent` (None: no parent run, the store may not exist yet); their stderr."""
    env = {k: v for k, v in os.environ.items() if k not in (PARENT_ENV, "MLFLOW_TRACKING_URI")}
    if server is not None:
        env["MLFLOW_TRACKING_URI"] = server
    if parent is not None:
        env[PARENT_ENV] = parent
    procs = [subprocess.Popen([sys.executable, "-c", JOB, str(results), str(first + i)], env=env, stderr=subprocess.PIPE,
                              text=True) for i in range(16)]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    return errors


@pytest.mark.slow
def test_sixteen_processes_on_a_fresh_store_and_on_an_existing_one_lose_no_run(tmp_path, monkeypatch):
    """A new results folder: 16 processes race to create (and migrate) mlflow.db. They take turns under a file lock,
    so every run is kept, and the store stays healthy for the next 16 (nested under a pipeline run, as Snakemake's
    onstart makes one before its jobs) and for a reader."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    assert not (tmp_path / "mlflow.db").exists()
    errors = _sixteen_at_once(tmp_path, 0)  # fresh
    parent = start_pipeline(Config(experiment="par", results=str(tmp_path)), "test")
    os.environ.pop(PARENT_ENV, None)  # start_pipeline exports it for the jobs it starts; passed to them below
    assert parent is not None
    errors += _sixteen_at_once(tmp_path, 16, parent=parent)  # existing
    assert not any("warning" in e for e in errors), [e for e in errors if e][:2]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("natinv-par").experiment_id], "tags.stage = 'synthesize'",
                              max_results=100)
    assert sorted(int(r.data.tags["shard"]) for r in runs) == list(range(32))
    assert all(r.info.status == "FINISHED" and r.data.metrics["final.ce"] == 0.5 for r in runs)
    for r in runs:
        assert r.data.tags.get("mlflow.parentRunId") == (parent if int(r.data.tags["shard"]) >= 16 else None)
        assert r.data.params["synthesis.num_images"] == "8"
        assert [m.value for m in client.get_metric_history(r.info.run_id, "loss/ce")] == [3.0, 2.0, 1.0]
    healthy = client.create_run(client.get_experiment_by_name("natinv-par").experiment_id)  # the schema is complete
    client.log_metric(healthy.info.run_id, "x", 1.0)
    assert client.get_run(healthy.info.run_id).data.metrics == {"x": 1.0}


KILLED_DRIVER = """
import os, signal, sys
from natinv.config import Config
from natinv.tracking.parent import start_pipeline
print(start_pipeline(Config(experiment="par", results=sys.argv[1]), "snakemake"), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as kill -9 of snakemake: no onerror, the parent run stays RUNNING
"""


def test_the_parent_run_of_a_killed_pipeline_is_marked_killed_by_the_next_one(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    proc = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -9
    orphan = proc.stdout.strip()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(orphan).info.status == "RUNNING"
    current = start_pipeline(Config(experiment="par", results=str(tmp_path)), "snakemake")
    assert client.get_run(orphan).info.status == "KILLED" and client.get_run(orphan).info.end_time is not None
    assert client.get_run(current).info.status == "RUNNING"  # the live one is left alone
    start_pipeline(Config(experiment="par", results=str(tmp_path)), "snakemake")  # its driver (this process) is alive
    assert client.get_run(current).info.status == "RUNNING"
    os.environ.pop(PARENT_ENV, None)


def test_a_pipeline_in_which_no_stage_ran_leaves_no_parent_run(tmp_path, monkeypatch):
    """Everything up to date, or `snakemake --touch`: the parent run opened at the start is deleted at the end."""
    from mlflow import MlflowClient

    from natinv.tracking.parent import end_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    cfg = Config(experiment="par", results=str(tmp_path))
    parent = start_pipeline(cfg, "snakemake")
    end_pipeline(cfg, "FINISHED")
    os.environ.pop(PARENT_ENV, None)
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(parent).info.lifecycle_stage == "deleted"


KILLED_STAGE = """
import os, signal, sys
from natinv.config import Config
from natinv.tracking import StageRun
run = StageRun(Config(experiment="par", results=sys.argv[1]), "kd", {"teacher": "t", "method": "ni", "student": "s"}, {}).start()
print(run.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # a job killed mid-stage: its run exists, RUNNING
"""


def test_a_stage_run_exists_from_its_start_and_a_killed_one_is_marked_killed(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    proc = subprocess.run([sys.executable, "-c", KILLED_STAGE, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(proc.stdout.strip())
    assert run.info.status == "RUNNING" and run.info.run_name == "ni kd s (t)"
    start_pipeline(Config(experiment="par", results=str(tmp_path)), "snakemake")
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    os.environ.pop(PARENT_ENV, None)


def test_curves_arrive_while_the_stage_runs_with_their_own_times(tmp_path, monkeypatch):
    """Emitted points reach the RUNNING run within a flush interval, stamped with when they were reached, beside system
    metrics; settings are params under method-neutral names; inputs are datasets with digests; weights are
    artifacts; results that describe the job are params, not metrics."""
    from mlflow import MlflowClient

    from natinv import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.setattr(tracking.stage, "FLUSH_SECONDS", 0.2)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.npz").write_bytes(b"real")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    cfg = Config(experiment="live", results=str(tmp_path))
    inputs = tracking.datasets_of(tmp_path, [tmp_path / "data/train.npz"], "fashion-mnist")
    params = {"synthesis.methods.di": {"kind": "deepinversion", "lr": 0.4}, "synthesis.num_images": 8}
    run = StageRun(cfg, "synthesize", {"teacher": "t", "method": "di", "shard": 0}, params, inputs, [weights]).start()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run.run_id).info.status == "RUNNING"
    tracking.emit("batch-0/ce", [3.0, 2.0], [1, 2], times=[1_700_000_000.0, 1_700_000_001.5])
    deadline = time.time() + 20
    while not client.get_metric_history(run.run_id, "batch-0/ce") and time.time() < deadline:
        time.sleep(0.1)
    history = client.get_metric_history(run.run_id, "batch-0/ce")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(1, 3.0, 1_700_000_000_000), (2, 2.0, 1_700_000_001_500)]
    assert client.get_run(run.run_id).info.status == "RUNNING"
    while len(client.get_metric_history(run.run_id, "system/cpu_utilization_percentage")) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert "system/process_memory_rss_megabytes" in client.get_run(run.run_id).data.metrics
    samples = client.get_metric_history(run.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in samples][:2] == [1, 2]  # a time series, one step per sample
    run.close("FINISHED", Outcome({"batch_size": 16, "agreement_float16": 90.0}, {"batch-0/ce": [3.0, 2.0]}))
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.info.run_name == "di synthesize shard-0 (t)"
    assert done.data.params["method.lr"] == "0.4" and done.data.params["method.kind"] == "deepinversion"
    assert done.data.tags["method"] == "di" and done.data.tags["method.kind"] == "deepinversion"
    assert done.data.params["result.batch_size"] == "16" and "batch_size" not in done.data.metrics
    assert done.data.metrics["agreement_float16"] == 90.0
    assert len(client.get_metric_history(run.run_id, "batch-0/ce")) == 2  # not logged again at the end
    (dataset,) = done.inputs.dataset_inputs
    assert dataset.dataset.name == "fashion-mnist train (real)" and len(dataset.dataset.digest) == 16
    assert [a.path for a in client.list_artifacts(run.run_id, "weights")] == ["weights/w.safetensors"]


def test_an_unreachable_tracking_server_costs_a_stage_one_warning_and_no_long_wait(tmp_path):
    """A server that refuses connections: the stage finishes (well inside the timeout; MLflow's own retries took
    minutes), says so once, and writes its files."""
    from pipeline import tiny_params

    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # the discard port: nothing listens
    env.pop("NATINV_TRACKING", None)
    proc = subprocess.run([sys.executable, "-m", "natinv", "data", *tiny_params(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("warning:") == 1 and "not reachable" in proc.stderr
    assert (tmp_path / "results/tiny/data/manifest.json").is_file()


def test_a_tracking_server_that_never_answers_costs_a_stage_one_bounded_wait(tmp_path):
    """A server that accepts the connection and then says nothing (a hung proxy, a stopped process): the stage waits
    for it once (tracking.PROBE_S), warns once, and finishes with its files; MLflow's own retries are never reached."""
    import socket

    from natinv.tracking import PROBE_S
    from pipeline import tiny_params

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel's backlog; nothing ever reads or answers them
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        env.pop("NATINV_TRACKING", None)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "natinv", "data", *tiny_params(tmp_path)], capture_output=True,
                              text=True, env=env, timeout=600)
        waited = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("warning:") == 1 and "not reachable" in proc.stderr and "timed out" in proc.stderr
    assert (tmp_path / "results/tiny/data/manifest.json").is_file()
    assert waited >= PROBE_S  # it did wait for the answer, once (the bound is the probe's, whatever this machine's speed)


class _Failing:
    """A tracking call that fails `times` times with `error`, then returns "done"."""

    def __init__(self, error: str, times: int) -> None:
        self.error, self.times, self.calls = error, times, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise RuntimeError(self.error)
        return "done"


FIVE_HUNDREDS = ("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
                 "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
                 "/api/2.0/mlflow/runs/log-batch (Caused by ResponseError('too many 500 error responses'))")
READ_TIMEOUT = ("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
                "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
                "/api/2.0/mlflow/runs/log-batch (Caused by ReadTimeoutError(\"HTTPConnectionPool(host='127.0.0.1', "
                "port=5000): Read timed out. (read timeout=30)\"))")


@contextlib.contextmanager
def _health_only() -> Iterator[str]:
    """A server that answers its health check (and nothing else): its URI."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_only_the_runs_of_one_creation_are_its_twins(tmp_path):
    """drop_twins deletes the other runs that carry a run's creation token, and nothing else: not the run, not a run
    of another creation, not a run made without a token."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from natinv.tracking.store import RUN_TOKEN, create_run, drop_twins

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("twins")
    run, other = create_run(client, experiment, {"stage": "kd"}), create_run(client, experiment, {"stage": "kd"})
    assert run.data.tags[RUN_TOKEN] != other.data.tags[RUN_TOKEN] and run.data.tags["stage"] == "kd"
    twins = [client.create_run(experiment, tags={RUN_TOKEN: run.data.tags[RUN_TOKEN]}) for _ in range(2)]
    plain = client.create_run(experiment)
    drop_twins(client, run)
    kept = {r.info.run_id for r in client.search_runs([experiment], run_view_type=ViewType.ACTIVE_ONLY)}
    assert kept == {run.info.run_id, other.info.run_id, plain.info.run_id}
    assert {r.info.run_id for r in client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)} == \
        {t.info.run_id for t in twins}


def test_a_busy_store_is_tried_again_and_a_gone_server_is_not(monkeypatch):
    """Locked SQLite and a server's 5xx answers are retried; so is a request without an answer while the server still
    answers its health check. A server that does not is gone: raised after one call, for the stage's one warning."""
    from natinv.tracking import store

    monkeypatch.setattr(store, "BUSY_S", 60.0)
    monkeypatch.setattr(store.time, "sleep", lambda s: None)  # the backoff's length is not what is tested
    for error in ("(sqlite3.OperationalError) database is locked", FIVE_HUNDREDS):
        call = _Failing(error, 3)
        assert store.retry(call) == "done" and call.calls == 4
    with _health_only() as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        call = _Failing(READ_TIMEOUT, 2)
        assert store.retry(call) == "done" and call.calls == 3
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    call = _Failing(READ_TIMEOUT, 2)
    with pytest.raises(RuntimeError, match="Read timed out"):
        store.retry(call)
    assert call.calls == 1
    call = _Failing("no such table: runs", 2)  # not busy: raised at once
    with pytest.raises(RuntimeError):
        store.retry(call)
    assert call.calls == 1


def test_a_store_busy_for_longer_than_the_bound_is_given_up(monkeypatch):
    from natinv.tracking import store

    monkeypatch.setattr(store, "BUSY_S", 0.3)
    call = _Failing(FIVE_HUNDREDS, 10**9)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="too many 500"):
        store.retry(call)
    assert call.calls > 1 and time.monotonic() - start >= 0.3


def test_a_long_error_keeps_its_cause_in_the_warning(tmp_path, monkeypatch, capsys):
    from natinv.tracking import store

    monkeypatch.setattr(store, "_UNREACHABLE", [])
    with store.warn_on_failure("ni synthesize shard-0 (t)"):
        raise RuntimeError(READ_TIMEOUT)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "not reachable" in line and "Read timed out. (read timeout=30)" in line and len(line) < 600
    assert not store.enabled()  # gone: the process stops trying


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback with a SQLite store (what README advises for a cluster); its URI."""
    import socket
    import urllib.request

    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                               str(port), "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                               "--artifacts-destination", str(folder / "artifacts"), "--workers", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:  # wait for the event (the server answers), bounded
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.2)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def _shard_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(f"natinv-{experiment}").experiment_id],
                              "tags.stage = 'synthesize'", max_results=100)


@pytest.mark.slow
def test_sixteen_stage_jobs_on_a_tracking_server_lose_no_run(tmp_path, mlflow_server):
    """16 stage processes at once on one `mlflow server`, every run kept."""
    errors = _sixteen_at_once(tmp_path / "results", 0, mlflow_server)
    assert not any("warning" in e for e in errors), [e for e in errors if e][:2]
    runs = _shard_runs(mlflow_server, "par")
    assert sorted(int(r.data.tags["shard"]) for r in runs) == list(range(16))
    assert all(r.info.status == "FINISHED" and r.data.metrics["final.ce"] == 0.5 for r in runs)


@contextlib.contextmanager
def _faulty_front(upstream: str, fault: str, times: int) -> Iterator[tuple[str, list[str]]]:
    """A front for the tracking server at `upstream`: it passes every request on, except the first `times` requests
    to runs/log-batch (runs/create for "lost"), which get `fault`: "500" (what `mlflow server` answers when its SQLite
    store stays locked), "silence" (no answer while the test runs: a server too busy to answer in the client's time)
    or "lost" (passed on and done, but its answer never comes back: a reply lost on the way, or sent after the
    client's timeout). Its URI, and the faults it gave so far."""
    import http.server
    import json
    import threading
    import urllib.error
    import urllib.request

    given: list[str] = []
    turn = threading.Lock()
    done = threading.Event()

    class Front(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self, status: int, body: bytes, kind: str | None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind or "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _pass_on(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            faulty = False
            if ("runs/create" if fault == "lost" else "runs/log-batch") in self.path:
                with turn:
                    faulty = len(given) < times
                    if faulty:
                        given.append(fault)
                if faulty and fault == "silence":
                    done.wait()
                    return
                if faulty and fault == "500":
                    return self._answer(500, json.dumps({"error_code": "INTERNAL_ERROR", "message":
                                                         "(sqlite3.OperationalError) database is locked"}).encode(), None)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            request = urllib.request.Request(upstream + self.path, data=body or None, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    if faulty:  # "lost": done upstream, no answer here
                        done.wait()
                        return
                    self._answer(answer.status, answer.read(), answer.headers.get("Content-Type"))
            except urllib.error.HTTPError as answer:
                self._answer(answer.code, answer.read(), answer.headers.get("Content-Type"))

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _pass_on

    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
    front.daemon_threads = True
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{front.server_address[1]}", given
    finally:
        done.set()
        front.shutdown()
        front.server_close()


@pytest.mark.slow
@pytest.mark.parametrize("fault, times", [("500", 4), ("silence", 2)])
def test_a_busy_tracking_server_is_waited_for_and_the_run_is_complete(tmp_path, mlflow_server, fault, times):
    """A server that answers its health check but fails requests (5xx: its SQLite store locked under many writers) or
    answers them too late is busy, not gone: the stage tries again and its run is whole, with no warning. Each fault
    is more than MLflow's own one retry absorbs."""
    with _faulty_front(mlflow_server, fault, times) as (uri, given):
        env = {k: v for k, v in os.environ.items() if k != PARENT_ENV}
        env |= {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}  # a silent answer costs 3 s, not 30
        proc = subprocess.run([sys.executable, "-c", JOB, str(tmp_path), "0", f"busy-{fault}"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert given == [fault] * times  # the faults were met
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr[-2000:]
    [run] = _shard_runs(mlflow_server, f"busy-{fault}")
    assert run.info.status == "FINISHED" and run.data.metrics["final.ce"] == 0.5
    assert run.data.params["synthesis.num_images"] == "8" and run.data.tags["shard"] == "0"
    from mlflow import MlflowClient

    assert [m.value for m in MlflowClient(mlflow_server).get_metric_history(run.info.run_id, "loss/ce")] == [3.0, 2.0, 1.0]


PIPELINE = """
import sys
from natinv.config import Config
from natinv.tracking import Outcome, StageRun
from natinv.tracking.parent import end_pipeline, start_pipeline
cfg = Config(experiment=sys.argv[2], results=sys.argv[1])
start_pipeline(cfg, "test")
run = StageRun(cfg, "synthesize", {"teacher": "t", "method": "ni", "shard": 0}, {"synthesis.num_images": 8}).start()
run.close("FINISHED", Outcome({"seconds": 1.0, "final": {"ce": 0.5}}, {"loss/ce": [3.0, 2.0, 1.0]}))
end_pipeline(cfg, "FINISHED")
"""


@pytest.mark.slow
@pytest.mark.parametrize("whose", ["stage", "pipeline"])
def test_a_run_whose_creation_answer_is_lost_is_made_once(tmp_path, mlflow_server, whose):
    """A run's creation that the server did but whose answer never came back (MLflow's client then sends it again, and
    so does `retry`, as for any unanswered request to a healthy server) leaves one run in the experiment, not a run
    per try: the twins, never named and never ended, would stay RUNNING in the UI for ever. Two lost answers are
    three creations: MLflow's own retry and then `retry`'s."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    experiment = f"lost-{whose}"
    with _faulty_front(mlflow_server, "lost", 2) as (uri, given):
        env = {k: v for k, v in os.environ.items() if k != PARENT_ENV}
        env |= {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
        script, args = (JOB, ["0", experiment]) if whose == "stage" else (PIPELINE, [experiment])
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), *args], env=env, capture_output=True,
                              text=True, timeout=600)
        assert given == ["lost"] * 2
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr[-2000:]
    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(f"natinv-{experiment}").experiment_id
    runs = client.search_runs([experiment_id], max_results=100)
    assert sorted(r.data.tags.get("stage") for r in runs) == sorted(["synthesize", *(["pipeline"] if whose == "pipeline" else [])])
    assert all(r.info.status == "FINISHED" for r in runs)
    kept = next(r for r in runs if r.data.tags["stage"] == ("synthesize" if whose == "stage" else "pipeline"))
    twins = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY, max_results=100)
    assert len(twins) == 2 and {t.data.tags.get("natinv.run_token") for t in twins} == {kept.data.tags["natinv.run_token"]}
    if whose == "pipeline":
        assert next(r for r in runs if r.data.tags["stage"] == "synthesize").data.tags["mlflow.parentRunId"] == kept.info.run_id


def test_a_thinned_curve_keeps_at_most_the_asked_points_evenly_and_its_last():
    from natinv.tracking import thin

    assert thin([1.0, 2.0, 3.0]) == {1: 1.0, 2: 2.0, 3: 3.0}
    thinned = thin([float(i) for i in range(1, 2001)], at_most=100)
    assert len(thinned) == 100 and list(thinned)[:2] == [20, 40] and thinned[2000] == 2000.0
    assert list(thin([float(i) for i in range(1, 11)], at_most=3)) == [4, 8, 10]
    assert thin([]) == {}


def test_a_network_is_a_logged_model_and_leaves_the_process_tracking_uri_alone(tmp_path, monkeypatch):
    """A stage's output network becomes a logged model of its run (signature, input example, the checkpoint among
    its files); MLflow's fluent API, which that needs, does not leave MLFLOW_TRACKING_URI set for what the process does
    next (a later stage in the same process would take it for a user's server and write to ./mlruns)."""
    from mlflow import MlflowClient

    from natinv.checkpoint import ModelMeta, save_model
    from natinv.models import build_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "results/par/kd/s.safetensors"
    weights.parent.mkdir(parents=True)
    save_model(weights, build_model("resnet8", 10, 1, 4), ModelMeta("resnet8", 10, 1, 32, 4, [0.2], [0.3]))
    run = StageRun(Config(experiment="par", results=str(tmp_path / "results")), "kd", {"student": "s"}, {},
                   weights=[weights]).start()
    run.close("FINISHED", Outcome({"test_acc": 50.0}))
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(f"sqlite:///{tmp_path / 'results/mlflow.db'}")
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED"
    (model,) = client.search_logged_models([done.info.experiment_id], filter_string=f"source_run_id = '{run.run_id}'")
    assert model.name == "s" and str(model.status).endswith("READY")
    assert not (tmp_path / "mlruns").exists()
