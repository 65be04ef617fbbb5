"""Engine semantics on small mappings and hand-made contexts (the language, rule by rule)."""

from __future__ import annotations

import hashlib
import textwrap
from typing import Any

import pytest

from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._engine.views import convert
from inspect_mlflow._mapping import load_mapping_text
from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogArtifact,
    LogMetrics,
    LogParams,
    LogTrace,
    OpenRun,
    SetTags,
)

RUNS = """
version: 1
counters: [n, other]
series: [times]
runs:
  eval:
    open: run_start
    close: run_end
    key: run_id
    name: format('inspect-{}', run_id)
    tags: {inspect.run_id: run_id}
    status: "(exception && 'FAILED') || 'FINISHED'"
  task:
    open: task_start
    close: task_end
    key: eval_id
    parent: eval
    name: name
    status: "(status == 'success' && 'FINISHED') || (status == 'cancelled' && 'KILLED') || 'FAILED'"
"""


def engine_for(rules: str, *, clock: float = 1700000000.5, **kwargs: Any) -> Engine:
    text = RUNS + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    return Engine(load_mapping_text(text, "test.yaml"), clock=lambda: clock, **kwargs)


def start(engine: Engine, run_id: str = "r1", eval_id: str = "t1", name: str = "task1") -> None:
    engine.handle("run_start", {"run_id": run_id, "point": "run_start"})
    engine.handle("task_start", {"run_id": run_id, "eval_id": eval_id, "name": name})


def only(ops: list[Any], kind: type) -> list[Any]:
    return [op for op in ops if isinstance(op, kind)]


def metrics(ops: list[Any]) -> list[tuple[str, float, int]]:
    return [(m.key, m.value, m.step) for op in only(ops, LogMetrics) for m in op.metrics]


# -- runs ---------------------------------------------------------------------------


def test_runs_open_with_parent_name_tags_and_close_children_first() -> None:
    engine = engine_for("{}")
    ops = engine.handle("run_start", {"run_id": "r1"})
    assert ops == [
        OpenRun("eval:r1", "eval", "inspect-r1", None, {"inspect.run_id": "r1"}, 1700000000500)
    ]
    ops = engine.handle("task_start", {"run_id": "r1", "eval_id": "t1", "name": "arith"})
    assert ops == [OpenRun("task:t1", "task", "arith", "eval:r1", {}, 1700000000500)]
    assert engine.handle("task_start", {"run_id": "r1", "eval_id": "t1", "name": "x"}) == []
    engine.handle("task_start", {"run_id": "r1", "eval_id": "t2", "name": "b"})
    assert engine.open_runs() == ["eval:r1", "task:t1", "task:t2"]

    assert engine.handle("task_end", {"eval_id": "t1", "status": "success"}) == [
        CloseRun("task:t1", "FINISHED", 1700000000500)
    ]
    # t2 never got task_end: closed with the parent, its own status expression on run_end.
    ops = engine.handle("run_end", {"run_id": "r1", "exception": None})
    assert ops == [
        CloseRun("task:t2", "FAILED", 1700000000500),
        CloseRun("eval:r1", "FINISHED", 1700000000500),
    ]
    assert engine.open_runs() == []
    assert engine.handle("task_start", {"run_id": "r1", "eval_id": "t1", "name": "x"}) == []


def test_close_all_closes_children_first_with_fallback_status() -> None:
    engine = engine_for("{}")
    start(engine)
    ops = engine.close_all(status="KILLED")
    assert [(op.run, op.status) for op in ops] == [("task:t1", "KILLED"), ("eval:r1", "KILLED")]
    start(engine, "r2", "t9")
    ops = engine.close_all({"status": "cancelled", "exception": None})
    assert [(op.run, op.status) for op in ops] == [("task:t9", "KILLED"), ("eval:r2", "FINISHED")]


def test_bad_status_value_is_reported_and_closes_failed() -> None:
    engine = engine_for("{}")
    engine.handle("run_start", {"run_id": "r1"})
    engine.mapping.runs["eval"]  # the spec exists
    ops = engine.handle("run_end", {"run_id": "r1", "exception": {"x": 1}})
    assert ops[0].status == "FAILED"
    engine2 = Engine(
        load_mapping_text(RUNS.replace("'FINISHED'\"", "'DONE'\""), "s.yaml"), clock=lambda: 0
    )
    engine2.handle("run_start", {"run_id": "r1"})
    assert engine2.handle("run_end", {"run_id": "r1"})[0].status == "FAILED"
    assert engine2.problems.count("rejected_value") == 1
    assert "DONE" in engine2.problem_summary()[0]


def test_rule_without_open_run_does_nothing_and_is_counted() -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            metrics: {x: "`1`"}
        """
    )
    assert engine.handle("sample_end", {"eval_id": "nope"}) == []
    assert engine.problems.count("no_run") == 1
    assert "rules with no open run" in engine.problem_summary()[0]


# -- rule steps ---------------------------------------------------------------------


def test_when_unique_count_collect_and_counter_documents() -> None:
    engine = engine_for(
        """
        sample_event:
          - run: task
            when: ok
            unique: id
            count: n
            collect: {times: t}
            step: counter.n.index
            metrics:
              seen: counter.n.count
              other: counter.other.count
              n_times: length(series.times)
              kind_ok: "run.kind == 'task' && run.key == 'task:t1' && run.name == 'task1'"
        """
    )
    start(engine)
    events = [
        {"eval_id": "t1", "ok": True, "id": "a", "t": 1.5},
        {"eval_id": "t1", "ok": True, "id": "a", "t": 9.0},  # duplicate: ignored
        {"eval_id": "t1", "ok": False, "id": "b", "t": 9.0},  # condition false
        {"eval_id": "t1", "ok": 0, "id": "c", "t": None},  # 0 is true in JMESPath
    ]
    ops = [op for ctx in events for op in engine.handle("sample_event", ctx)]
    assert metrics(ops) == [
        ("seen", 1.0, 0),
        ("other", 0.0, 0),
        ("n_times", 1.0, 0),
        ("kind_ok", 1.0, 0),
        ("seen", 2.0, 1),
        ("other", 0.0, 1),
        ("n_times", 1.0, 1),
        ("kind_ok", 1.0, 1),
    ]


def test_unique_values_are_per_run() -> None:
    engine = engine_for(
        """
        sample_event:
          - run: task
            unique: id
            count: n
            metrics: {seen: counter.n.count}
        """
    )
    start(engine, eval_id="t1")
    engine.handle("task_start", {"run_id": "r1", "eval_id": "t2", "name": "b"})
    a = engine.handle("sample_event", {"eval_id": "t1", "id": "same"})
    b = engine.handle("sample_event", {"eval_id": "t2", "id": "same"})
    assert metrics(a) == [("seen", 1.0, 0)] and metrics(b) == [("seen", 1.0, 0)]
    assert a[0].run == "task:t1" and b[0].run == "task:t2"


def test_for_each_is_a_cartesian_product_and_iterates_objects_as_items() -> None:
    engine = engine_for(
        """
        task_end:
          - run: task
            for_each:
              score: scores
              metric: items(score.metrics)
            metrics:
              "{score.name}/{metric.key}": metric.value
          - run: task
            for_each: {u: usage}
            metrics:
              "usage/{u.key}": u.value
          - run: task
            for_each: {x: nothing}
            metrics: {never: "`1`"}
          - run: task
            for_each: {x: scalar}
            metrics: {never: "`1`"}
        """
    )
    start(engine)
    ctx = {
        "eval_id": "t1",
        "status": "success",
        "scores": [
            {"name": "match", "metrics": {"accuracy": 1.0, "stderr": 0.0}},
            {"name": "digits", "metrics": {"mean": 1.5}},
        ],
        "usage": convert({"m1": 3, "m2": 4}),
        "scalar": 5,
    }
    ops = engine.handle("task_end", ctx)
    assert metrics(ops) == [
        ("match/accuracy", 1.0, 0),
        ("match/stderr", 0.0, 0),
        ("digits/mean", 1.5, 0),
        ("usage/m1", 3.0, 0),
        ("usage/m2", 4.0, 0),
    ]
    assert engine.problems.count("rejected_value") == 1, "a scalar for_each is reported"


# -- values -------------------------------------------------------------------------


def test_params_and_tags_become_bounded_text() -> None:
    engine = engine_for(
        """
        task_start:
          - run: task
            params:
              float: "`0.2`"
              int: "`5`"
              bool: "`true`"
              obj: "{a: `1`, b: 'x'}"
              text: "'hello'"
              "null": "missing"
              empty: "''"
              empty_list: "`[]`"
              empty_obj: "`{}`"
              long: long
            tags:
              long_tag: long
        """
    )
    engine.handle("run_start", {"run_id": "r1"})
    ops = engine.handle(
        "task_start", {"run_id": "r1", "eval_id": "t1", "name": "n", "long": "x" * 9000}
    )
    [params] = only(ops, LogParams)
    assert list(params.params) == ["float", "int", "bool", "obj", "text", "long"]
    assert params.params["float"] == "0.2" and params.params["int"] == "5"
    assert params.params["bool"] == "true" and params.params["obj"] == '{"a":1,"b":"x"}'
    assert len(params.params["long"]) == 6000 and params.params["long"].endswith("[truncated]")
    [tags] = only(ops, SetTags)
    assert len(tags.tags["long_tag"]) == 8000


def test_credentials_are_hidden_in_params_rows_records_and_artifacts() -> None:
    engine = engine_for(
        """
        task_start:
          - run: task
            for_each: {arg: items(args)}
            params:
              "task_arg.{arg.key}": arg.value
          - run: task
            table: t.json
            row: {api_key: args.api_key, max_tokens: args.max_tokens, cfg: args}
          - run: task
            artifact: a.json
            value: "@"
        """
    )
    engine.handle("run_start", {"run_id": "r1"})
    args = {"api_key": "sk-1", "max_tokens": 5, "nested": {"Token": "t", "total_tokens": 3}}
    ctx = {"run_id": "r1", "eval_id": "t1", "name": "n", "args": convert(args)}
    ops = engine.handle("task_start", ctx)
    [params] = only(ops, LogParams)
    assert params.params == {
        "task_arg.api_key": "***",
        "task_arg.max_tokens": "5",
        "task_arg.nested": '{"Token":"***","total_tokens":3}',
    }
    [rows] = only(ops, AppendRows)
    assert rows.rows[0]["api_key"] == "***" and rows.rows[0]["max_tokens"] == 5
    assert rows.rows[0]["cfg"]["nested"] == {"Token": "***", "total_tokens": 3}
    [artifact] = only(ops, LogArtifact)
    assert artifact.content["args"]["api_key"] == "***"
    assert artifact.content["counter"] == {
        "n": {"count": 0, "index": None},
        "other": {"count": 0, "index": None},
    }
    assert "sk-1" not in repr(ops) and "'t'" not in repr(ops)


def test_metric_values_steps_and_rejections() -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            step: step
            metrics:
              bool: "`true`"
              int: "`3`"
              none: missing
              text: "'abc'"
              nan: nan
              obj: "{a: `1`}"
          - run: task
            step: bad_step
            metrics: {x: "`1`"}
        """
    )
    start(engine)
    ops = engine.handle(
        "sample_end", {"eval_id": "t1", "step": 4.0, "bad_step": 1.5, "nan": float("nan")}
    )
    assert metrics(ops) == [("bool", 1.0, 4), ("int", 3.0, 4)]
    assert {m.timestamp_ms for op in only(ops, LogMetrics) for m in op.metrics} == {1700000000500}
    assert engine.problems.count("rejected_value") == 4
    first = engine.problems.by_kind["rejected_value"].first
    assert first.startswith("test.yaml:") and "text" in first and 'string "abc"' in first


def test_expression_error_skips_one_output_and_names_its_place() -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            metrics:
              good: "`1`"
              bad: abs(word)
              also_good: "`2`"
        """
    )
    start(engine)
    ops = engine.handle("sample_end", {"eval_id": "t1", "word": "x"})
    assert metrics(ops) == [("good", 1.0, 0), ("also_good", 2.0, 0)]
    [line] = engine.problem_summary()
    assert line.startswith("1 expression errors (first: test.yaml:")
    assert "rules.sample_end[0].metrics.bad" in line and "abs(word)" in line


def test_tables_records_artifacts_and_the_artifact_switch() -> None:
    rules = """
        sample_end:
          - run: task
            for_each: {m: messages}
            table: "inspect/{name}.json"
            row: {sample_id: id, role: m.role, content: m.content, obj: m}
          - run: task
            records: results.json
            record: {id: id, broken: abs(id), value: "`1`"}
          - run: task
            artifact: "logs/{run.name}.json"
            value: "{id: id}"
          - run: task
            metrics: {m: "`1`"}
        """
    engine = engine_for(rules)
    start(engine)
    ctx = {
        "eval_id": "t1",
        "id": "s1",
        "name": "msgs",
        "messages": [{"role": "user", "content": "y" * 5000}, {"role": "assistant"}],
    }
    ops = engine.handle("sample_end", ctx)
    tables = only(ops, AppendRows)
    assert [(t.path, t.format, len(t.rows)) for t in tables] == [
        ("inspect/msgs.json", "table", 2),
        ("results.json", "records", 1),
    ]
    first, second = tables[0].rows
    assert first["sample_id"] == "s1" and len(first["content"]) == 4000
    assert first["content"].endswith("...[truncated]")
    assert second == {
        "sample_id": "s1",
        "role": "assistant",
        "content": None,
        "obj": {"role": "assistant"},
    }
    assert tables[1].rows == ({"id": "s1", "value": 1},), "a failing entry is left out"
    assert only(ops, LogArtifact) == [LogArtifact("task:t1", "logs/task1.json", {"id": "s1"})]

    quiet = engine_for(rules, log_artifacts=False)
    start(quiet)
    ops = quiet.handle("sample_end", ctx)
    assert [type(op) for op in ops] == [LogMetrics]


def test_keys_are_made_safe_and_collisions_get_a_hash_suffix() -> None:
    engine = engine_for(
        """
        task_end:
          - run: task
            metrics:
              usage/mockllm/model_v1/x: "`1`"
          - run: task
            for_each: {m: models}
            metrics:
              "usage/{m}/x": "`2`"
            params:
              "p/{m}": "`3`"
        """
    )
    start(engine)
    ctx = {"eval_id": "t1", "models": ["mockllm/model@v1", "a//b/../c", "mockllm/model@v1"]}
    ops = engine.handle("task_end", ctx)
    suffix = hashlib.sha1(b"usage/mockllm/model@v1/x").hexdigest()[:6]
    assert metrics(ops) == [
        ("usage/mockllm/model_v1/x", 1.0, 0),
        (f"usage/mockllm/model_v1/x_{suffix}", 2.0, 0),
        ("usage/a/b/c/x", 2.0, 0),
        (f"usage/mockllm/model_v1/x_{suffix}", 2.0, 0),
    ]
    [params] = only(ops, LogParams)
    assert list(params.params) == ["p/mockllm/model_v1", "p/a/b/c"]
    assert engine.problems.count("key_collision") == 1, "one pair, counted once"


def test_placeholder_null_skips_the_output() -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            metrics: {"a/{missing}": "`1`", "b/{present}": "`2`"}
        """
    )
    start(engine)
    assert metrics(engine.handle("sample_end", {"eval_id": "t1", "present": 7})) == [
        ("b/7", 2.0, 0)
    ]


# -- traces -------------------------------------------------------------------------


def test_trace_with_spans_and_feedback() -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            trace:
              key: sample.uuid
              name: format('{}#{}', sample.id, sample.epoch)
              start: sample.started_at
              end: sample.completed_at
              inputs: sample.input
              outputs: sample.output
              status: "(sample.error && 'ERROR') || 'OK'"
              tags: {inspect.sample_id: to_string(sample.id)}
              metadata: {epoch: sample.epoch, api_key: "'k'"}
              spans:
                for_each: {event: "sample.events[?event=='model' || event=='tool']"}
                id: event.uuid
                name: event.event
                type: "(event.event == 'model' && 'LLM') || null"
                start: event.timestamp
                end: event.completed
                attributes: {usage: event.usage}
              feedback:
                for_each: {score: items(sample.scores)}
                name: score.key
                value: score.value.value
                rationale: score.value.explanation
                metadata: {sample_id: sample.id, epoch: sample.epoch}
        """
    )
    start(engine)
    sample = {
        "uuid": "U1",
        "id": 3,
        "epoch": 1,
        "started_at": "2024-01-01T00:00:00Z",
        "completed_at": "2024-01-01T00:00:02.5+00:00",
        "input": "q",
        "output": {"completion": "a"},
        "events": [
            {"event": "model", "uuid": "e1", "timestamp": 1704067200.25, "usage": {"i": 1}},
            {"event": "span_begin", "uuid": "e2", "timestamp": 1704067200.5},
            {
                "event": "tool",
                "uuid": "e3",
                "timestamp": "2024-01-01T00:00:01Z",
                "completed": "2024-01-01T00:00:01.5Z",
            },
        ],
        "scores": {"match": {"value": "C", "explanation": "ok"}, "n": {"value": 2}},
    }
    ops = engine.handle("sample_end", {"eval_id": "t1", "sample": convert(sample)})
    [trace] = only(ops, LogTrace)
    base = 1704067200 * 10**9
    assert (trace.run, trace.trace_key, trace.name) == ("task:t1", "U1", "3#1")
    assert (trace.start_time_ns, trace.end_time_ns) == (base, base + 2_500_000_000)
    assert trace.status == "OK" and trace.outputs == {"completion": "a"}
    assert trace.tags == {"inspect.sample_id": "3"}
    assert trace.metadata == {"epoch": "1", "api_key": "***"}
    model, tool = trace.spans
    assert (model.span_id, model.span_type, model.name) == ("e1", "LLM", "model")
    assert model.start_time_ns == model.end_time_ns == base + 250_000_000
    assert model.attributes == {"usage": {"i": 1}}
    assert (tool.span_type, tool.start_time_ns, tool.end_time_ns) == (
        "UNKNOWN",
        base + 1_000_000_000,
        base + 1_500_000_000,
    )
    assert [(f.name, f.value, f.rationale, f.metadata) for f in trace.feedback] == [
        ("match", "C", "ok", {"sample_id": "3", "epoch": "1"}),
        ("n", 2, None, {"sample_id": "3", "epoch": "1"}),
    ]


def test_trace_without_key_or_start_is_skipped_and_counted() -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            trace: {key: k, start: s}
        """
    )
    start(engine)
    assert engine.handle("sample_end", {"eval_id": "t1", "s": 1.0}) == []
    assert engine.handle("sample_end", {"eval_id": "t1", "k": "x"}) == []
    assert engine.handle("sample_end", {"eval_id": "t1", "k": "x", "s": "not a time"}) == []
    assert engine.problems.count("rejected_value") == 3
    [op] = engine.handle("sample_end", {"eval_id": "t1", "k": "x", "s": 2})
    assert (op.start_time_ns, op.end_time_ns, op.name) == (2 * 10**9, 2 * 10**9, "x")


@pytest.mark.parametrize("point", ["run_start", "sample_end"])
def test_engine_never_raises_on_odd_contexts(point: str) -> None:
    engine = engine_for(
        """
        sample_end:
          - run: task
            metrics: {x: a.b.c}
        """
    )
    assert engine.handle(point, {}) == []
    assert engine.handle(point, {"run_id": object(), "eval_id": [1]}) is not None
