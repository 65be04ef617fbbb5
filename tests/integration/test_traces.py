"""The trace sender against real MLflow stores (a sqlite file and a real `mlflow server`).

What must hold: one trace per ``LogTrace``, linked to its run (found by
``search_traces(run_id=...)``), with the spans and their real durations, and every
feedback item as an assessment with the right name, value, rationale and source; a
resend never duplicates; what fails is reported with the items to retry.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest

from inspect_mlflow._operations import FeedbackData, LogTrace, SpanData
from inspect_mlflow._writer.mlflow_sink import classify
from inspect_mlflow._writer.mlflow_sink.trace_build import build_trace
from inspect_mlflow._writer.mlflow_sink.trace_send import TraceSender, TraceSendError
from inspect_mlflow._writer.mlflow_sink.trace_values import DROPPED_SPANS, span_id_for, trace_id_for

MS = 1_000_000
TOLERANCE_NS = 10 * MS


def make_trace(
    key: str,
    *,
    run: str = "task:t",
    t0: int | None = None,
    scorers: int = 2,
    tool_calls: int = 1,
    string_score: bool = True,
) -> LogTrace:
    """A sample-like trace: solver span > model calls and tool calls, plus scores."""
    t0 = t0 if t0 is not None else time.time_ns() - 10_000 * MS
    spans = [SpanData("solver", None, "generate", "CHAIN", t0 + 1 * MS, t0 + 90 * MS)]
    at = t0 + 2 * MS
    for i in range(tool_calls + 1):
        spans.append(
            SpanData(
                f"model-{i}",
                "solver",
                "mockllm/model",
                "LLM",
                at,
                at + (7 + i) * MS,
                inputs={"messages": [{"role": "user", "content": f"q{i}"}]},
                outputs={"choices": [{"message": {"role": "assistant", "content": "5"}}]},
                attributes={
                    "mlflow.chat.tokenUsage": {
                        "input_tokens": 10,
                        "output_tokens": 5,
                        "total_tokens": 15,
                        "cache_read_input_tokens": None,
                    },
                    "mlflow.llm.model": "mockllm/model",
                    "mlflow.llm.cost": None,
                },
            )
        )
        at += 10 * MS
        if i < tool_calls:
            spans.append(
                SpanData(
                    f"tool-{i}",
                    "solver",
                    "add",
                    "TOOL",
                    at,
                    at + 13 * MS,
                    inputs={"x": 2, "y": 3},
                    outputs="5",
                )
            )
            at += 15 * MS
    feedback = [
        FeedbackData(
            f"scorer_{s}",
            s + 0.5,
            rationale=f"because {s}",
            metadata={"sample_id": key, "epoch": "1"},
        )
        for s in range(scorers - (1 if string_score else 0))
    ]
    if string_score:
        feedback.append(FeedbackData("verdict", "great", rationale="a string score"))
    return LogTrace(
        run=run,
        trace_key=key,
        name=f"{key}#1",
        start_time_ns=t0,
        end_time_ns=t0 + 100 * MS,
        inputs="what is 2+3",
        outputs="5",
        tags={"inspect.sample_id": key},
        metadata={"inspect.epoch": "1"},
        spans=tuple(spans),
        feedback=tuple(feedback),
    )


def traces_of(store: Any, experiment_id: str, run_id: str) -> list[Any]:
    from mlflow.tracing.client import TracingClient

    found = TracingClient(store.tracking_uri).search_traces(
        locations=[experiment_id], run_id=run_id, max_results=500
    )
    return list(found)


def new_run(store: Any) -> tuple[str, str]:
    client = store.client()
    experiment_id = store.create_experiment()
    return experiment_id, client.create_run(experiment_id).info.run_id


# -- building (no store) ---------------------------------------------------------------


def test_ids_are_deterministic_and_in_mlflow_format() -> None:
    first, again, other = trace_id_for("k", "r"), trace_id_for("k", "r"), trace_id_for("k2", "r")
    assert first == again != other
    assert trace_id_for("k", "another run") != first  # trace ids are unique in a store
    assert first.startswith("tr-") and len(first) == 35 and int(first[3:], 16) > 0
    assert span_id_for("k", "a") == span_id_for("k", "a") != span_id_for("k2", "a")


def test_build_links_run_sets_times_and_shapes_usage() -> None:
    op = make_trace("s1", t0=1_700_000_000_000 * MS, tool_calls=2)
    payload = build_trace(op, "run123", "7")
    info = payload.info
    assert info.trace_id == trace_id_for("s1", "run123")
    assert info.trace_metadata["mlflow.sourceRun"] == "run123"
    assert info.request_time == 1_700_000_000_000 and info.execution_duration == 100
    assert info.tags["mlflow.traceName"] == "s1#1" and info.tags["inspect.sample_id"] == "s1"
    # 3 model calls of 10/5/15 tokens, aggregated as MLflow does.
    assert json.loads(info.trace_metadata["mlflow.trace.tokenUsage"]) == {
        "input_tokens": 30,
        "output_tokens": 15,
        "total_tokens": 45,
    }
    assert "mlflow.trace.cost" not in info.trace_metadata  # absent, not zero
    llm = [s for s in payload.spans if s.span_type == "LLM"]
    assert len(llm) == 3
    # Null keys are dropped from the usage attribute, a null cost is not written at all.
    assert llm[0].attributes["mlflow.chat.tokenUsage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
    }
    assert "mlflow.llm.cost" not in llm[0].attributes
    assert all(a.metadata["mlflow.assessment.sourceRunId"] == "run123" for a in info.assessments)
    assert {a.span_id for a in info.assessments} == {payload.spans[0].span_id}


def test_missing_parent_and_cycles_hang_under_the_root() -> None:
    t0 = 1_000 * MS
    op = LogTrace(
        run="r",
        trace_key="k",
        name="root",
        start_time_ns=t0,
        end_time_ns=t0 + 50 * MS,
        spans=(
            SpanData("a", "gone", "orphan", "CHAIN", t0, t0 + MS),
            SpanData("b", "c", "loop-b", "CHAIN", t0, t0 + MS),
            SpanData("c", "b", "loop-c", "CHAIN", t0, t0 + MS),
            SpanData("d", "d", "self", "CHAIN", t0, t0 + MS),
            SpanData("e", "a", "child", "CHAIN", t0, t0 + MS),
            SpanData("e", "a", "duplicate", "CHAIN", t0, t0 + MS),
        ),
    )
    spans = build_trace(op, "run", "1").spans
    root = spans[0]
    by_name = {s.name: s for s in spans}
    assert "duplicate" not in by_name and len(spans) == 6
    assert by_name["orphan"].parent_id == root.span_id
    assert by_name["self"].parent_id == root.span_id
    assert by_name["child"].parent_id == by_name["orphan"].span_id
    # The loop is broken in one place: one of b/c hangs under the root, the other under it.
    loop = {by_name["loop-b"].parent_id, by_name["loop-c"].parent_id}
    assert root.span_id in loop and len(loop) == 2


def test_caps_cut_spans_and_long_attributes_into_valid_json() -> None:
    t0 = 1_000 * MS
    spans = tuple(
        SpanData(
            f"s{i}", None, f"span{i}", "LLM", t0 + i * MS, t0 + (i + 1) * MS, inputs="x" * 5000
        )
        for i in range(10)
    )
    op = LogTrace(
        run="r", trace_key="k", name="root", start_time_ns=t0, end_time_ns=t0, spans=spans
    )
    payload = build_trace(op, "run", "1", max_spans_per_trace=4, max_attribute_chars=1000)
    # The start and the end are kept, the middle is dropped.
    assert [s.name for s in payload.spans] == ["root", "span0", "span8", "span9"]
    assert payload.info.trace_metadata[DROPPED_SPANS] == "7"
    raw = payload.spans[1]._span.attributes["mlflow.spanInputs"]
    value = json.loads(raw)  # still JSON
    assert len(value) <= 1000 and value.endswith("...[truncated]")


def test_non_finite_scores_and_chat_previews() -> None:
    op = LogTrace(
        run="r",
        trace_key="k",
        name="root",
        start_time_ns=0,
        end_time_ns=1,
        inputs=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello?"}],
        outputs={"messages": [{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]},
        feedback=(FeedbackData("nan", math.nan), FeedbackData("obj", {"a": [1, math.inf]})),
    )
    info = build_trace(op, "run", "1").info
    assert info.request_preview == "hello?" and info.response_preview == "hi"
    values = {a.name: a.value for a in info.assessments}
    assert values == {"nan": "nan", "obj": {"a": [1, "inf"]}}


def test_span_attributes_are_json_with_non_finite_numbers_as_text() -> None:
    span = SpanData("s", None, "call", "LLM", 0, 1, inputs={"t": -math.inf, "ok": [1.5, "é"]})
    op = LogTrace(
        run="r", trace_key="k", name="root", start_time_ns=0, end_time_ns=1, spans=(span,)
    )
    payload = build_trace(op, "run", "1")
    attributes = payload.spans[1]._span.attributes
    assert json.loads(attributes["mlflow.spanInputs"]) == {"t": "-inf", "ok": [1.5, "é"]}
    assert "é" in attributes["mlflow.spanInputs"]  # text stays readable, not \u-escaped


def test_constructor_refuses_impossible_options() -> None:
    with pytest.raises(ValueError, match="max_spans_per_trace"):
        TraceSender("sqlite:///x.db", "1", max_spans_per_trace=0)
    with pytest.raises(ValueError, match="max_attempts"):
        TraceSender("sqlite:///x.db", "1", max_attempts=0)


# -- real stores -----------------------------------------------------------------------


def test_every_sample_and_score_lands_once(mlflow_store: Any) -> None:
    experiment_id, run_id = new_run(mlflow_store)
    n_samples, n_scorers = 4, 3
    ops = [make_trace(f"{uuid.uuid4().hex}", scorers=n_scorers) for _ in range(n_samples)]
    sender = TraceSender(mlflow_store.tracking_uri, experiment_id)
    sender.send([(op, run_id) for op in ops])
    sender.send([(op, run_id) for op in ops])  # a resend (retry, replay) must not duplicate

    traces = traces_of(mlflow_store, experiment_id, run_id)
    assert len(traces) == n_samples
    by_id = {t.info.trace_id: t for t in traces}
    assert set(by_id) == {trace_id_for(op.trace_key, run_id) for op in ops}
    assert sum(len(t.info.assessments) for t in traces) == n_samples * n_scorers
    for op in ops:
        trace = by_id[trace_id_for(op.trace_key, run_id)]
        info = trace.info
        assert info.state.value == "OK"
        assert info.trace_metadata["mlflow.sourceRun"] == run_id
        assert info.request_time == op.start_time_ns // MS and info.execution_duration == 100
        assert info.request_preview == "what is 2+3" and info.response_preview == "5"
        assessments = {a.name: a for a in info.assessments}
        assert set(assessments) == {f.name for f in op.feedback}
        for fb in op.feedback:
            got = assessments[fb.name]
            assert got.value == fb.value  # the string score stays a string
            assert got.rationale == fb.rationale
            assert got.source.source_type == "CODE" and got.source.source_id == "inspect_ai"
            assert got.metadata["mlflow.assessment.sourceRunId"] == run_id
            for key, value in fb.metadata.items():
                assert got.metadata[key] == value
        assert assessments["verdict"].value == "great"
        # One root plus every child; each with the duration it was given.
        spans = trace.data.spans
        assert len(spans) == len(op.spans) + 1
        wanted = {s.name + s.span_id: s for s in op.spans}
        root = next(s for s in spans if s.parent_id is None)
        assert abs((root.end_time_ns - root.start_time_ns) - 100 * MS) <= TOLERANCE_NS
        children = [s for s in spans if s.parent_id is not None]
        assert sorted(s.name for s in children) == sorted(s.name for s in op.spans)
        for got_span in children:
            match = [
                w
                for w in wanted.values()
                if w.name == got_span.name and w.start_time_ns == got_span.start_time_ns
            ]
            assert len(match) == 1
            want = match[0]
            assert abs(got_span.start_time_ns - want.start_time_ns) <= TOLERANCE_NS
            assert (
                abs(
                    (got_span.end_time_ns - got_span.start_time_ns)
                    - (want.end_time_ns - want.start_time_ns)
                )
                <= TOLERANCE_NS
            )
            assert got_span.span_type == want.span_type
        llm = [s for s in children if s.span_type == "LLM"]
        assert all(s.attributes["mlflow.chat.tokenUsage"]["total_tokens"] == 15 for s in llm)
        assert info.token_usage == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}
    assert sender.counts["traces"] == 2 * n_samples
    assert sender.counts["assessments_separate"] == 0


def test_two_runs_keep_their_own_traces(mlflow_store: Any) -> None:
    experiment_id, run_a = new_run(mlflow_store)
    run_b = mlflow_store.client().create_run(experiment_id).info.run_id
    sender = TraceSender(mlflow_store.tracking_uri, experiment_id)
    a = [make_trace(f"a-{uuid.uuid4().hex}", run="task:a") for _ in range(2)]
    b = [make_trace(f"b-{uuid.uuid4().hex}", run="task:b") for _ in range(3)]
    sender.send([(op, run_a) for op in a] + [(op, run_b) for op in b])
    got_a = {t.info.trace_id for t in traces_of(mlflow_store, experiment_id, run_a)}
    got_b = {t.info.trace_id for t in traces_of(mlflow_store, experiment_id, run_b)}
    assert got_a == {trace_id_for(op.trace_key, run_a) for op in a}
    assert got_b == {trace_id_for(op.trace_key, run_b) for op in b}


def test_error_state_and_error_spans_land(mlflow_store: Any) -> None:
    experiment_id, run_id = new_run(mlflow_store)
    t0 = time.time_ns()
    op = LogTrace(
        run="task:t",
        trace_key=uuid.uuid4().hex,
        name="failed-sample",
        start_time_ns=t0,
        end_time_ns=t0 + 20 * MS,
        status="ERROR",
        spans=(SpanData("t", None, "add", "TOOL", t0, t0 + MS, status="ERROR", error="boom"),),
        feedback=(FeedbackData("scorer", None, error="scorer crashed"),),
    )
    TraceSender(mlflow_store.tracking_uri, experiment_id).send([(op, run_id)])
    [trace] = traces_of(mlflow_store, experiment_id, run_id)
    assert trace.info.state.value == "ERROR"
    tool = next(s for s in trace.data.spans if s.name == "add")
    assert tool.status.status_code.value == "ERROR" and tool.status.description == "boom"
    [assessment] = trace.info.assessments
    assert assessment.error.error_message == "scorer crashed"


@pytest.mark.server
def test_server_requests_batch_spans_and_carry_assessments_with_the_trace(
    server_store: Any,
) -> None:
    experiment_id, run_id = new_run(server_store)
    ops = [make_trace(uuid.uuid4().hex, scorers=3) for _ in range(5)]
    offset = server_store.server.log_size()
    TraceSender(server_store.tracking_uri, experiment_id).send([(op, run_id) for op in ops])
    requests = server_store.server.requests_since(offset)
    # One StartTraceV3 per trace (assessments ride along), one OTLP request for all spans.
    assert requests[("POST", "/api/3.0/mlflow/traces")] == 5
    assert requests[("POST", "/v1/traces")] == 1
    assert not any(path.endswith("/assessments") for _, path in requests)
    assert (
        sum(len(t.info.assessments) for t in traces_of(server_store, experiment_id, run_id)) == 15
    )


def test_small_request_caps_split_spans_but_never_a_trace(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    ops = [make_trace(uuid.uuid4().hex) for _ in range(3)]  # 5 spans each with the root
    sender = TraceSender(sqlite_store.tracking_uri, experiment_id, max_spans_per_request=6)
    sender.send([(op, run_id) for op in ops])
    assert sender.counts["requests"] == 3 + 3  # 3 start_trace, 3 log_spans (one trace each)
    traces = traces_of(sqlite_store, experiment_id, run_id)
    assert sorted(len(t.data.spans) for t in traces) == [5, 5, 5]


class _Flaky:
    """A real tracing client whose first call of one method fails as a 503 would."""

    def __init__(self, uri: str, method: str, failures: int = 1) -> None:
        from mlflow.tracing.client import TracingClient

        self.real = TracingClient(uri)
        self.method = method
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.real, name)
        if name != self.method:
            return real

        def call(*args: Any) -> Any:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

            if self.failures > 0:
                self.failures -= 1
                raise MlflowException("unavailable", error_code=TEMPORARILY_UNAVAILABLE)
            return real(*args)

        return call


def test_transient_failures_are_retried(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    op = make_trace(uuid.uuid4().hex)
    client = _Flaky(sqlite_store.tracking_uri, "log_spans", failures=1)
    sender = TraceSender(sqlite_store.tracking_uri, experiment_id, backoff=0.01, client=client)
    sender.send([(op, run_id)])
    [trace] = traces_of(sqlite_store, experiment_id, run_id)
    assert len(trace.data.spans) == len(op.spans) + 1
    assert client.failures == 0 and sender.counts["requests"] == 3


def test_lasting_transient_failure_reports_items_to_retry(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    ops = [make_trace(uuid.uuid4().hex) for _ in range(2)]
    client = _Flaky(sqlite_store.tracking_uri, "log_spans", failures=10)
    sender = TraceSender(
        sqlite_store.tracking_uri, experiment_id, max_attempts=2, backoff=0.0, client=client
    )
    with pytest.raises(TraceSendError) as caught:
        sender.send([(op, run_id) for op in ops])
    assert caught.value.transient and caught.value.kind == "TEMPORARILY_UNAVAILABLE"
    assert classify(caught.value) == (True, "TEMPORARILY_UNAVAILABLE")  # the sink agrees
    assert [op for op, _ in caught.value.failed] == ops
    # Sending the reported items again, once the store is back, completes them.
    client.failures = 0
    sender.send(caught.value.failed)
    traces = traces_of(sqlite_store, experiment_id, run_id)
    assert sorted(len(t.data.spans) for t in traces) == [5, 5]


def test_a_refused_trace_does_not_block_the_others(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    good = make_trace(uuid.uuid4().hex)
    bad = LogTrace(
        run="task:t",
        trace_key=uuid.uuid4().hex,
        name="bad",
        start_time_ns=0,
        end_time_ns=1,
        feedback=(FeedbackData("x", 1, source_type="NOT_A_SOURCE"),),
    )
    sender = TraceSender(sqlite_store.tracking_uri, experiment_id)
    with pytest.raises(TraceSendError) as caught:
        sender.send([(bad, run_id), (good, run_id)])
    assert not caught.value.transient and classify(caught.value)[0] is False
    assert [op.trace_key for op, _ in caught.value.failed] == [bad.trace_key]
    [trace] = traces_of(sqlite_store, experiment_id, run_id)
    assert trace.info.trace_id == trace_id_for(good.trace_key, run_id)


def test_a_refusal_among_transient_failures_is_not_retried_blindly(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    bad = LogTrace(
        run="task:t",
        trace_key=uuid.uuid4().hex,
        name="bad",
        start_time_ns=0,
        end_time_ns=1,
        feedback=(FeedbackData("x", 1, source_type="NOT_A_SOURCE"),),
    )
    good = make_trace(uuid.uuid4().hex)
    client = _Flaky(sqlite_store.tracking_uri, "log_spans", failures=10)
    sender = TraceSender(sqlite_store.tracking_uri, experiment_id, max_attempts=1, client=client)
    with pytest.raises(TraceSendError) as caught:
        sender.send([(good, run_id), (bad, run_id)])
    assert not caught.value.transient and classify(caught.value)[0] is False
    assert caught.value.kind == "INVALID_PARAMETER_VALUE"
    assert {op.trace_key for op, _ in caught.value.failed} == {good.trace_key, bad.trace_key}


def test_unknown_experiment_is_refused_for_good(sqlite_store: Any) -> None:
    _, run_id = new_run(sqlite_store)
    sender = TraceSender(sqlite_store.tracking_uri, "987654")
    with pytest.raises(TraceSendError) as caught:
        sender.send([(make_trace(uuid.uuid4().hex), run_id)])
    assert not caught.value.transient and len(caught.value.failed) == 1


def test_expired_deadline_sends_nothing_and_says_retry(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    sender = TraceSender(sqlite_store.tracking_uri, experiment_id)
    with pytest.raises(TraceSendError) as caught:
        sender.send([(make_trace(uuid.uuid4().hex), run_id)], timeout=0)
    assert caught.value.transient and caught.value.kind == "DEADLINE_EXCEEDED"
    assert classify(caught.value) == (True, "DEADLINE_EXCEEDED")
    assert traces_of(sqlite_store, experiment_id, run_id) == []


class _NoInlineAssessments:
    """A real client in front of a store that ignores assessments sent with the trace."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracing.client import TracingClient

        self.real = TracingClient(uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def start_trace(self, info: Any) -> Any:
        import dataclasses

        return self.real.start_trace(dataclasses.replace(info, assessments=[]))


def test_assessments_fall_back_to_one_request_each(mlflow_store: Any) -> None:
    experiment_id, run_id = new_run(mlflow_store)
    ops = [make_trace(uuid.uuid4().hex, scorers=3) for _ in range(2)]
    client = _NoInlineAssessments(mlflow_store.tracking_uri)
    sender = TraceSender(mlflow_store.tracking_uri, experiment_id, client=client)
    sender.send([(op, run_id) for op in ops])
    sender.send([(op, run_id) for op in ops])  # resend: fixed ids collide, nothing is added
    assert sender.counts["assessments_separate"] == 6
    traces = traces_of(mlflow_store, experiment_id, run_id)
    assert sorted(len(t.info.assessments) for t in traces) == [3, 3]
    values = sorted(str(a.value) for t in traces for a in t.info.assessments)
    assert values.count("great") == 2


def test_trace_tags_keep_what_mlflow_keeps_of_a_tag(sqlite_store: Any) -> None:
    """A trace tag is cut where MLflow's tag limit is (8000 characters), as a run tag is."""
    experiment_id, run_id = new_run(sqlite_store)
    op = make_trace(uuid.uuid4().hex)
    op = replace(op, tags={"whole": "w" * 7000, "long": "l" * 9000})
    TraceSender(sqlite_store.tracking_uri, experiment_id).send([(op, run_id)])
    [trace] = traces_of(sqlite_store, experiment_id, run_id)
    assert trace.info.tags["whole"] == "w" * 7000
    long = trace.info.tags["long"]
    assert len(long) == 8000 and long.endswith("...[truncated]")


def test_switched_off_sender_writes_nothing(sqlite_store: Any) -> None:
    experiment_id, run_id = new_run(sqlite_store)
    TraceSender(sqlite_store.tracking_uri, experiment_id, enabled=False).send(
        [(make_trace(uuid.uuid4().hex), run_id)]
    )
    assert traces_of(sqlite_store, experiment_id, run_id) == []


def test_process_wide_mlflow_state_is_untouched(sqlite_store: Any) -> None:
    import os

    import mlflow

    experiment_id, run_id = new_run(sqlite_store)
    uri_before = mlflow.get_tracking_uri()
    env_before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    # An earlier test's provider autolog (in this process) may have left one set.
    last_trace_before = mlflow.get_last_active_trace_id()
    TraceSender(sqlite_store.tracking_uri, experiment_id).send(
        [(make_trace(uuid.uuid4().hex), run_id)]
    )
    assert mlflow.get_tracking_uri() == uri_before != sqlite_store.tracking_uri
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")} == env_before
    assert mlflow.active_run() is None
    assert mlflow.get_last_active_trace_id() == last_trace_before


# -- start_trace requests side by side over HTTP, one at a time on a local store --------


def _small_trace(key: str, bad: bool = False) -> LogTrace:
    """One span and one assessment; ``bad`` gives the assessment a source MLflow refuses."""
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

    client = server_store.client()
    experiment_id = server_store.create_experiment()
    run_id = client.create_run(experiment_id).info.run_id
    keys = [uuid.uuid4().hex for _ in range(6)]
    ops = [_small_trace(key, bad=(i == 2)) for i, key in enumerate(keys)]
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
    assert TraceSender("sqlite:///x.db", "1", max_parallel_requests=8).max_parallel_requests == 1
    assert TraceSender("http://h:5000", "1", max_parallel_requests=8).max_parallel_requests == 8
