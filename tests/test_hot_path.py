"""The hot-path shortcuts taken for the overhead targets give the same results as before.

Each shortcut (see ``benchmarks/overhead.py`` for what it bought) must be invisible:
plain-path expressions evaluated without JMESPath's interpreter read exactly what the
interpreter reads.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import jmespath
import pytest
from inspect_ai.model import ModelOutput, ModelUsage

from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._engine.views import MISSING, convert
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import Expr, Where


def expr(text: str) -> Expr:
    return Expr(text, jmespath.compile(text), Where("test.yaml", "$"), OPTIONS)


def _output() -> Any:
    out = ModelOutput.from_content(model="mockllm/model", content="42")
    out.usage = ModelUsage(input_tokens=3, output_tokens=2, total_tokens=5)
    return out


DOCS: list[dict[str, Any]] = [
    {"event": convert(_output()), "n": None, "s": "text", "l": [1, 2], "x": {"y": {"z": 0}}},
    {"event": {"usage": None}, "s": {"t": False}},
    {},
]

PATHS = [
    "event.usage.input_tokens",
    "event.choices",
    "event.usage.missing",
    "event.completion",
    "n.a",
    "s.t",
    "s.t.u",
    "l.a",
    "x.y.z",
    "missing.a.b",
]


@pytest.mark.parametrize("doc", DOCS)
def test_plain_paths_read_what_jmespath_reads(doc: dict[str, Any]) -> None:
    engine = Engine(load_mapping())
    for text in PATHS:
        compiled = expr(text)
        fast = engine._search(compiled, doc)
        assert fast is not MISSING
        assert fast == compiled.search(doc), text


# -- traces: start_trace requests side by side over HTTP -------------------------------


def _trace(key: str, bad: bool = False) -> Any:
    from inspect_mlflow._operations import FeedbackData, LogTrace, SpanData

    t0 = time.time_ns() - 10**9
    source = "NOT_A_SOURCE" if bad else "CODE"
    return LogTrace(
        run="task:t",
        trace_key=key,
        name=key,
        start_time_ns=t0,
        end_time_ns=t0 + 10**8,
        spans=(SpanData("m", None, "model", "LLM", t0 + 10**6, t0 + 10**7),),
        feedback=(FeedbackData("match", 1, source_type=source),),
    )


class _Overlap:
    """A real tracing client that records how many ``start_trace`` calls overlap."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracing.client import TracingClient

        self.real = TracingClient(uri)
        self.lock = threading.Lock()
        self.active = self.most = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def start_trace(self, info: Any) -> Any:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.05)  # a far-away server
            return self.real.start_trace(info)
        finally:
            with self.lock:
                self.active -= 1


@pytest.mark.server
def test_traces_start_side_by_side_over_http_and_failures_stay_theirs(server_store: Any) -> None:
    from mlflow.tracing.client import TracingClient

    from inspect_mlflow._writer.mlflow_sink.trace_send import TraceSender, TraceSendError
    from inspect_mlflow._writer.mlflow_sink.trace_values import trace_id_for

    client = server_store.client()
    experiment_id = server_store.create_experiment()
    run_id = client.create_run(experiment_id).info.run_id
    keys = [uuid.uuid4().hex for _ in range(6)]
    ops = [_trace(key, bad=(i == 2)) for i, key in enumerate(keys)]
    overlap = _Overlap(server_store.tracking_uri)
    sender = TraceSender(
        server_store.tracking_uri, experiment_id, max_parallel_requests=4, client=overlap
    )
    with pytest.raises(TraceSendError) as caught:
        sender.send([(op, run_id) for op in ops])
    sender.close()
    assert overlap.most > 1  # side by side
    assert [op.trace_key for op, _ in caught.value.failed] == [keys[2]]
    found = TracingClient(server_store.tracking_uri).search_traces(
        locations=[experiment_id], run_id=run_id
    )
    landed = {t.info.trace_id for t in found}
    assert landed == {trace_id_for(k, run_id) for i, k in enumerate(keys) if i != 2}
    assert all(len(t.info.assessments) == 1 for t in found)


def test_local_stores_are_written_one_request_at_a_time() -> None:
    from inspect_mlflow._writer.mlflow_sink.trace_send import TraceSender

    assert TraceSender("sqlite:///x.db", "1", max_parallel_requests=8).max_parallel_requests == 1
    assert TraceSender("http://h:5000", "1", max_parallel_requests=8).max_parallel_requests == 8


# -- the session's worker: callbacks only queue, one thread evaluates in order ----------


def test_worker_runs_jobs_in_order_off_the_submitting_thread() -> None:
    from inspect_mlflow._delivery.worker import SerialWorker

    seen: list[tuple[int, str]] = []
    gate = threading.Event()

    def job(n: int) -> None:
        gate.wait(5)
        seen.append((n, threading.current_thread().name))

    worker = SerialWorker(job, name="test-worker")
    began = time.perf_counter()
    for n in range(50):
        worker.submit(n)
    assert time.perf_counter() - began < 0.5 and seen == []  # submit does not wait
    gate.set()
    assert worker.drain(5)
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-worker"}
    worker.stop(1)
    worker.submit(50)  # after stop: runs on the caller's thread, still in order
    assert seen[-1] == (50, threading.current_thread().name)


def test_a_full_worker_queue_runs_the_job_inline_after_the_earlier_ones() -> None:
    from inspect_mlflow._delivery.worker import SerialWorker

    seen: list[int] = []
    release = threading.Event()

    def job(n: int) -> None:
        if n == 0:
            release.wait(5)
        seen.append(n)

    worker = SerialWorker(job, name="test-worker-full", max_pending=2)
    worker.submit(0)  # taken by the thread, blocked
    time.sleep(0.05)
    worker.submit(1)
    worker.submit(2)  # the queue holds 2 now
    threading.Timer(0.1, release.set).start()
    worker.submit(3)  # full: waits for 0, 1, 2, then runs here
    assert seen == [0, 1, 2, 3]
    worker.stop(1)


def test_a_failing_job_is_logged_and_the_worker_goes_on(caplog: Any) -> None:
    from inspect_mlflow._delivery.worker import SerialWorker

    seen: list[int] = []

    def job(n: int) -> None:
        if n == 1:
            raise RuntimeError("boom")
        seen.append(n)

    worker = SerialWorker(job, name="test-worker-errors")
    for n in range(3):
        worker.submit(n)
    assert worker.drain(5) and seen == [0, 2]
    assert "boom" in caplog.text
    worker.stop(1)


# -- the sink: a run's tables go up side by side when it closes -------------------------


class _SlowUploads:
    """Wraps a sink's single-file upload: each takes 50 ms more; records how many overlap."""

    def __init__(self, upload: Any) -> None:
        self.upload = upload
        self.lock = threading.Lock()
        self.active = self.most = 0
        self.spans: dict[str, tuple[float, float]] = {}

    def __call__(self, run_id: str, text: str, path: str) -> Any:
        began = time.monotonic()
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.2)
            return self.upload(run_id, text, path)
        finally:
            with self.lock:
                self.active -= 1
            self.spans[path] = (began, time.monotonic())


@pytest.mark.server
def test_a_runs_documents_and_tables_upload_side_by_side_at_close(
    server_store: Any, tmp_path: Any
) -> None:
    import json

    from inspect_mlflow._operations import AppendRows, CloseRun, LogArtifact, OpenRun
    from inspect_mlflow._writer.mlflow_sink import LOGGED_ARTIFACTS_TAG

    sink = server_store.sink()
    slow = _SlowUploads(sink._tables.log_text)
    sink._tables.log_text = slow  # type: ignore[method-assign]
    paths = [f"inspect/t{i}.json" for i in range(4)]
    sink.send([OpenRun(run="eval:u", kind="eval", name="u", parent=None, tags={})])
    before = server_store.server.log_size()
    sink.send(
        [
            LogArtifact("eval:u", "eval_logs/u.json", {"status": "success"}),
            *[AppendRows("eval:u", path, ({"i": i},)) for i, path in enumerate(paths)],
            CloseRun("eval:u", "FINISHED", 1),
        ]
    )
    # The document rides with the tables (5 files at once), and nothing asks the server
    # where the run's artifacts go: the sink knows it from creating the run.
    assert slow.most > 1 and sink.calls["log_text"] == 5
    doc_began, doc_ended = slow.spans.pop("eval_logs/u.json")
    assert any(began < doc_ended and doc_began < ended for began, ended in slow.spans.values())
    requests = server_store.server.requests_since(before)
    assert requests[("GET", "/api/2.0/mlflow/runs/get")] == 0
    run_id = sink.run_id("eval:u")
    client = server_store.client()
    for i, path in enumerate(paths):
        local = client.download_artifacts(run_id, path, str(tmp_path))
        assert json.loads(open(local).read()) == {"columns": ["i"], "data": [[i]]}
    local = client.download_artifacts(run_id, "eval_logs/u.json", str(tmp_path))
    assert json.loads(open(local).read()) == {"status": "success"}
    tagged = json.loads(client.get_run(run_id).data.tags[LOGGED_ARTIFACTS_TAG])
    assert tagged == [{"path": path, "type": "table"} for path in paths]
    logged = json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert sorted(e["path"] for e in logged) == paths
    assert client.get_run(run_id).info.status == "FINISHED"


# -- MLflow's import (seconds) happens on the session's worker, not on the event loop ----

_RUN_START_WITHOUT_MLFLOW = r"""
import asyncio, importlib.abc, os, sys, threading

gate = threading.Event()


class Gate(importlib.abc.MetaPathFinder):
    # Holds any thread but the main one at `import mlflow` until the gate opens.
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" and threading.current_thread() is not threading.main_thread():
            gate.wait(60)
        return None


sys.meta_path.insert(0, Gate())
from inspect_ai.hooks import RunStart

from inspect_mlflow._inspect.hook import MlflowTrackingHook

hook = MlflowTrackingHook()
assert hook.enabled()


async def main():
    start = RunStart(eval_set_id=None, run_id="r1", task_names=["t"])
    await asyncio.wait_for(hook.on_run_start(start), 20)


asyncio.run(main())
print("imported on the loop:", "mlflow" in sys.modules)
gate.set()
session = hook._session
assert session._worker.drain(60)
print("writer built:", hasattr(session, "writer") and "mlflow" in sys.modules)
"""


def test_run_start_returns_while_mlflow_is_still_importing(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # nothing listens: nothing is sent
        "INSPECT_MLFLOW_AUTOLOG_ENABLED": "false",
        "INSPECT_MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
        "INSPECT_MLFLOW_DELIVERY": "thread",  # in the eval's process: its worker imports
    }
    env.pop("INSPECT_MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_START_WITHOUT_MLFLOW],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported on the loop: False" in done.stdout
    assert "writer built: True" in done.stdout
