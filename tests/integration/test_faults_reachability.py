"""The health check that keeps a dead server from blocking the writer in MLflow's retries.

A tiny local HTTP server answers ``/health`` with a chosen status; a free port with
nothing listening stands for a dead server. The sink behind the check is a recording
fake: the point is that it is not called when the server is not there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow_server import free_port

from inspect_mlflow._operations import Operation, SetTags
from inspect_mlflow._writer.reachability import ProbingSink, Reachability, ServerUnreachable
from inspect_mlflow._writer.sink import MemorySink, SinkError
from inspect_mlflow._writer.writer import BackgroundWriter


@pytest.fixture
def answering() -> Iterator[tuple[str, dict[str, int]]]:
    state = {"status": 200, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state["hits"] += 1
            self.send_response(state["status"])
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


class Recording(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def ops(n: int = 2) -> list[Operation]:
    return [SetTags("task:a", {"i": str(i)}) for i in range(n)]


def test_a_dead_server_fails_the_check_at_once_and_the_sink_is_not_called():
    probe = Reachability(f"http://127.0.0.1:{free_port()}")
    inner = Recording()
    sink = ProbingSink(inner, probe)
    batch = ops()
    started = time.monotonic()
    with pytest.raises(SinkError) as caught:
        sink.send(batch)
    assert time.monotonic() - started < 2
    assert caught.value.transient and caught.value.kind == "server_unreachable"
    assert caught.value.pending == tuple(batch)
    assert inner.ops == []


@pytest.mark.parametrize(
    "status, reachable",
    [(200, True), (404, True), (401, True), (429, False), (500, False), (503, False)],
)
def test_any_answer_but_429_and_5xx_means_the_server_is_there(answering, status, reachable):
    url, state = answering
    state["status"] = status
    probe = Reachability(url + "/")
    if reachable:
        probe.check()
    else:
        with pytest.raises(ServerUnreachable, match=str(status)):
            probe.check()
    assert state["hits"] == 1, "one request, no retries"


def test_stores_that_are_not_http_are_not_checked():
    for uri in ("sqlite:///x.db", "databricks", "file:///tmp/mlruns", "/tmp/mlruns"):
        probe = Reachability(uri)
        probe.check()
        assert probe.checks == 0


def test_the_writer_backs_off_on_a_dead_server_and_delivers_once_it_answers(answering):
    url, state = answering
    state["status"] = 503
    inner = Recording()
    writer = BackgroundWriter(
        ProbingSink(inner, Reachability(url)),
        schedule_delay=0.01,
        retry_timeout=60,
        backoff=0.05,
        max_backoff=0.1,
    )
    writer.emit(ops(3))
    deadline = time.monotonic() + 5
    while writer.stats["retries"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.stats["retries"] >= 2 and inner.ops == []
    state["status"] = 200
    assert writer.flush(5)
    assert inner.ops == ops(3)
    writer.shutdown(2)


def test_where_the_writer_owns_retries_a_batch_right_after_one_that_landed_is_not_checked(
    answering, monkeypatch
):
    """The delivery process: one round trip less per batch; a failure checks again."""
    url, state = answering
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    inner = Recording()
    sink = ProbingSink(inner, Reachability(url))
    sink.send(ops(1))
    sink.send(ops(1))
    assert state["hits"] == 1, "the second batch followed a landed one: no check"

    class Failing(Recording):
        def send(self, batch) -> None:  # type: ignore[no-untyped-def]
            raise SinkError("refused", transient=True, kind="x", pending=batch)

    sink.sink = Failing()
    with pytest.raises(SinkError):
        sink.send(ops(1))
    with pytest.raises(SinkError):
        sink.send(ops(1))
    assert state["hits"] == 2, "after a failed send the next batch is checked first"


def test_in_the_evals_process_every_batch_is_checked(answering, monkeypatch):
    """There a call to a server that just died would wait out MLflow's own retries."""
    url, state = answering
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    sink = ProbingSink(Recording(), Reachability(url))
    for _ in range(3):
        sink.send(ops(1))
    assert state["hits"] == 3


def test_cancel_and_close_reach_the_wrapped_sink():
    inner = Recording()
    sink = ProbingSink(inner, Reachability("sqlite:///x.db"))
    sink.cancel()
    sink.close()
    assert inner.cancelled and inner.closed


def test_a_server_that_accepts_but_never_answers_fails_the_check_within_its_timeout():
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # connections are queued by the kernel, never answered
    try:
        probe = Reachability(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ServerUnreachable, match="timed out|does not answer"):
            probe.check()
        assert time.monotonic() - started < 2.5
    finally:
        listener.close()
