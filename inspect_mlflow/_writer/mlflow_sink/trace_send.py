"""Send ``LogTrace`` operations to MLflow: one trace per sample, its spans, its feedback.

Why this module exists: MLflow's fluent tracing API (and ``MlflowClient.start_trace``)
exports through a process-wide tracer to the process-wide tracking URI, so a trace made
that way can land in the wrong store. Here every call goes through
:class:`mlflow.tracing.client.TracingClient` built with an explicit tracking URI, with
the objects ``trace_build`` made. Nothing reads or changes MLflow's process-wide state.

What one trace becomes (in this order, so a trace exists before anything refers to it):

1. ``start_trace(TraceInfo)``: the trace's identity, times, state, request/response
   previews, metadata (``mlflow.sourceRun`` links it to its run, which puts it in that
   run's Traces tab), tags, aggregated token usage, and its assessments. The MLflow
   tracking store (sqlite/SQL and the ``mlflow server`` REST API) stores assessments that
   come with the ``TraceInfo`` in the same transaction, so a trace and its feedback land
   together in one request. Assessments the store did not keep (another backend) are
   sent one by one with ``log_assessment`` afterwards. On ``mlflow server`` the request
   skips MLflow's protobuf round trips (``trace_start``).
2. ``log_spans(experiment_id, spans)``: the root span and the child spans of every trace
   of the batch, as few requests as the size limits allow (the SQL store and the
   server's OTLP endpoint both take spans of several traces in one call).

Every identity is deterministic (``trace_values``), so sending a trace again (a retry, a
spool replay) updates it instead of duplicating it.

Threading: a sender is driven by one thread (the writer's) and keeps no shared state
besides its lazily built client.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE, ErrorCode
from mlflow.tracing.client import TracingClient

from inspect_mlflow._operations import LogTrace
from inspect_mlflow._writer.mlflow_sink.errors import classify, reason
from inspect_mlflow._writer.mlflow_sink.planning import parallel_requests
from inspect_mlflow._writer.mlflow_sink.trace_build import TracePayload, build_trace
from inspect_mlflow._writer.mlflow_sink.trace_start import TraceStarter

logger = logging.getLogger(__name__)

__all__ = ["TraceSendError", "TraceSender"]


class TraceSendError(MlflowException):
    """Some traces of a batch did not land.

    An :class:`MlflowException` whose ``error_code`` says whether retrying may help, so
    code that classifies MLflow errors by code (the sink's ``classify``) reaches the same
    verdict as :attr:`transient`: a transient failure carries the first failure's
    transient code (``TEMPORARILY_UNAVAILABLE`` for a connection error,
    ``DEADLINE_EXCEEDED`` when the send's time ran out), a refusal its permanent code
    (``INVALID_PARAMETER_VALUE`` for a value MLflow's entities refuse).

    Attributes:
        failed: The ``(LogTrace, run_id)`` items that did not land (in full or in part).
            Sending them again is safe: every write is idempotent.
        transient: True when every failure looked transient (network, 5xx, 429, time
            out), so retrying later may succeed; False when one was refused for good.
        kind: MLflow error code or exception name of the first failure.
        errors: ``trace_key -> message`` for each failed trace.
    """

    def __init__(
        self,
        message: str,
        *,
        failed: Sequence[tuple[LogTrace, str]],
        transient: bool,
        kind: str,
        errors: Mapping[str, str],
    ) -> None:
        if kind in ErrorCode.keys():
            code = ErrorCode.Value(kind)
        else:
            code = TEMPORARILY_UNAVAILABLE if transient else INVALID_PARAMETER_VALUE
        super().__init__(message, error_code=code)
        self.failed = list(failed)
        self.transient = transient
        self.kind = kind
        self.errors = dict(errors)


def _classify(error: BaseException) -> tuple[bool, str]:
    # The sink's classification, so the sender and the sink agree on what is transient.
    if _server_version_unknown(error):
        return True, "server_version_unknown"
    return classify(error)


def _server_version_unknown(error: BaseException) -> bool:
    """``log_spans`` refused because MLflow could not read the server's version.

    Why it is transient, and why the answer is forgotten: MLflow asks ``GET /version``
    once per process and caches the answer even when the request failed
    (``functools.lru_cache`` on ``RestStore._get_server_version``), so a server that was
    down at that moment made every later ``log_spans`` of the process raise this
    ``NotImplementedError`` for good, and its traces were spooled (issue 15).
    """
    return isinstance(error, NotImplementedError) and "could not identify MLflow server" in str(
        error
    )


def _forget_server_version() -> None:
    """Drop MLflow's cached (failed) server version check, so the next call asks again."""
    try:
        from mlflow.store.tracking.rest_store import RestStore

        RestStore._get_server_version.cache_clear()
    except Exception:  # another MLflow: nothing cached that way
        pass


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0


class _Expired(Exception):
    """The send's deadline passed before a request could be made."""

    kind = "DEADLINE_EXCEEDED"


class TraceSender:
    """Deliver ``LogTrace`` operations to one MLflow experiment.

    Built by the MLflow sink on the writer thread; ``send`` blocks that thread, never the
    evaluation's event loop.

    Args:
        tracking_uri: Where to send (``sqlite:///...``, ``http://...``, ``databricks``).
        experiment_id: Experiment that stores the traces.
        enabled: False turns trace writing off: ``send`` drops its items.
        max_spans_per_trace: Cap on spans per trace, root included (>= 1).
        max_attribute_chars: Cap on the JSON text of each span attribute (>= 100).
        max_spans_per_request: Spans per ``log_spans`` request (>= 1).
        max_request_bytes: Rough cap on span attribute bytes per ``log_spans`` request.
        max_attempts: Attempts per request for transient failures (>= 1).
        backoff: Seconds before the second attempt; doubles each time, capped at 10 s.
        max_parallel_requests: ``start_trace`` requests in flight at once over HTTP
            (>= 1). MLflow has no batch form of ``start_trace``, so a batch of traces costs
            one request each; sending them side by side keeps a far-away server's latency
            from adding up. Fewer when MLflow's HTTP connection pool is smaller (see
            :func:`~inspect_mlflow._writer.mlflow_sink.planning.parallel_requests`). Local stores
            (``sqlite:///``) are always written one by one.
        client: A ready ``TracingClient`` (tests); built from ``tracking_uri`` otherwise.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        *,
        enabled: bool = True,
        max_spans_per_trace: int = 1000,
        max_attribute_chars: int = 50_000,
        max_spans_per_request: int = 1000,
        max_request_bytes: int = 4_000_000,
        max_attempts: int = 2,
        backoff: float = 0.5,
        max_parallel_requests: int = 8,
        client: TracingClient | None = None,
    ) -> None:
        if max_spans_per_trace < 1:
            raise ValueError(f"max_spans_per_trace must be >= 1, got {max_spans_per_trace}")
        if max_attribute_chars < 100:
            raise ValueError(f"max_attribute_chars must be >= 100, got {max_attribute_chars}")
        if max_spans_per_request < 1:
            raise ValueError(f"max_spans_per_request must be >= 1, got {max_spans_per_request}")
        if max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        if max_parallel_requests < 1:
            raise ValueError(f"max_parallel_requests must be >= 1, got {max_parallel_requests}")
        self.tracking_uri = tracking_uri
        self.experiment_id = str(experiment_id)
        self.enabled = enabled
        self.max_spans_per_trace = max_spans_per_trace
        self.max_attribute_chars = max_attribute_chars
        self.max_spans_per_request = max_spans_per_request
        self.max_request_bytes = max_request_bytes
        self.max_attempts = max_attempts
        self.backoff = backoff
        remote = tracking_uri.startswith(("http://", "https://", "databricks"))
        self.max_parallel_requests = max_parallel_requests if remote else 1
        self._client = client
        self._given_client = client is not None
        self._start: TraceStarter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._count_lock = threading.Lock()
        self.counts: dict[str, int] = {
            "traces": 0,
            "spans": 0,
            "assessments": 0,
            "assessments_separate": 0,
            "dropped_spans": 0,
            "requests": 0,
        }
        """Running totals of what landed and how many requests it took (for reports)."""

    @property
    def client(self) -> TracingClient:
        """The tracing client for ``tracking_uri`` (built on first use)."""
        if self._client is None:
            self._client = TracingClient(self.tracking_uri)
        return self._client

    def _starter(self) -> TraceStarter:
        """The ``start_trace`` call for this client (direct on ``mlflow server``)."""
        if self._start is None:
            self._start = TraceStarter(self.client, direct=not self._given_client)
        return self._start

    def close(self) -> None:
        """Drop the client and the request threads; a later ``send`` builds new ones."""
        self._client = None
        self._start = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def send(self, items: Sequence[tuple[LogTrace, str]], timeout: float | None = None) -> None:
        """Store each trace, its spans and its assessments; idempotent per trace key.

        Args:
            items: ``(LogTrace, MLflow run id)`` pairs, owned by the caller.
            timeout: Seconds for the whole call; checked before each request.

        Raises:
            TraceSendError: Some traces did not land after bounded retries; ``failed``
                holds them and ``transient`` says whether a later retry may succeed.
        """
        if not self.enabled or not items:
            return
        deadline = _Deadline(timeout)
        errors: dict[str, tuple[tuple[LogTrace, str], BaseException]] = {}

        payloads: list[TracePayload] = []
        for op, run_id in items:
            try:
                payloads.append(
                    build_trace(
                        op,
                        run_id,
                        self.experiment_id,
                        max_spans_per_trace=self.max_spans_per_trace,
                        max_attribute_chars=self.max_attribute_chars,
                    )
                )
            except Exception as error:  # a value MLflow's entities refuse
                errors[op.trace_key] = ((op, run_id), error)

        started: list[TracePayload] = []
        results = self._start_all(payloads, deadline)
        for payload, (kept, error) in zip(payloads, results, strict=True):
            if error is not None:
                errors[payload.item[0].trace_key] = (payload.item, error)
                continue
            payload.missing_feedback = [f for f in payload.feedback if f.assessment_id not in kept]
            started.append(payload)

        logged = self._log_spans(started, deadline, errors)

        for payload in logged:
            try:
                sent = self._send_missing_feedback(deadline, payload)
            except Exception as error:
                errors[payload.item[0].trace_key] = (payload.item, error)
                continue
            self.counts["traces"] += 1
            self.counts["spans"] += len(payload.spans)
            self.counts["assessments"] += len(payload.feedback)
            self.counts["assessments_separate"] += sent
            self.counts["dropped_spans"] += payload.dropped_spans

        if errors:
            raise self._failure(errors)

    # -- steps ------------------------------------------------------------------------

    def _start_all(
        self, payloads: list[TracePayload], deadline: _Deadline
    ) -> list[tuple[set[str], BaseException | None]]:
        """``start_trace`` for each payload, side by side over HTTP.

        In order: the ids of the assessments the store kept with each trace, or its error.
        """
        starter = self._starter()

        def start(payload: TracePayload) -> tuple[set[str], BaseException | None]:
            try:
                return self._call(deadline, starter, payload.info), None
            except Exception as error:
                return set(), error

        if self.max_parallel_requests == 1 or len(payloads) < 2:
            return [start(payload) for payload in payloads]
        if self._pool is None or self._pool_pid != os.getpid():  # none yet, or forked
            # No more at once than MLflow's connection pool holds beside the uploads.
            workers = min(self.max_parallel_requests, parallel_requests()[0])
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="inspect-mlflow-traces")
            self._pool_pid = os.getpid()
        return list(self._pool.map(start, payloads))

    def _log_spans(
        self,
        started: list[TracePayload],
        deadline: _Deadline,
        errors: dict[str, tuple[tuple[LogTrace, str], BaseException]],
    ) -> list[TracePayload]:
        """Log the spans of all started traces; return the traces whose spans all landed."""
        landed: list[TracePayload] = []
        for group in self._chunks(started):
            spans = [span for payload in group for span in payload.spans]
            try:
                self._call(deadline, self.client.log_spans, self.experiment_id, spans)
            except Exception as error:
                transient, _ = _classify(error)
                if transient or len(group) == 1 or isinstance(error, _Expired):
                    for payload in group:
                        errors[payload.item[0].trace_key] = (payload.item, error)
                    continue
                # The server takes a multi-trace request all-or-nothing: find the culprit.
                for payload in group:
                    try:
                        self._call(
                            deadline, self.client.log_spans, self.experiment_id, payload.spans
                        )
                    except Exception as single_error:
                        errors[payload.item[0].trace_key] = (payload.item, single_error)
                    else:
                        landed.append(payload)
                continue
            landed.extend(group)
        return landed

    def _chunks(self, payloads: Iterable[TracePayload]) -> Iterator[list[TracePayload]]:
        """Group whole traces into requests within the span-count and size caps.

        A trace is never split across requests, so a failed request leaves each trace
        either fully sent or to be sent again.
        """
        group: list[TracePayload] = []
        count = size = 0
        for payload in payloads:
            n = len(payload.spans)
            if group and (
                count + n > self.max_spans_per_request
                or size + payload.bytes > self.max_request_bytes
            ):
                yield group
                group, count, size = [], 0, 0
            group.append(payload)
            count += n
            size += payload.bytes
        if group:
            yield group

    def _send_missing_feedback(self, deadline: _Deadline, payload: TracePayload) -> int:
        """Send, one request each, the assessments the store did not take with the trace.

        The trace's stored assessments are read first: an assessment id that is already
        there (an earlier send of the same trace) is not sent again, since creating it
        twice is a constraint error that the REST client would retry for minutes.

        Returns:
            How many assessments were sent.
        """
        if not payload.missing_feedback:
            return 0
        stored = self._call(deadline, self.client.get_trace_info, payload.trace_id)
        present = {a.assessment_id for a in getattr(stored, "assessments", None) or ()}
        sent = 0
        for feedback in payload.missing_feedback:
            if feedback.assessment_id in present:
                continue
            self._call(deadline, self.client.log_assessment, payload.trace_id, feedback)
            sent += 1
        return sent

    def _call(self, deadline: _Deadline, fn: Callable[..., Any], *args: Any) -> Any:
        """One request with bounded retries of transient failures."""
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            if deadline.expired():
                raise _Expired("the send deadline passed before the request was made")
            try:
                with self._count_lock:
                    self.counts["requests"] += 1
                return fn(*args)
            except Exception as error:
                if _server_version_unknown(error):
                    _forget_server_version()
                transient, kind = _classify(error)
                if not transient or attempt == self.max_attempts:
                    raise
                left = deadline.left()
                wait = delay if left is None else min(delay, max(0.0, left))
                logger.debug(
                    "inspect-mlflow: %s failed (%s), attempt %d of %d; retrying in %.1fs",
                    getattr(fn, "__name__", "request"),
                    kind,
                    attempt,
                    self.max_attempts,
                    wait,
                )
                time.sleep(wait)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(
        self, errors: Mapping[str, tuple[tuple[LogTrace, str], BaseException]]
    ) -> TraceSendError:
        judged = [
            (e, *((True, _Expired.kind) if isinstance(e, _Expired) else _classify(e)))
            for _, e in errors.values()
        ]
        transient = all(t for _, t, _ in judged)
        # The error that decides: the first refusal, or the first failure when all are
        # transient; its code is the one the raised exception carries.
        first, _, kind = next((j for j in judged if not j[1]), judged[0])
        failure = TraceSendError(
            f"{len(errors)} trace(s) did not land in MLflow ({kind}): {reason(first)}",
            failed=[item for item, _ in errors.values()],
            transient=transient,
            kind=kind,
            errors={key: reason(e) for key, (_, e) in errors.items()},
        )
        failure.__cause__ = first
        return failure
