"""The writer resumes within about a second of a down server answering again, whatever the
outage's length, and MLflow's own retries are off in the delivery process.

Issue 15: the writer's backoff grew to 8 s and MLflow's client slept 4, 8, 16 s inside
one call, so a server back after 8 s saw its next request 16 s later, and the run end's
flush ran out. Here a server that is not listening for 10 s (more than the backoff's
growth to its cap) starts on that port; the batch must land within 2 s of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow_server import free_port

from inspect_mlflow._operations import SetTags
from inspect_mlflow._writer.reachability import (
    PROBE_INTERVAL,
    WRITER_OWNS_RETRIES,
    ProbingSink,
    Reachability,
    own_http_retries,
)
from inspect_mlflow._writer.sink import MemorySink, SinkError
from inspect_mlflow._writer.writer import BackgroundWriter


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


_HEALTH_GET = _Health.do_GET


@pytest.fixture
def late_server() -> Iterator[tuple[int, threading.Event, dict[str, float]]]:
    """A port where a health endpoint starts listening when ``start`` is set."""
    port = free_port()
    start = threading.Event()
    when: dict[str, float] = {}
    holder: dict[str, ThreadingHTTPServer] = {}

    def serve() -> None:
        start.wait()
        server = ThreadingHTTPServer(("127.0.0.1", port), _Health)
        holder["server"] = server
        when["up"] = time.monotonic()
        server.serve_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, start, when
    finally:
        start.set()
        while "server" not in holder and thread.is_alive():
            time.sleep(0.01)
        if "server" in holder:
            holder["server"].shutdown()
            holder["server"].server_close()


def test_after_a_long_outage_the_writer_resumes_within_two_seconds(late_server) -> None:
    port, start, when = late_server
    sink = MemorySink()
    probe = Reachability(f"http://127.0.0.1:{port}", timeout=1.0)
    writer = BackgroundWriter(
        ProbingSink(sink, probe),
        schedule_delay=0.05,
        retry_timeout=3600.0,  # the session's "while the eval runs": no per-batch deadline
        backoff=2.0,  # without the cap: retries after 1-2, 3-6, 7-14, 15-30 s
        max_backoff=30.0,
    )
    try:
        writer.emit([SetTags("task:a", {"k": "v"})])
        time.sleep(10.0)
        assert sink.ops == []
        checks_while_down = probe.checks
        start.set()
        deadline = time.monotonic() + 10
        while not sink.ops and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.ops, "never delivered"
        resumed = time.monotonic() - when["up"]
        assert resumed < 2.0, f"resumed {resumed:.2f}s after the server answered"
        # Probed about once per PROBE_INTERVAL while down, not on the growing backoff.
        assert checks_while_down >= 0.7 * 10.0 / PROBE_INTERVAL, checks_while_down
        assert writer.stats["ops_failed"] == 0
    finally:
        writer.shutdown(2.0)


def test_a_server_answering_5xx_still_gets_the_growing_backoff() -> None:
    """``retry_after`` caps the delay only when it is given: 5xx answers back off."""
    attempts: list[float] = []

    class Busy(MemorySink):
        def send(self, ops) -> None:  # type: ignore[no-untyped-def]
            attempts.append(time.monotonic())
            if len(attempts) < 5:
                raise SinkError("503", transient=True, kind="TEMPORARILY_UNAVAILABLE", pending=ops)
            super().send(ops)

    writer = BackgroundWriter(Busy(), schedule_delay=0.05, backoff=0.2, max_backoff=2.0)
    try:
        writer.emit([SetTags("task:a", {"k": "v"})])
        assert writer.flush(20.0)
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        assert gaps[-1] > gaps[0], gaps  # grew: 0.1-0.2, 0.2-0.4, 0.4-0.8, 0.8-1.6
    finally:
        writer.shutdown(2.0)


def test_the_delivery_process_switches_mlflows_own_retries_off() -> None:
    environ = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "OTHER": "x"}
    own_http_retries(environ)
    assert environ == {**WRITER_OWNS_RETRIES, "OTHER": "x"}
    assert WRITER_OWNS_RETRIES["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_a_failed_server_version_check_is_forgotten(late_server) -> None:
    """MLflow caches a failed ``GET /version`` for the process: ``log_spans`` then raised
    NotImplementedError for good after a server was down once. The sender forgets it."""
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds

    from inspect_mlflow._writer.mlflow_sink.trace_send import _classify, _forget_server_version

    class _Version(_Health):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"3.17.2")

    port, start, when = late_server
    creds = MlflowHostCreds(f"http://127.0.0.1:{port}")
    _Health.do_GET = _Version.do_GET  # type: ignore[method-assign]  # this test's server
    try:
        assert RestStore._get_server_version(creds) is None  # nothing listens yet
        start.set()
        while "up" not in when:
            time.sleep(0.01)
        time.sleep(0.1)
        assert RestStore._get_server_version(creds) is None, "MLflow cached the failure"
        refused = NotImplementedError(
            "log_spans is not supported: could not identify MLflow server version"
        )
        assert _classify(refused) == (True, "server_version_unknown")
        _forget_server_version()
        assert str(RestStore._get_server_version(creds)) == "3.17.2"
    finally:
        _Health.do_GET = _HEALTH_GET  # type: ignore[method-assign]
        _forget_server_version()
