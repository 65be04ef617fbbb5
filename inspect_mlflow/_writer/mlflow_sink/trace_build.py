"""Build the MLflow objects of one trace from a ``LogTrace`` operation: pure, no I/O.

The spans are built as finished MLflow :class:`~mlflow.entities.Span` objects with the
real start and end times of the events they stand for, under one root span for the
sample; feedback and expectations become assessments on the root. Everything is built
before anything is sent, so a value MLflow's entities refuse fails its trace before a
request goes out. A long sample keeps its structure, its start and its end when
``max_spans_per_trace`` leaves spans out (:func:`build_trace`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status, StatusCode

from inspect_mlflow._keys import MAX_TAG_CHARS, finite, truncate_text
from inspect_mlflow._operations import ExpectationData, FeedbackData, LogTrace, SpanData
from inspect_mlflow._writer.mlflow_sink.trace_values import (
    ASSESSMENT_SOURCE_RUN,
    ATTRIBUTE_SHAPERS,
    DROPPED_SPANS,
    LLM_COST,
    MAX_ASSESSMENT_NAME_CHARS,
    MAX_METADATA_CHARS,
    ROOT_SPAN_TYPE,
    SCHEMA_VERSION,
    SOURCE_RUN,
    SPAN_INPUTS,
    SPAN_OUTPUTS,
    SPAN_REQUEST_ID,
    SPAN_TYPE,
    TOKEN_USAGE,
    TRACE_COST,
    TRACE_NAME,
    TRACE_TOKEN_USAGE,
    as_text,
    assessment_id_for,
    attribute,
    preview,
    span_id_for,
    trace_id_for,
)

__all__ = ["TracePayload", "build_trace"]


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
        attributes[SPAN_INPUTS] = attribute(inputs, limit)
    if outputs is not None:
        attributes[SPAN_OUTPUTS] = attribute(outputs, limit)
    for key, value in extra.items():
        if key in (SPAN_REQUEST_ID, SPAN_TYPE, SPAN_INPUTS, SPAN_OUTPUTS):
            continue  # the sender owns these
        shaper = ATTRIBUTE_SHAPERS.get(key)
        if shaper is not None:
            value = shaper(value)
        if value is None:
            continue
        attributes[str(key)] = attribute(value, limit)
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
    shaper = ATTRIBUTE_SHAPERS[key]
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
    name = truncate_text(str(data.name), MAX_ASSESSMENT_NAME_CHARS)
    metadata = {str(k): as_text(v) for k, v in data.metadata.items() if v is not None}
    metadata[ASSESSMENT_SOURCE_RUN] = run_id
    rationale = None if data.rationale is None else as_text(data.rationale)
    feedback = Feedback(
        name=name,
        value=finite(data.value, as_text=True),
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
    name = truncate_text(str(data.name), MAX_ASSESSMENT_NAME_CHARS)
    metadata = {str(k): as_text(v) for k, v in data.metadata.items() if v is not None}
    metadata[ASSESSMENT_SOURCE_RUN] = run_id
    expectation = Expectation(
        name=name,
        value=finite(data.value, as_text=True),
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
        str(k): truncate_text(as_text(v), MAX_METADATA_CHARS)
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
    tags = {
        str(k): truncate_text(as_text(v), MAX_TAG_CHARS)
        for k, v in op.tags.items()
        if v is not None
    }
    tags[TRACE_NAME] = truncate_text(str(op.name), MAX_TAG_CHARS)

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
        request_preview=preview(op.inputs, "user"),
        response_preview=preview(op.outputs, "assistant"),
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
