"""A fast "is the tracking server there?" check, so a dead server never blocks the writer.

Why: MLflow's REST client retries inside every call (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
= 7, backoff factor 2, a 120 s timeout per attempt). A call that meets a dead server
sleeps 4, 8, 16, 32, 64 s between its attempts *whatever the server does meanwhile*: a
server back after 8 s is first asked again 16 s later, and a run end waiting on such a
call runs out its flush timeout and spools writes a live server would have taken (issue
15: "a server restart sends the eval's data to the spool").

So retries belong to the writer, which knows the outage:

- before each batch the sink asks :meth:`Reachability.check`: one ``GET <uri>/health``
  with no retries and a short timeout. Any HTTP answer except 429 and 5xx means the
  server is there (a 404 from a proxy or a 401 still proves it listens); a refused
  connection, a timeout or 429/5xx raises :class:`ServerUnreachable`, which the writer
  treats like any transient failure. A server that does not answer at all is probed
  again every :data:`PROBE_INTERVAL` seconds (a refused connection costs nothing), so
  delivery resumes within about that long of the server answering again; a server that
  answers 429/5xx gets the writer's growing backoff instead, to spare it;
- the delivery process, which is ours alone, switches MLflow's own retries off
  (:data:`WRITER_OWNS_RETRIES`, applied by :func:`own_http_retries`): a call that fails
  fails at once and the writer's probe decides when to try again. In the eval's process
  (``INSPECT_MLFLOW_DELIVERY=thread``) those variables are the user's and are left alone,
  so a call that was in flight when the server died still waits out MLflow's retries
  there (see ``docs/reliability.md``).

A batch that follows one which landed within :data:`FRESH_FOR` seconds is not checked
first where the writer owns retries (the delivery process): the server answered a moment
ago, a call that meets it gone fails at once there, and the batch after that failure is
checked again. That saves a round trip before every batch, the run end's last one
included, and a request per second of the eval. In the eval's process every batch is
checked, since a call there would wait out MLflow's retries.

Only ``http``/``https`` tracking URIs are checked; other stores (``sqlite:``,
``databricks``, files) are local or reached through other clients.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from inspect_mlflow._operations import Operation
from inspect_mlflow._writer.sink import SinkError

__all__ = [
    "FRESH_FOR",
    "PROBE_INTERVAL",
    "WRITER_OWNS_RETRIES",
    "ProbingSink",
    "Reachability",
    "ServerUnreachable",
    "own_http_retries",
]

PROBE_INTERVAL = 1.0
"""Seconds between two health checks of a server that does not answer at all."""

WRITER_OWNS_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
"""MLflow settings of the delivery process: its client makes each request once and the
writer retries (see the module docstring)."""

FRESH_FOR = 5.0
"""Seconds after a batch landed during which the next one is sent unchecked, where the
writer owns retries (see the module docstring)."""


def writer_owns_retries(environ: MutableMapping[str, str] = os.environ) -> bool:
    """True where MLflow's client makes each request once (:func:`own_http_retries` ran)."""
    return all(environ.get(k) == v for k, v in WRITER_OWNS_RETRIES.items())


def own_http_retries(environ: MutableMapping[str, str] = os.environ) -> None:
    """Let the writer own retries in a process that is ours alone (the delivery process).

    Called after the process took the eval's environment: MLflow reads these variables on
    every request, so this must come last.
    """
    environ.update(WRITER_OWNS_RETRIES)


class ServerUnreachable(ConnectionError):
    """The tracking server did not answer its health check (transient).

    ``retry_after`` is how soon to check again: :data:`PROBE_INTERVAL` when nothing
    answered (cheap to ask again), None when the server answered 429/5xx (back off).
    """

    kind = "server_unreachable"
    transient = True

    def __init__(self, message: str, *, retry_after: float | None = PROBE_INTERVAL) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Reachability:
    """Checks that an HTTP tracking server answers; one instance per sink (one thread)."""

    def __init__(self, tracking_uri: str, *, timeout: float = 3.0) -> None:
        """Prepare the check; no request is made here.

        Args:
            tracking_uri: The tracking URI; only ``http``/``https`` ones are checked.
            timeout: Seconds for connecting and for the answer, each.
        """
        parts = urlsplit(tracking_uri)
        self.applies = parts.scheme in ("http", "https")
        self.url = tracking_uri.rstrip("/") + "/health"
        self.timeout = timeout
        self.checks = 0
        """Checks made (for tests and diagnostics)."""
        self._session: requests.Session | None = None

    def check(self) -> None:
        """Return when the server answers; raise :class:`ServerUnreachable` otherwise."""
        if not self.applies:
            return
        if self._session is None:
            self._session = requests.Session()  # default adapter: no retries
        self.checks += 1
        try:
            response = self._session.get(
                self.url, timeout=(self.timeout, self.timeout), allow_redirects=False
            )
        except requests.exceptions.SSLError:
            return  # something answered TLS: the MLflow call will tell what is wrong
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ServerUnreachable(f"{_host(self.url)} does not answer: {_short(error)}") from None
        status = response.status_code
        response.close()
        if status == 429 or status >= 500:
            raise ServerUnreachable(
                f"{_host(self.url)} answers HTTP {status} to its health check", retry_after=None
            )

    def close(self) -> None:
        """Drop pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.hostname and f"{parts.hostname}:{parts.port or ''}".rstrip(":") or url


def _short(error: BaseException) -> str:
    text = str(error)
    for marker in ("Connection refused", "timed out", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return type(error).__name__


class ProbingSink:
    """A sink that checks the server is there before each batch (see the module docstring).

    Wraps the real sink for the writer; ``cancel`` and ``close`` are passed on.
    """

    def __init__(self, sink: Any, probe: Reachability) -> None:
        """Wrap ``sink``; ``probe`` is checked before a send (see the module docstring)."""
        self.sink = sink
        self.probe = probe
        self._landed_at: float | None = None
        """When the last send landed in full (monotonic); None after a failure."""

    def send(self, ops: Sequence[Operation]) -> None:
        """Check the server, then send; an unreachable server fails the batch transiently."""
        landed_at, self._landed_at = self._landed_at, None
        fresh = landed_at is not None and time.monotonic() - landed_at < FRESH_FOR
        if not (fresh and writer_owns_retries()):
            try:
                self.probe.check()
            except ServerUnreachable as error:
                raise SinkError(
                    str(error),
                    transient=True,
                    kind=error.kind,
                    pending=ops,
                    retry_after=error.retry_after,
                ) from None
        self.sink.send(ops)
        self._landed_at = time.monotonic()

    def cancel(self) -> None:
        """Tell the wrapped sink to make no further call (when it can be told)."""
        cancel = getattr(self.sink, "cancel", None)
        if callable(cancel):
            cancel()

    def close(self) -> None:
        """Close the wrapped sink and the probe's connections."""
        try:
            self.sink.close()
        finally:
            self.probe.close()
