"""The mapping language's readable forms: `if`, `let`, constants, per-point defaults, versions.

Each form is run through the real engine on hand-made contexts, so a test fails when the
form loads but means something else. Version 1 files are loaded beside version 2 ones:
what a version 1 file meant, it still means.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.scorer import value_to_float

from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._engine.expr_compiler import Evaluator
from inspect_mlflow._mapping import MappingError, MappingInvalid, load_mapping, load_mapping_text
from inspect_mlflow._mapping.functions_numbers import score_value
from inspect_mlflow._operations import AppendRows, LogMetrics, LogTrace, OpenRun

RUNS = """
counters: [n]
runs:
  task:
    open: task_start
    close: task_end
    key: eval_id
    name: name
    status: {const: FINISHED}
"""


def mapping(rules: str, version: int = 2, extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(rules), "  ")
    return f"version: {version}\n{RUNS}{textwrap.dedent(extra)}rules:\n{body}"


def engine_for(text: str) -> Engine:
    engine = Engine(load_mapping_text(text, "t.yaml"), clock=lambda: 1.0)
    engine.handle("task_start", {"eval_id": "e1", "name": "task"})
    return engine


def sample_end(engine: Engine, **sample: Any) -> list[Any]:
    return engine.handle("sample_end", {"eval_id": "e1", "sample": sample})


def metrics(ops: list[Any]) -> dict[str, tuple[float, int]]:
    return {
        m.key: (m.value, m.step) for op in ops if isinstance(op, LogMetrics) for m in op.metrics
    }


def rows(ops: list[Any]) -> list[dict[str, Any]]:
    return [row for op in ops if isinstance(op, AppendRows) for row in op.rows]


def problems(text: str) -> list[MappingError]:
    with pytest.raises(MappingInvalid) as info:
        load_mapping_text(text, "t.yaml")
    return list(info.value.errors)


# -- if -------------------------------------------------------------------------------


def test_if_evaluates_only_the_chosen_branch() -> None:
    # `length(null)` raises in JMESPath: an eager `if` would fail the metric on a null x.
    engine = engine_for(
        mapping("""
        sample_end:
          - run: task
            count: n
            step: counter.n.index
            metrics:
              count: if(sample.xs, length(sample.xs), `0`)
              kept_null: if(`true`, sample.missing, `5`)
        """)
    )
    assert metrics(sample_end(engine, xs=None)) == {"count": (0.0, 0)}
    assert metrics(sample_end(engine, xs=[1, 2, 3])) == {"count": (3.0, 1)}
    assert not engine.problems.summary()


@pytest.mark.parametrize(
    "text, doc, want",
    [
        ("if(a, 'yes', 'no')", {"a": 0}, "yes"),  # 0 is true in JMESPath
        ("if(a, 'yes', 'no')", {"a": ""}, "no"),
        ("if(a, b, 'no')", {"a": True}, None),  # a null `then` stays null
        ("l[*].if(@, 'x', 'y')", {"l": [None, 1]}, ["y", "x"]),  # on a null current node
        ("if(if(a, b, c), 'in', 'out')", {"a": 1, "b": [], "c": 1}, "out"),
    ],
)
def test_if_gives_the_same_value_compiled_and_interpreted(text: str, doc: Any, want: Any) -> None:
    rule = load_mapping_text(mapping(f'sample_end: [{{run: task, metrics: {{m: "{text}"}}}}]'))
    ((_key, expr),) = rule.rules["sample_end"][0].metrics
    assert expr.search(doc) == want
    assert Evaluator().search(expr, doc) == want


def test_if_takes_three_arguments() -> None:
    (error,) = problems(mapping("sample_end: [{run: task, metrics: {m: 'if(a, b)'}}]"))
    assert error.message == "if() takes 3 arguments, got 2"


# -- let ------------------------------------------------------------------------------


def test_let_binds_values_once_for_every_later_part_of_the_rule() -> None:
    engine = engine_for(
        mapping("""
        sample_end:
          - run: task
            count: n
            let:
              score: score_value(sample.score)
              index: counter.n.index           # after this rule's own count
              label: format('{}-{}', score, index)
            step: index
            metrics:
              "score/{label}": score
            table: scores.json
            row: {score: score, label: label}
        """)
    )
    ops = sample_end(engine, score="P")
    assert metrics(ops) == {"score/0.5-0": (0.5, 0)}
    assert rows(ops) == [{"score": 0.5, "label": "0.5-0"}]
    ops = sample_end(engine, score="C")
    assert metrics(ops) == {"score/1-1": (1.0, 1)}


def test_let_reaches_a_trace_and_its_spans() -> None:
    engine = engine_for(
        mapping("""
        sample_end:
          - run: task
            let:
              ends: index_by(sample.events[?kind == 'end'], &id)
            trace:
              key: sample.id
              start: "`1`"
              spans:
                for_each: {event: "sample.events[?kind == 'begin']"}
                id: event.id
                start: "`1`"
                end: get(ends, event.id).t
                name: event.id
        """)
    )
    events = [{"kind": "begin", "id": "s"}, {"kind": "end", "id": "s", "t": 5}]
    (trace,) = [op for op in sample_end(engine, id="x", events=events) if isinstance(op, LogTrace)]
    assert [(s.span_id, s.end_time_ns) for s in trace.spans] == [("s", 5_000_000_000)]


@pytest.mark.parametrize("part", ["when: score", "unique: score", "collect: {t: score}"])
def test_a_part_evaluated_before_let_cannot_read_it(part: str) -> None:
    text = mapping(
        f"""
        sample_end:
          - run: task
            {part}
            let: {{score: sample.score}}
            metrics: {{m: score}}
        """,
        extra="series: [t]\n",
    )
    (error,) = problems(text)
    assert error.message == "`let` name 'score' is not bound yet here"


def test_let_names_may_not_hide_the_context_or_a_loop() -> None:
    found = problems(
        mapping("""
        sample_end:
          - run: task
            let: {run: sample.a, x: sample.b}
            for_each: {x: sample.c}
            metrics: {m: x}
        """)
    )
    assert sorted(e.message for e in found) == [
        "for_each name 'x' is also a `let` name of this rule",
        "let name 'run' would hide the context's own 'run'",
    ]


# -- constants ------------------------------------------------------------------------


def test_plain_scalars_and_const_are_constants() -> None:
    text = mapping(
        """
        sample_end:
          - run: task
            step: 3
            tags:
              mlflow.runType: {const: genai_evaluate}
              flag: true
            metrics:
              one: 1
            records: r.json
            record: {const: {kind: sample, n: [1, 2]}}
        """
    )
    engine = engine_for(text)
    ops = sample_end(engine)
    assert metrics(ops) == {"one": (1.0, 3)}
    tags = {k: v for op in ops if hasattr(op, "tags") for k, v in op.tags.items()}
    assert tags == {"mlflow.runType": "genai_evaluate", "flag": "true"}
    engine.handle("task_end", {"eval_id": "e1"})


def test_const_as_a_whole_record_is_an_object_in_version_1() -> None:
    rule = "sample_end: [{run: task, records: r.json, record: {const: sample.kind}}]"
    v1 = load_mapping_text(mapping(rule, version=1)).rules["sample_end"][0].record
    v2 = load_mapping_text(mapping(rule, version=2)).rules["sample_end"][0].record
    assert v1 is not None and v1.search({"sample": {"kind": "x"}}) == {"const": "x"}
    assert v2 is not None and v2.search({"sample": {"kind": "x"}}) == "sample.kind"


def test_the_const_form_takes_only_const() -> None:
    (error,) = problems(mapping("sample_end: [{run: task, metrics: {m: {const: 1, x: 2}}}]"))
    assert error.message == "unknown key 'x'"


# -- defaults -------------------------------------------------------------------------

DEFAULTS = """
defaults:
  sample_end:
    run: task
    step: counter.n.index
    row: {sample_id: sample.id, epoch: sample.epoch}
"""


def test_defaults_fill_run_step_and_leading_row_columns() -> None:
    engine = engine_for(
        mapping(
            """
            sample_end:
              - count: n
                metrics: {m: sample.v}
              - step: "`7`"
                metrics: {own: sample.v}
              - table: t.json
                row: {epoch: "`0`", value: sample.v}
            """,
            extra=DEFAULTS,
        )
    )
    sample_end(engine, id="a", epoch=1, v=1)
    ops = sample_end(engine, id="b", epoch=2, v=2)
    assert metrics(ops) == {"m": (2.0, 1), "own": (2.0, 7)}
    # Default columns first; a column the rule names keeps its place and takes its value.
    (row,) = rows(ops)
    assert list(row.items()) == [("sample_id", "b"), ("epoch", 0), ("value", 2)]


def test_defaults_belong_to_the_file_that_declares_them(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    rule = "sample_end: [{id: base-rule, metrics: {m: sample.v}}]"
    base.write_text(mapping(rule, extra=DEFAULTS))
    overlay = tmp_path / "user.yaml"
    overlay.write_text(
        "version: 1\nextends: base.yaml\nrules:\n"
        "  sample_end:\n    - {run: task, table: u.json, row: {v: sample.v}}\n"
    )
    compiled = load_mapping(overlay)
    base_rule, user_rule = compiled.rules["sample_end"]
    assert base_rule.run == "task" and base_rule.step is not None
    assert user_rule.step is None  # a version 1 rule keeps step 0
    assert [key.text for key, _ in user_rule.row] == ["v"]
    assert compiled.effective["rules"]["sample_end"][0]["step"] == "counter.n.index"


def test_a_bad_default_is_reported_once_at_its_own_line() -> None:
    text = mapping(
        "sample_end:\n  - metrics: {a: x}\n  - metrics: {b: y}\n",
        extra=DEFAULTS.replace("counter.n.index", "counter.n.index)"),
    )
    (error,) = problems(text)
    assert error.json_path == "$.defaults.sample_end.step"
    assert error.line == text.splitlines().index("    step: counter.n.index)") + 1


def test_a_rule_without_run_needs_a_default() -> None:
    (error,) = problems(mapping("sample_end: [{metrics: {m: x}}]"))
    assert error.message == "rule has no `run`"
    assert error.hint is not None and "defaults.sample_end.run" in error.hint


# -- to_number, score_value and versions ----------------------------------------------


def test_to_number_is_jmespaths_in_version_2_and_a_score_conversion_in_version_1() -> None:
    rule = "sample_end: [{run: task, metrics: {m: to_number(sample.score)}}]"
    v1 = metrics(sample_end(engine_for(mapping(rule, version=1)), score="C"))
    v2 = metrics(sample_end(engine_for(mapping(rule, version=2)), score="C"))
    assert (v1, v2) == ({"m": (1.0, 0)}, {})
    text_number = metrics(sample_end(engine_for(mapping(rule, version=2)), score="2.5"))
    assert text_number == {"m": (2.5, 0)}


def test_each_file_keeps_its_own_version(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(mapping("sample_end: [{run: task, metrics: {v2: to_number(sample.s)}}]"))
    user = tmp_path / "user.yaml"
    user.write_text(
        "version: 1\nextends: base.yaml\nrules:\n"
        "  sample_end:\n    - {run: task, metrics: {v1: to_number(sample.s)}}\n"
    )
    engine = Engine(load_mapping(user), clock=lambda: 1.0)
    engine.handle("task_start", {"eval_id": "e1", "name": "task"})
    assert metrics(sample_end(engine, s="C")) == {"v1": (1.0, 0)}


SCORES: list[Any] = ["C", "I", "P", "N", True, False, 3, 0.25, "0.75", "12", "yes", "False"]


@pytest.mark.parametrize("value", SCORES)
def test_score_value_counts_a_score_as_inspects_metrics_do(value: Any) -> None:
    assert score_value(value) == value_to_float()(value)


@pytest.mark.parametrize("value", ["maybe", "c", "correct", [1], {"a": 1}, None, "nan"])
def test_score_value_is_null_where_inspect_gives_up(value: Any) -> None:
    assert score_value(value) is None


def test_version_3_is_not_a_version() -> None:
    (error,) = problems(mapping("{}", version=3))
    assert error.message == "3 is not one of: 1, 2"


def test_the_run_kind_opened_by_a_default_is_the_rules_own() -> None:
    engine = engine_for(mapping("sample_end: [{metrics: {m: sample.v}}]", extra=DEFAULTS))
    ops = sample_end(engine, v=4)
    assert [op.run for op in ops if isinstance(op, LogMetrics)] == ["task:e1"]
    assert not [op for op in ops if isinstance(op, OpenRun)]


# -- the assessment source ------------------------------------------------------------


def test_feedback_and_expectations_name_their_source() -> None:
    engine = engine_for(
        mapping("""
        sample_end:
          - run: task
            trace:
              key: sample.id
              start: "`1`"
              feedback:
                for_each: {score: items(sample.scores)}
                name: score.key
                value: score_value(score.value)
                source_type: {const: LLM_JUDGE}
                source_id: score.key
              expectations:
                name: {const: expected_response}
                value: sample.target
                source_type: sample.who
        """)
    )
    ops = sample_end(engine, id="x", scores={"judge": "C"}, target="4", who="human")
    (trace,) = [op for op in ops if isinstance(op, LogTrace)]
    (feedback,) = trace.feedback
    assert (feedback.name, feedback.value, feedback.source_type, feedback.source_id) == (
        "judge",
        1,
        "LLM_JUDGE",
        "judge",
    )
    (expectation,) = trace.expectations
    assert (expectation.source_type, expectation.source_id) == ("HUMAN", "inspect_ai")
    ops = sample_end(engine, id="y", scores={}, target="4", who="robot")
    (trace,) = [op for op in ops if isinstance(op, LogTrace)]
    assert trace.expectations[0].source_type == "CODE"  # an unknown type is reported
    assert engine.problems.summary()


# -- the documentation's examples -----------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "mapping-language.md"


def _yaml_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]


def test_the_documented_top_example_loads_on_the_default() -> None:
    (example,) = [b for b in _yaml_blocks() if b.startswith("# yaml-language-server")]
    compiled = load_mapping_text(example, "doc.yaml")
    assert "sample-metrics" in [rule.id for rule in compiled.rules["sample_end"]]


def test_the_documented_let_and_defaults_examples_load() -> None:
    blocks = _yaml_blocks()
    (let_rule,) = [b for b in blocks if b.startswith("  task_end:\n    - run: task\n      let:")]
    (defaults,) = [b for b in blocks if b.startswith("defaults:\n  sample_end:")]
    text = f"version: 2\n{RUNS}{defaults}rules:\n{let_rule}"
    engine = engine_for(text)
    usage = {"m": {"total_tokens": 10, "total_cost": 0.5}}
    ops = engine.handle("task_end", {"eval_id": "e1", "log": {"stats": {"model_usage": usage}}})
    assert metrics(ops) == {"tokens": (10.0, 0), "cost/total_usd": (0.5, 0)}
