"""The default mapping on real hook payloads: the exact operations it produces.

These tests are what proves every path in ``mappings/default.yaml`` is right: each
payload comes from a real offline Inspect eval (``tests/support/payloads.py``), replayed through
``views.context`` and the engine in the order the hooks fired.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from typing import Any

import pytest
from payloads import EPOCHS, MODEL_NAME, SAMPLES, TASK_ARGS, Recording, record_scenario
from replays import NOW, Replay, replay

from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._mapping import load_mapping, load_mapping_text
from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogArtifact,
    LogMetrics,
    LogParams,
    LogTrace,
    OpenRun,
)


@pytest.fixture(scope="module")
def ok(request: pytest.FixtureRequest) -> Replay:
    from inspect_ai.log._recorders.eval import LazyList

    original = LazyList._ensure_loaded

    def trap(self: Any) -> None:
        raise AssertionError("TaskEnd.log samples were loaded")

    LazyList._ensure_loaded = trap  # type: ignore[method-assign]
    try:
        return replay(record_scenario("ok"))
    finally:
        LazyList._ensure_loaded = original  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def failing() -> Replay:
    return replay(record_scenario("failing"))


def samples_ended(rec: Recording) -> list[Any]:
    return [d.sample for d in rec["sample_end"]]


def events_in_log(rec: Recording, kind: str) -> int:
    return sum(1 for s in samples_ended(rec) for e in s.events if e.event == kind)


# -- runs ---------------------------------------------------------------------------


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_runs_open_nested_and_close_finished(ok: Replay) -> None:
    run_id = ok.rec["run_start"][0].run_id
    eval_id = ok.rec["task_start"][0].eval_id
    # The task run's times are Inspect's (its creation; its last sample's end, later
    # than the log's whole-second end); the eval run's are the points' (no time).
    created = _ms(ok.rec["task_start"][0].spec.created)
    last_end = max(_ms(s.completed_at) for s in samples_ended(ok.rec))
    log_end = _ms(ok.rec["task_end"][0].log.stats.completed_at)
    assert ok.of(OpenRun) == [
        OpenRun(
            ok.eval_key,
            "eval",
            f"inspect-{run_id[:8]}",
            None,
            {"inspect.run_id": run_id, "inspect.task_count": "1", "inspect.tasks": "arith"},
            int(NOW * 1000),
        ),
        OpenRun(
            ok.task_key,
            "task",
            "arith",
            ok.eval_key,
            {
                "inspect.eval_id": eval_id,
                "inspect.run_id": run_id,
                "inspect.task": "arith",
                "inspect.model": MODEL_NAME,
                "mlflow.runType": "genai_evaluate",
            },
            created,
        ),
    ]
    assert ok.of(CloseRun) == [
        CloseRun(ok.task_key, "FINISHED", max(last_end, log_end)),
        CloseRun(ok.eval_key, "FINISHED", int(NOW * 1000)),
    ]
    assert isinstance(ok.ops[-1], CloseRun) and ok.ops[-1].run == ok.eval_key
    assert ok.engine.open_runs() == []
    assert ok.engine.problem_summary() == []


def test_task_params_with_redacted_credential_args(ok: Replay) -> None:
    assert [op.params for op in ok.of(LogParams)] == [
        {
            "task": "arith",
            "model": MODEL_NAME,
            "task_version": "0",
            "dataset.samples": "3",
            "solver": "use_tools, generate",
            "temperature": "0.2",
        },
        {"task_arg.api_key": "***", "task_arg.difficulty": TASK_ARGS["difficulty"]},
    ]
    assert TASK_ARGS["api_key"] not in repr(ok.ops)


# -- metrics ------------------------------------------------------------------------


def test_per_sample_metrics_step_through_every_completed_sample(ok: Replay) -> None:
    ended = samples_ended(ok.rec)
    assert len(ended) == len(SAMPLES) * EPOCHS
    # step i belongs to the i-th sample_end (completion order across epochs)
    assert ok.metric_points("per_sample/total_time") == [
        (s.total_time, i) for i, s in enumerate(ended)
    ]
    assert ok.metric_points("per_sample/match") == [(1.0, i) for i in range(len(ended))]
    assert ok.metric_points("per_sample/digits") == [
        (float(s.scores["digits"].value), i) for i, s in enumerate(ended)
    ]
    assert {s.scores["digits"].value for s in ended} == {1, 2}


def test_event_metrics_count_each_model_and_tool_call_once(ok: Replay) -> None:
    deliveries = Counter(d.event.event for d in ok.rec["sample_event"])
    model_calls = events_in_log(ok.rec, "model")
    tool_calls = events_in_log(ok.rec, "tool")
    assert model_calls == len(SAMPLES) * EPOCHS * 2 and tool_calls == len(SAMPLES) * EPOCHS
    assert deliveries["model"] == 2 * model_calls, "Inspect delivers each model event twice"

    calls = ok.metric_points("per_call/model_call")
    assert calls == [(float(i + 1), i) for i in range(model_calls)]
    for key, value in (("per_call/input_tokens", 10.0), ("per_call/output_tokens", 5.0)):
        assert ok.metric_points(key) == [(value, i) for i in range(model_calls)]
    model_time = ok.metric_points("per_call/model_time")
    assert [s for _, s in model_time] == list(range(model_calls))
    assert all(v > 0 for v, _ in model_time)

    assert ok.metric_points("per_call/tool_call") == [(float(i + 1), i) for i in range(tool_calls)]
    assert ok.metric_points("per_call/tool_error") == [(0.0, i) for i in range(tool_calls)]
    assert [s for _, s in ok.metric_points("per_call/tool_time")] == list(range(tool_calls))


def test_model_event_seen_before_its_timing_is_counted_when_complete() -> None:
    """Inspect emits a model event first without ``completed``/``working_time``, then
    again once timed; the hook may see the first state (delivery is asynchronous)."""
    rec = record_scenario("ok")
    seen: set[str] = set()
    points = []
    for point, data in rec.sequence:
        if point == "sample_event" and data.event.event == "model" and data.event.uuid not in seen:
            seen.add(data.event.uuid)
            early = data.event.model_copy(update={"completed": None, "working_time": None})
            data = dataclasses.replace(data, event=early)
        points.append((point, data))
    result = replay(rec, points=iter(points))
    model_calls = events_in_log(rec, "model")
    assert result.metric_points("per_call/model_call") == [
        (float(i + 1), i) for i in range(model_calls)
    ]
    times = result.metric_points("per_call/model_time")
    assert len(times) == model_calls and all(v > 0 for v, _ in times)


def test_summary_metrics_at_task_end(ok: Replay) -> None:
    [end] = ok.rec["task_end"]
    [summary, scores, usage] = [
        {m.key: (m.value, m.step) for m in op.metrics}
        for op in ok.ops[ok.ops.index(ok.of(LogMetrics)[-3]) :]
        if isinstance(op, LogMetrics)
    ]
    n = len(SAMPLES) * EPOCHS
    times = sorted(s.total_time for s in samples_ended(ok.rec))
    assert summary["total_samples"] == (float(end.log.results.total_samples), 0)
    assert summary["completed_samples"] == (float(n), 0)
    assert summary["total_model_calls"] == (float(2 * n), 0)
    assert summary["total_tool_calls"] == (float(n), 0)
    assert summary["latency/per_sample_mean_seconds"][0] == pytest.approx(sum(times) / n)
    assert summary["latency/per_sample_p50_seconds"][0] == pytest.approx((times[2] + times[3]) / 2)
    assert summary["latency/per_sample_p95_seconds"][0] <= times[-1]
    assert "latency/per_sample_working_mean_seconds" in summary
    assert "latency/total_seconds" in summary
    assert "cost/total_usd" not in summary, "absent, not zero, when no cost is known"
    assert scores == {"match/accuracy": (1.0, 0), "digits/accuracy": (pytest.approx(4 / 3), 0)}
    assert usage == {
        "usage/mockllm/model_v1/input_tokens": (float(10 * 2 * n), 0),
        "usage/mockllm/model_v1/output_tokens": (float(5 * 2 * n), 0),
        "usage/mockllm/model_v1/total_tokens": (float(15 * 2 * n), 0),
    }


def test_no_step_is_used_twice_for_one_key(ok: Replay) -> None:
    seen: Counter[tuple[str, str, int]] = Counter(
        (op.run, m.key, m.step) for op in ok.of(LogMetrics) for m in op.metrics
    )
    assert max(seen.values()) == 1


# -- tables, records, artifacts ------------------------------------------------------


def test_tables_rows_carry_sample_id_and_epoch_and_json_cells(ok: Replay) -> None:
    ids = {sid for sid, _, _ in SAMPLES}
    n = len(SAMPLES) * EPOCHS
    expected_rows = {
        "inspect/samples.json": n,
        "inspect/messages.json": sum(len(s.messages) for s in samples_ended(ok.rec)),
        "inspect/sample_scores.json": 2 * n,
        "inspect/events.json": sum(len(s.events) for s in samples_ended(ok.rec)),
        "inspect/model_usage.json": n,
    }
    for path, count in expected_rows.items():
        rows = ok.rows(path)
        assert len(rows) == count, path
        assert {row["sample_id"] for row in rows} == ids, path
        assert {row["epoch"] for row in rows} == set(range(1, EPOCHS + 1)), path
    assert all(op.format == "table" and op.run == ok.task_key for op in ok.of(AppendRows)[:5])

    sample = ok.rows("inspect/samples.json")[0]
    assert isinstance(sample["scores"], dict) and sample["scores"]["match"]["value"] == "C"
    assert sample["model_calls"] == 2 and sample["tool_calls"] == 1
    assert sample["total_tokens"] == 30 and sample["error"] is None
    usage = ok.rows("inspect/model_usage.json")[0]
    assert usage["model"] == MODEL_NAME and usage["input_tokens"] == 20
    tool_msgs = [m for m in ok.rows("inspect/messages.json") if m["role"] == "assistant"]
    assert any(isinstance(m["tool_calls"], list) for m in tool_msgs)
    scores = ok.rows("inspect/sample_scores.json")
    assert {r["scorer"] for r in scores} == {"match", "digits"}
    assert {r["numeric_value"] for r in scores if r["scorer"] == "match"} == {1}

    [task_row] = ok.rows("inspect/tasks.json")
    assert task_row["status"] == "success" and task_row["location"].endswith(".eval")
    assert task_row["task"] == "arith" and task_row["model"] == MODEL_NAME


def test_sample_results_records(ok: Replay) -> None:
    [op] = [op for op in ok.of(AppendRows) if op.format == "records"][:1]
    assert op.path == "sample_results/arith.json"
    records = [r for o in ok.of(AppendRows) if o.path == op.path for r in o.rows]
    assert len(records) == len(SAMPLES) * EPOCHS
    assert {(r["id"], r["epoch"]) for r in records} == {
        (sid, e) for sid, _, _ in SAMPLES for e in range(1, EPOCHS + 1)
    }
    assert records[0]["scores"]["digits"]["explanation"].endswith("digit(s)")


def test_eval_log_artifact_is_the_header_with_credentials_hidden(ok: Replay) -> None:
    [artifact] = ok.of(LogArtifact)
    assert artifact.path == "eval_logs/arith.json" and artifact.run == ok.task_key
    header = artifact.content
    assert "samples" not in header and "reductions" not in header
    assert header["location"] == ok.rec["task_end"][0].log.location
    assert header["eval"]["task_args"]["api_key"] == "***"
    assert header["eval"]["model_args"]["token"] == "***"
    assert header["results"]["total_samples"] == len(SAMPLES) * EPOCHS


def test_log_artifacts_off_drops_tables_and_artifacts() -> None:
    rec = record_scenario("ok")
    engine = Engine(load_mapping(), log_artifacts=False, clock=lambda: NOW)
    ops = [op for p, d in rec.sequence for op in engine.handle(p, context(p, d))]
    kinds = {type(op) for op in ops}
    assert AppendRows not in kinds and LogArtifact not in kinds
    assert {LogMetrics, LogParams, OpenRun, CloseRun} <= kinds


def test_one_trace_per_sample_with_every_score_as_feedback(ok: Replay) -> None:
    ended = samples_ended(ok.rec)
    traces = ok.of(LogTrace)
    assert [t.trace_key for t in traces] == [s.uuid for s in ended]
    assert all(t.run == ok.task_key and t.status == "OK" for t in traces)
    assert sum(len(t.feedback) for t in traces) == len(ended) * 2, "N samples x S scorers"
    for trace, sample in zip(traces, ended, strict=True):
        assert {f.name: f.value for f in trace.feedback} == {
            "match": 1,
            "digits": sample.scores["digits"].value,
        }
        kinds = Counter(span.span_type for span in trace.spans)
        assert kinds["LLM"] == 2 and kinds["TOOL"] == 1
        assert all(span.end_time_ns >= span.start_time_ns for span in trace.spans)
    assert ok.engine.problem_summary() == []


# -- failure paths -------------------------------------------------------------------


def test_failing_task_without_task_end_is_closed_failed_at_run_end(failing: Replay) -> None:
    assert failing.rec["task_end"] == [], "Inspect skipped task_end"
    closes = failing.of(CloseRun)
    assert [(c.run, c.status) for c in closes] == [
        (failing.task_key, "FAILED"),
        (failing.eval_key, "FAILED"),  # a task of it failed
    ]
    # everything collected for the task was handed over before it closed
    samples = failing.rows("inspect/samples.json")
    assert len(samples) == len(failing.rec["sample_end"]) == len(SAMPLES)
    errors = [row["error"] for row in samples if row["error"]]
    assert any("model failed on purpose" in e for e in errors)
    assert failing.engine.problem_summary() == []


def test_failed_model_call_is_counted_once(failing: Replay) -> None:
    model_events = [e for s in samples_ended(failing.rec) for e in s.events if e.event == "model"]
    assert any(e.error for e in model_events) and any(e.completed is None for e in model_events)
    calls = failing.metric_points("per_call/model_call")
    assert calls == [(float(i + 1), i) for i in range(len(model_events))]


def test_orphan_task_closed_from_the_run_logs_gets_summary(failing: Replay) -> None:
    """The hook replays a task_end built from RunEnd.logs when Inspect skipped it."""
    from inspect_ai.hooks import TaskEnd

    rec = failing.rec
    [run_end] = rec["run_end"]
    [log] = run_end.logs
    orphan = TaskEnd(
        eval_set_id=run_end.eval_set_id, run_id=run_end.run_id, eval_id=log.eval.eval_id, log=log
    )
    points = [(p, d) for p, d in rec.sequence if p != "run_end"]
    points += [("task_end", orphan), ("run_end", run_end)]
    result = replay(rec, points=iter(points))
    assert [(c.run, c.status) for c in result.of(CloseRun)] == [
        (result.task_key, "FAILED"),
        (result.eval_key, "FAILED"),
    ]
    [task_row] = result.rows("inspect/tasks.json")
    assert task_row["status"] == "error"
    assert task_row["error"] and "model failed on purpose" in task_row["error"]
    # Inspect has no results for an errored task; what the runs collected still lands.
    assert result.metric_points("total_samples") == []
    model_calls = events_in_log(rec, "model")
    assert result.metric_points("total_model_calls") == [(float(model_calls), 0)]
    assert result.metric_points("usage/mockllm/model_v1/input_tokens") == [(20.0, 0)]
    assert len(result.metric_points("latency/per_sample_mean_seconds")) == 1
    assert result.engine.problem_summary() == []


# -- keys ----------------------------------------------------------------------------


def test_a_second_source_for_one_safe_key_gets_a_hash_suffix(ok: Replay) -> None:
    user = """
version: 1
extends: default
rules:
  task_end:
    - id: my-total
      run: task
      metrics:
        usage/mockllm/model_v1/input_tokens: "`-1`"
"""
    result = replay(ok.rec, mapping=load_mapping_text(user, "user.yaml"))
    key = "usage/mockllm/model_v1/input_tokens"
    suffix = hashlib.sha1(key.encode()).hexdigest()[:6]
    assert result.metric_points(key) == [(120.0, 0)], "the first source keeps the key"
    assert result.metric_points(f"{key}_{suffix}") == [(-1.0, 0)]
    assert result.engine.problems.count("key_collision") == 1
    assert "user.yaml" in result.engine.problem_summary()[0]
