"""Send ``LogTrace`` operations to MLflow: one trace per sample, its spans, its feedback.

Why this module exists: MLflow's fluent tracing API (and ``MlflowClient.start_trace``)
exports through a process-wide tracer to the process-wide tracking URI, so a trace made
that way can land in the wrong store. Here every call goes through
:class:`mlflow.tracing.client.TracingClient` built with an explicit tracking URI, and the
spans are built as finished MLflow :class:`~mlflow.entities.Span` objects with the real
start and end times of the events they stand for. Nothing reads or changes MLflow's
process-wide state.

What one trace becomes (in this order, so a trace exists before anything refers to it):

1. ``start_trace(TraceInfo)``: the trace's identity, times, state, request/response
   previews, metadata (``mlflow.sourceRun`` links it to its run, which puts it in that
   run's Traces tab), tags, aggregated token usage, and its assessments. The MLflow
   tracking store (sqlite/SQL and the ``mlflow server`` REST API) stores assessments that
   come with the ``TraceInfo`` in the same transaction, so a trace and its feedback land
   together in one request. Assessments the store did not keep (another backend) are
   sent one by one with ``log_assessment`` afterwards.
2. ``log_spans(experiment_id, spans)``: the root span and the child spans of every trace
   of the batch, as few requests as the size limits allow (the SQL store and the
   server's OTLP endpoint both take spans of several traces in one call).

Identity is deterministic, so a batch that is sent twice (a retry, a spool replay) updates
what is there instead of duplicating it: the trace id is ``tr-`` + 32 hex digits of a hash
of (MLflow run id, trace key) (the format the server derives from an OTLP trace id), span
ids are hashes of (trace key, span id), assessment ids hashes of (trace id, position, name).

Threading: a sender is driven by one thread (the writer's) and keeps no shared state
besides its lazily built client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import (
    Assessment,
    AssessmentSource,
    Expectation,
    Feedback,
    Span,
    TraceInfo,
    TraceLocation,
    TraceState,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE, ErrorCode
from mlflow.tracing.client import TracingClient
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status, StatusCode

from inspect_mlflow._operations import ExpectationData, FeedbackData, LogTrace, SpanData

logger = logging.getLogger(__name__)

__all__ = [
    "TraceSendError",
    "TraceSender",
    "assessment_id_for",
    "build_trace",
    "span_id_for",
    "trace_id_for",
]

# MLflow's reserved keys (mlflow.tracing.constant), spelled out so a rename in MLflow
# shows up as a failing test rather than as a silent import of a moved name.
SOURCE_RUN = "mlflow.sourceRun"
SCHEMA_VERSION = "mlflow.trace_schema.version"
TRACE_TOKEN_USAGE = "mlflow.trace.tokenUsage"
TRACE_COST = "mlflow.trace.cost"
TRACE_NAME = "mlflow.traceName"
ASSESSMENT_SOURCE_RUN = "mlflow.assessment.sourceRunId"
SPAN_REQUEST_ID = "mlflow.traceRequestId"
SPAN_TYPE = "mlflow.spanType"
SPAN_INPUTS = "mlflow.spanInputs"
SPAN_OUTPUTS = "mlflow.spanOutputs"
TOKEN_USAGE = "mlflow.chat.tokenUsage"
LLM_COST = "mlflow.llm.cost"

DROPPED_SPANS = "inspect_mlflow.droppedSpans"
"""Trace metadata key: how many child spans ``max_spans_per_trace`` left out."""

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
"""Keys MLflow reads in ``mlflow.chat.tokenUsage`` (the first three are always summed)."""

COST_KEYS = ("input_cost", "output_cost", "total_cost")
"""Keys MLflow reads in ``mlflow.llm.cost`` (US dollars)."""

TRUNCATION_MARKER = "...[truncated]"
PREVIEW_CHARS = 1000
"""MLflow's own request/response preview length for non-Databricks stores."""
MAX_METADATA_CHARS = 250
"""Trace metadata values every MLflow backend keeps in full."""
MAX_TAG_CHARS = 4096
"""Trace tag values every MLflow backend keeps in full."""
MAX_ASSESSMENT_NAME_CHARS = 250
ROOT_SPAN_TYPE = "CHAIN"


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


# -- deterministic identities ---------------------------------------------------------


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


def trace_id_for(trace_key: str, run_id: str) -> str:
    """The MLflow trace id of a trace of a run: ``tr-`` and 32 hex digits.

    Trace ids are unique in a whole tracking store, so the id depends on the MLflow run
    as well as the trace key: the same sample logged to a second run (an import into
    another experiment, ``--force``) gets a trace of its own, while a resend to the same
    run (a retry, a replayed spool) updates the one it already has. It is also the
    OpenTelemetry trace id in hex, which is what the server derives the MLflow id from
    when spans arrive over OTLP, so both paths agree.

    Example: ``trace_id_for("3kB9...", "a1b2...")`` gives ``"tr-5f0c..."`` (32 hex
    digits), the same on every call and in every process.
    """
    value = int.from_bytes(_digest("trace", run_id, trace_key)[:16], "big") or 1  # 0 is invalid
    return f"tr-{value:032x}"


def span_id_for(trace_key: str, span_key: str) -> int:
    """A stable, non-zero 64-bit OpenTelemetry span id for a span of a trace."""
    value = int.from_bytes(_digest("span", trace_key, span_key)[:8], "big")
    return value or 1


def assessment_id_for(trace_id: str, position: int, name: str) -> str:
    """A stable assessment id (``a-`` and 32 hex digits), so a resend updates, not adds."""
    return "a-" + _digest("assessment", trace_id, str(position), name)[:16].hex()


# -- value shaping --------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON-like value with NaN and infinities as text (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dump(value: Any) -> str:
    # Nearly every value is finite: dump it as it is, and only when JSON refuses a NaN or
    # an infinity (or a key) walk it with _finite, instead of copying every value first.
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except (ValueError, TypeError):
        return json.dumps(_finite(value), ensure_ascii=False, default=str)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(TRUNCATION_MARKER))
    return text[:keep] + TRUNCATION_MARKER


def _attribute(value: Any, limit: int) -> str:
    """A span attribute as MLflow stores it: JSON text of the value.

    A value whose JSON is longer than ``limit`` becomes a JSON *string* holding the cut
    JSON text and a marker, so the attribute stays valid JSON and the UI shows the start.
    """
    text = _dump(value)
    if len(text) <= limit:
        return text
    return json.dumps(_cut(text, limit), ensure_ascii=False)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else _dump(value)


def _message_text(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        joined = "\n".join(t for t in texts if isinstance(t, str))
        return joined or None
    return None


def _preview(value: Any, role: str) -> str | None:
    """Request/response preview: the last ``role`` message of a chat, else the JSON text."""
    if value is None:
        return None
    messages = value.get("messages") if isinstance(value, dict) else value
    if isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages):
        chosen = [m for m in messages if m.get("role") == role] or messages
        text = _message_text(chosen[-1])
        if text:
            return _cut(text, PREVIEW_CHARS)
    return _cut(_as_text(value), PREVIEW_CHARS)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _token_usage(value: Any) -> dict[str, int] | None:
    """``mlflow.chat.tokenUsage`` with only integer counts under MLflow's keys."""
    if not isinstance(value, dict):
        return None
    usage = {k: int(n) for k in TOKEN_KEYS if (n := _number(value.get(k))) is not None}
    if not usage:
        return None
    for key in TOKEN_KEYS[:3]:
        usage.setdefault(key, 0)
    if usage["total_tokens"] == 0:
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return usage


def _cost(value: Any) -> dict[str, float] | None:
    """``mlflow.llm.cost``; a bare number is the total cost."""
    if (number := _number(value)) is not None:
        return {"total_cost": float(number)}
    if not isinstance(value, dict):
        return None
    cost = {k: float(n) for k in COST_KEYS if (n := _number(value.get(k))) is not None}
    return cost or None


_ATTRIBUTE_SHAPERS: dict[str, Callable[[Any], Any]] = {TOKEN_USAGE: _token_usage, LLM_COST: _cost}
"""Attributes MLflow aggregates: reshaped so its sums never meet a null or a string."""


# -- building -------------------------------------------------------------------------


@dataclass(slots=True)
class TracePayload:
    """Everything one trace sends: built first, so a bad value fails before any I/O."""

    item: tuple[LogTrace, str]
    trace_id: str
    info: TraceInfo
    spans: list[Span]
    feedback: list[Assessment]
    """Every assessment of the trace: its feedback, then its expectations."""
    dropped_spans: int = 0
    bytes: int = 0
    """Rough size of the spans' attributes, for request chunking."""
    missing_feedback: list[Assessment] = field(default_factory=list)


def _readable_span(
    *,
    trace_id: str,
    otel_trace_id: int,
    span_id: int,
    parent_id: int | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: dict[str, str],
    error: str | None,
    status: str,
    exception: Mapping[str, str] | None = None,
) -> Span:
    context = otel_trace.SpanContext(trace_id=otel_trace_id, span_id=span_id, is_remote=False)
    parent = (
        otel_trace.SpanContext(trace_id=otel_trace_id, span_id=parent_id, is_remote=False)
        if parent_id is not None
        else None
    )
    attributes = {SPAN_REQUEST_ID: json.dumps(trace_id), **attributes}
    if status == "ERROR":
        otel_status = Status(StatusCode.ERROR, error or None)
    else:
        otel_status = Status(StatusCode.OK)
    events = []
    if exception:
        # OpenTelemetry's exception event: MLflow's span view shows it under Events.
        events.append(
            Event(
                "exception",
                {f"exception.{k}": str(v) for k, v in exception.items() if v is not None},
                timestamp=max(end_ns, start_ns),
            )
        )
    readable = ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=Resource.get_empty(),
        attributes=attributes,
        start_time=start_ns,
        end_time=max(end_ns, start_ns),
        status=otel_status,
        events=events,
    )
    return Span(readable)


def _span_attributes(
    span_type: str, inputs: Any, outputs: Any, extra: Mapping[str, Any], limit: int
) -> dict[str, str]:
    attributes: dict[str, str] = {SPAN_TYPE: json.dumps(span_type)}
    if inputs is not None:
        attributes[SPAN_INPUTS] = _attribute(inputs, limit)
    if outputs is not None:
        attributes[SPAN_OUTPUTS] = _attribute(outputs, limit)
    for key, value in extra.items():
        if key in (SPAN_REQUEST_ID, SPAN_TYPE, SPAN_INPUTS, SPAN_OUTPUTS):
            continue  # the sender owns these
        shaper = _ATTRIBUTE_SHAPERS.get(key)
        if shaper is not None:
            value = shaper(value)
        if value is None:
            continue
        attributes[str(key)] = _attribute(value, limit)
    return attributes


def _unique(spans: Sequence[SpanData]) -> list[SpanData]:
    """First occurrence of each span id (a span reported twice is one span)."""
    seen: set[str] = set()
    unique: list[SpanData] = []
    for span in spans:
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        unique.append(span)
    return unique


def _select_spans(unique: Sequence[SpanData], max_children: int) -> tuple[list[SpanData], int]:
    """At most ``max_children`` spans: the structure, the start and the end; the middle goes.

    A long agent sample matters most at its two ends: how it started, and its final
    answer and scoring. So the spans that hold others (solvers, scorers, agents) are all
    kept while they fit in half the budget, and of the rest the earliest half and the
    latest half, by start time; what is dropped is the middle. When the structure alone
    is too large, the earliest and latest spans of all are kept instead.

    Returns:
        The kept spans in start-time order, and how many were dropped.
    """
    if len(unique) <= max_children:
        return list(unique), 0
    order = sorted(range(len(unique)), key=lambda i: (unique[i].start_time_ns, i))
    ids = {s.span_id for s in unique}
    holders = {s.parent_id for s in unique if s.parent_id in ids and s.parent_id != s.span_id}
    structure = [i for i in order if unique[i].span_id in holders]
    if len(structure) > max_children // 2:
        structure = []
    kept = set(structure)
    rest = [i for i in order if i not in kept]
    room = max_children - len(kept)
    head = room // 2
    kept.update(rest[:head])
    kept.update(rest[len(rest) - (room - head) :] if room - head else ())
    chosen = [unique[i] for i in order if i in kept]
    return chosen, len(unique) - len(chosen)


def _parents(
    spans: Sequence[SpanData], known: Sequence[SpanData] | None = None
) -> dict[str, str | None]:
    """Each span's parent id among ``spans``, or None for the root.

    A parent left out by the cap is replaced by its nearest ancestor that was kept (the
    parent links of ``known``, all spans before the cap, are followed up), so a kept span
    keeps its place in the tree instead of pointing at a missing id. A parent that is not
    known at all (never reported) and a parent chain that loops back on itself both
    become the root, so every span shows up in the trace's tree.
    """
    links: dict[str, str | None] = {
        s.span_id: s.parent_id if s.parent_id != s.span_id else None for s in known or spans
    }
    parents: dict[str, str | None] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id != span.span_id else None
        parents[span.span_id] = parent
    for span_id, parent in parents.items():
        seen: set[str] = set()
        while parent is not None and parent not in parents and parent not in seen:
            seen.add(parent)
            parent = links.get(parent)
        parents[span_id] = parent if parent in parents else None
    reaches_root: set[str] = set()
    for span_id in parents:
        path: list[str] = []
        current: str | None = span_id
        while current is not None and current not in reaches_root and current not in path:
            path.append(current)
            current = parents[current]
        if current is not None and current not in reaches_root:
            parents[current] = None  # break the loop where it closed
        reaches_root.update(path)
    return parents


def _aggregate(spans: Sequence[SpanData], key: str, parents: Mapping[str, str | None]) -> Any:
    """Sum an aggregated attribute over spans whose ancestors do not carry it (as MLflow)."""
    shaper = _ATTRIBUTE_SHAPERS[key]
    values = {s.span_id: shaper(s.attributes.get(key)) for s in spans}
    total: dict[str, float] = {}
    for span_id, value in values.items():
        if not value:
            continue
        ancestor = parents.get(span_id)
        covered = False
        while ancestor is not None:
            if values.get(ancestor):
                covered = True
                break
            ancestor = parents.get(ancestor)
        if covered:
            continue
        for name, number in value.items():
            total[name] = total.get(name, 0) + number
    return total or None


def _one_feedback(
    op: LogTrace,
    data: FeedbackData,
    position: int,
    run_id: str,
    trace_id: str,
    root_span_id: str,
) -> Feedback:
    name = _cut(str(data.name), MAX_ASSESSMENT_NAME_CHARS)
    metadata = {str(k): _as_text(v) for k, v in data.metadata.items() if v is not None}
    metadata[ASSESSMENT_SOURCE_RUN] = run_id
    rationale = None if data.rationale is None else _as_text(data.rationale)
    feedback = Feedback(
        name=name,
        value=_finite(data.value),
        error=data.error,
        source=AssessmentSource(source_type=data.source_type, source_id=data.source_id),
        trace_id=trace_id,
        metadata=metadata,
        span_id=root_span_id,
        rationale=rationale,
    )
    feedback.assessment_id = assessment_id_for(trace_id, position, name)
    return feedback


def _one_expectation(
    data: ExpectationData, position: int, run_id: str, trace_id: str, root_span_id: str
) -> Expectation:
    """The ground truth as an ``Expectation``, riding in ``start_trace`` like feedback."""
    name = _cut(str(data.name), MAX_ASSESSMENT_NAME_CHARS)
    metadata = {str(k): _as_text(v) for k, v in data.metadata.items() if v is not None}
    metadata[ASSESSMENT_SOURCE_RUN] = run_id
    expectation = Expectation(
        name=name,
        value=_finite(data.value),
        source=AssessmentSource(source_type=data.source_type, source_id=data.source_id),
        trace_id=trace_id,
        metadata=metadata,
        span_id=root_span_id,
    )
    # Its own id space: a scorer added later (feedback appended) keeps the ids stable.
    expectation.assessment_id = assessment_id_for(trace_id, position, f"expectation:{name}")
    return expectation


def build_trace(
    op: LogTrace,
    run_id: str,
    experiment_id: str,
    *,
    max_spans_per_trace: int = 1000,
    max_attribute_chars: int = 50_000,
) -> TracePayload:
    """Turn one ``LogTrace`` into the MLflow objects that represent it (no I/O).

    Args:
        op: The trace operation (owned by the caller, not modified).
        run_id: MLflow run id the trace belongs to (``mlflow.sourceRun``).
        experiment_id: Experiment that stores the trace.
        max_spans_per_trace: Cap on spans, root included; the structure and the first
            and last child spans are kept (the middle is left out, see
            :func:`_select_spans`) and the number left out is recorded in trace metadata.
            Token usage and cost count every span, kept or not.
        max_attribute_chars: Cap on the JSON text of each span attribute.

    Returns:
        The payload: ``TraceInfo`` (with assessments), spans (root first), assessments.
    """
    trace_id = trace_id_for(op.trace_key, run_id)
    otel_trace_id = int(trace_id[3:], 16)
    root_id = span_id_for(op.trace_key, "\x00root")
    start_ns = int(op.start_time_ns)
    end_ns = max(int(op.end_time_ns), start_ns)

    every = _unique(op.spans)
    children, dropped = _select_spans(every, max(0, max_spans_per_trace - 1))
    parents = _parents(children, every)
    numeric_ids = {s.span_id: span_id_for(op.trace_key, s.span_id) for s in children}

    root_attributes = _span_attributes(
        ROOT_SPAN_TYPE, op.inputs, op.outputs, {}, max_attribute_chars
    )
    spans = [
        _readable_span(
            trace_id=trace_id,
            otel_trace_id=otel_trace_id,
            span_id=root_id,
            parent_id=None,
            name=str(op.name),
            start_ns=start_ns,
            end_ns=end_ns,
            attributes=root_attributes,
            error=None,
            status=op.status,
        )
    ]
    size = sum(len(v) for v in root_attributes.values())
    for child in children:
        attributes = _span_attributes(
            child.span_type or "UNKNOWN",
            child.inputs,
            child.outputs,
            child.attributes,
            max_attribute_chars,
        )
        size += sum(len(v) for v in attributes.values()) + 200
        parent = parents[child.span_id]
        child_start = int(child.start_time_ns)
        child_end = child_start if child.end_time_ns is None else int(child.end_time_ns)
        spans.append(
            _readable_span(
                trace_id=trace_id,
                otel_trace_id=otel_trace_id,
                span_id=numeric_ids[child.span_id],
                parent_id=root_id if parent is None else numeric_ids[parent],
                name=str(child.name),
                start_ns=child_start,
                end_ns=child_end,
                attributes=attributes,
                error=child.error,
                status=child.status,
                exception=child.exception,
            )
        )

    metadata = {
        str(k): _cut(_as_text(v), MAX_METADATA_CHARS)
        for k, v in op.metadata.items()
        if v is not None
    }
    metadata[SOURCE_RUN] = run_id
    metadata[SCHEMA_VERSION] = "3"
    # The trace's totals count every model call, the ones the cap left out included: the
    # store takes these values from start_trace as final and does not re-add the spans'.
    all_parents = parents if not dropped else _parents(every)
    if (usage := _aggregate(every, TOKEN_USAGE, all_parents)) is not None:
        metadata[TRACE_TOKEN_USAGE] = json.dumps({k: int(v) for k, v in usage.items()})
    if (cost := _aggregate(every, LLM_COST, all_parents)) is not None:
        metadata[TRACE_COST] = json.dumps(cost)
    if dropped:
        metadata[DROPPED_SPANS] = str(dropped)
    tags = {str(k): _cut(_as_text(v), MAX_TAG_CHARS) for k, v in op.tags.items() if v is not None}
    tags[TRACE_NAME] = _cut(str(op.name), MAX_TAG_CHARS)

    root_hex = f"{root_id:016x}"
    feedback: list[Assessment] = [
        _one_feedback(op, data, position, run_id, trace_id, root_hex)
        for position, data in enumerate(op.feedback)
    ]
    feedback.extend(
        _one_expectation(data, position, run_id, trace_id, root_hex)
        for position, data in enumerate(op.expectations)
    )
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start_ns // 1_000_000,
        execution_duration=(end_ns - start_ns) // 1_000_000,
        state=TraceState.ERROR if op.status == "ERROR" else TraceState.OK,
        request_preview=_preview(op.inputs, "user"),
        response_preview=_preview(op.outputs, "assistant"),
        trace_metadata=metadata,
        tags=tags,
        assessments=list(feedback),
    )
    return TracePayload(
        item=(op, run_id),
        trace_id=trace_id,
        info=info,
        spans=spans,
        feedback=feedback,
        dropped_spans=dropped,
        bytes=size,
    )


# -- sending --------------------------------------------------------------------------


def _classify(error: BaseException) -> tuple[bool, str]:
    # The sink's classification, so the sender and the sink agree on what is transient.
    if _server_version_unknown(error):
        return True, "server_version_unknown"
    from inspect_mlflow._writer.mlflow_sink import classify

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


def _reason(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text)[:500]


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
            :func:`~inspect_mlflow._writer.mlflow_sink.parallel_requests`). Local stores
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

    def close(self) -> None:
        """Drop the client and the request threads; a later ``send`` builds new ones."""
        self._client = None
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
        for payload, (returned, error) in zip(payloads, results, strict=True):
            if error is not None:
                errors[payload.item[0].trace_key] = (payload.item, error)
                continue
            kept = {a.assessment_id for a in getattr(returned, "assessments", None) or ()}
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
    ) -> list[tuple[Any, BaseException | None]]:
        """``start_trace`` for each payload, side by side over HTTP; results in order."""
        client = self.client

        def start(payload: TracePayload) -> tuple[Any, BaseException | None]:
            try:
                return self._call(deadline, client.start_trace, payload.info), None
            except Exception as error:
                return None, error

        if self.max_parallel_requests == 1 or len(payloads) < 2:
            return [start(payload) for payload in payloads]
        if self._pool is None or self._pool_pid != os.getpid():  # none yet, or forked
            from inspect_mlflow._writer.mlflow_sink import parallel_requests

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
            f"{len(errors)} trace(s) did not land in MLflow ({kind}): {_reason(first)}",
            failed=[item for item, _ in errors.values()],
            transient=transient,
            kind=kind,
            errors={key: _reason(e) for key, (_, e) in errors.items()},
        )
        failure.__cause__ = first
        return failure
