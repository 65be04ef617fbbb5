"""A fast "is the tracking server there?" check, so a dead server never blocks the writer.

Why: MLflow's REST client retries inside every call (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
= 7 with backoff factor 2, a 120 s timeout per attempt), so one call against a server
that is down blocks its thread for about four minutes. MLflow offers no per-client
setting for this: its ``http_request`` reads those environment variables on every call,
and changing them would change every MLflow client of the user's process.

So before each batch the sink asks :meth:`Reachability.check`: one ``GET <uri>/health``
with no retries and a short timeout. Any HTTP answer except 429 and 5xx means the server
is there (a 404 from a proxy or a 401 still proves it listens); a refused connection, a
timeout or 429/5xx raises :class:`ServerUnreachable`, which the writer treats like any
transient failure: back off, try again, spool at the end. MLflow's own retries then only
matter when a server dies *during* a batch; the writer's shutdown deadline abandons such
a call (see ``writer.py``).

Only ``http``/``https`` tracking URIs are checked; other stores (``sqlite:``,
``databricks``, files) are local or reached through other clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from inspect_mlflow._runtime.operations import Operation
from inspect_mlflow._writer.sink import SinkError

__all__ = ["ProbingSink", "Reachability", "ServerUnreachable"]


class ServerUnreachable(ConnectionError):
    """The tracking server did not answer its health check (transient)."""

    kind = "server_unreachable"
    transient = True


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
            raise ServerUnreachable(f"{_host(self.url)} answers HTTP {status} to its health check")

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
        """Wrap ``sink``; ``probe`` is checked before every send."""
        self.sink = sink
        self.probe = probe

    def send(self, ops: Sequence[Operation]) -> None:
        """Check the server, then send; an unreachable server fails the batch transiently."""
        try:
            self.probe.check()
        except ServerUnreachable as error:
            raise SinkError(str(error), transient=True, kind=error.kind, pending=ops) from None
        self.sink.send(ops)

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
