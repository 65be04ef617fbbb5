"""Loading whole mappings: every broken mapping fails with a located error; valid ones compile."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from inspect_mlflow._mapping import (
    MappingError,
    MappingInvalid,
    load_mapping,
    load_mapping_text,
    resolve_mapping_path,
)
from inspect_mlflow._mapping.compile import TemplateError, split_template
from inspect_mlflow._mapping.model import LIFECYCLE_POINTS, Expr, ObjectExpr
from inspect_mlflow._paths import default_mapping_path, schema_path

REPO = Path(__file__).resolve().parents[2]

VALID = """\
version: 1
counters: [sample]
runs:
  task:
    open: task_start
    close: task_end
    key: eval_id
    status: "'FINISHED'"
rules:
  sample_end:
    - id: m
      run: task
      count: sample
      step: counter.sample.index
      metrics:
        sample/x: sample.x
"""


def problems(text: str) -> list[MappingError]:
    with pytest.raises(MappingInvalid) as info:
        load_mapping_text(text, "m.yaml")
    return list(info.value.errors)


def one(text: str) -> MappingError:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def test_valid_mapping_compiles() -> None:
    compiled = load_mapping_text(VALID, "m.yaml")
    (rule,) = compiled.rules["sample_end"]
    assert rule.id == "m" and rule.run == "task" and rule.count == ("sample",)
    assert (rule.where.file, rule.where.line, rule.where.col) == ("m.yaml", 11, 7)
    assert rule.where.json_path == "$.rules.sample_end[0]"
    assert rule.step is not None and rule.step.search({"counter": {"sample": {"index": 4}}}) == 4
    ((key, value),) = rule.metrics
    assert key.is_fixed and key.text == "sample/x"
    assert (value.where.line, value.where.col) == (16, 19)
    assert compiled.counters == frozenset({"sample"})
    assert compiled.runs["task"].open == "task_start"
    assert compiled.points() == frozenset({"task_start", "task_end", "sample_end"})
    assert compiled.files == ("m.yaml",)


# --- one test per kind of broken mapping: line AND column -------------------------------


def test_yaml_syntax_error() -> None:
    error = one(VALID.replace("counters: [sample]", "counters: [sample"))
    assert error.message.startswith("YAML syntax error")
    assert (error.line, error.col) == (3, 5)


def test_duplicate_key() -> None:
    error = one(VALID.replace("    key: eval_id\n", "    key: eval_id\n    key: run_id\n"))
    assert (error.line, error.col, error.json_path) == (8, 5, "$.runs.task.key")
    assert "duplicate key 'key'" in error.message


def test_wrong_type() -> None:
    error = one(VALID.replace("counters: [sample]", "counters: sample"))
    assert (error.line, error.col, error.json_path) == (2, 11, "$.counters")
    assert error.message == "expected a list, got string"


def test_a_number_where_an_expression_is_expected_is_a_constant() -> None:
    mapping = load_mapping_text(VALID.replace("step: counter.sample.index", "step: 0"))
    step = mapping.rules["sample_end"][0].step
    assert step is not None and step.search({"counter": {"sample": {"index": 7}}}) == 0


def test_a_list_where_an_expression_is_expected_hints_the_const_form() -> None:
    error = one(VALID.replace("step: counter.sample.index", "step: [0]"))
    assert (error.line, error.col) == (14, 13)
    assert error.hint is not None and "{const: [...]}" in error.hint


def test_unknown_key_with_hint() -> None:
    error = one(VALID.replace("      metrics:", "      metrcs:"))
    assert (error.line, error.col) == (15, 7)
    assert error.json_path == "$.rules.sample_end[0].metrcs"
    assert error.message == "unknown key 'metrcs'"
    assert error.hint == "did you mean 'metrics'?"


def test_unknown_top_level_key_with_hint() -> None:
    error = one("rule: {}\n" + VALID)
    assert (error.line, error.col) == (1, 1)
    assert error.hint == "did you mean 'rules'?"


def test_jmespath_syntax_error_points_at_the_character() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample/x: sample.x =="))
    assert error.message.startswith("expression syntax error")
    # `        sample/x: sample.x ==` : the value starts at column 19, ends at 30.
    assert (error.line, error.col) == (16, 30)


def test_jmespath_syntax_error_in_quoted_value() -> None:
    error = one(VALID.replace("sample/x: sample.x", 'sample/x: "sample[?x == `1]"'))
    assert error.message.startswith("expression syntax error")
    assert (error.line, error.col) == (16, 33)  # the unclosed backtick


def test_jmespath_syntax_error_in_folded_status() -> None:
    text = VALID.replace(
        "    status: \"'FINISHED'\"\n",
        "    status: >-\n      (log.status == 'success' && 'FINISHED')\n      || ]'FAILED'\n",
    )
    error = one(text)
    assert (error.line, error.col) == (10, 10)


def test_unknown_function_with_hint() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample/x: sum(lenght(sample.x))"))
    assert (error.line, error.col) == (16, 23)
    assert error.message == "unknown function lenght()"
    assert error.hint == "did you mean length()?"


def test_wrong_argument_count() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample/x: percentile(sample.x)"))
    assert (error.line, error.col) == (16, 19)
    assert error.message == "percentile() takes 2 arguments, got 1"


def test_variadic_argument_count() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample/x: coalesce()"))
    assert error.message == "coalesce() takes at least 1 argument, got 0"
    load_mapping_text(VALID.replace("sample/x: sample.x", "sample/x: coalesce(a, b, c, d)"))


def test_format_placeholder_count() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample/x: \"format('{}/{}', a)\""))
    assert (error.line, error.col) == (16, 20)
    assert "2 {} placeholders but 1 value follows" in error.message


@pytest.mark.parametrize("text", ["", "\n", "# nothing here\n"])
def test_empty_file(text: str) -> None:
    error = one(text)
    assert (error.line, error.col) == (1, 1)
    assert "empty" in error.message


def test_top_level_list() -> None:
    error = one("- version: 1\n- runs: {}\n")
    assert (error.line, error.col) == (1, 1)
    assert "got a list" in error.message


def test_undeclared_counter_in_count() -> None:
    error = one(VALID.replace("count: sample", "count: samples"))
    assert (error.line, error.col) == (13, 14)
    assert error.message == "counter 'samples' is not declared"
    assert error.hint == "did you mean 'sample'?"


def test_undeclared_counter_in_expression() -> None:
    error = one(VALID.replace("step: counter.sample.index", "step: counter.smple.index"))
    assert (error.line, error.col) == (14, 21)
    assert error.message == "counter.smple reads an undeclared counter"
    assert error.hint == "did you mean 'sample'?"


def test_counter_inside_a_projection_is_not_the_context_counter() -> None:
    # Inside the filter, `counter.x` reads each item's own field: no declared counter needed.
    text = VALID.replace("sample/x: sample.x", "sample/x: length(items[?counter.x])")
    ((_key, metric),) = load_mapping_text(text).rules["sample_end"][0].metrics
    assert metric.search({"items": [{"counter": {"x": 1}}, {"counter": {}}, {}]}) == 1
    # The same reference at the top reads the context's counters, and `x` is not declared.
    error = one(VALID.replace("sample/x: sample.x", "sample/x: counter.x.count"))
    assert error.message == "counter.x reads an undeclared counter"


def test_undeclared_series() -> None:
    text = VALID.replace("      count: sample\n", "      count: sample\n      collect: {t: x}\n")
    error = one(text)
    assert (error.line, error.col) == (14, 17)
    assert error.message == "series 't' is not declared"
    error = one(VALID.replace("sample/x: sample.x", "sample/x: avg(series.t)"))
    assert (error.line, error.col) == (16, 30)


def test_unknown_lifecycle_point() -> None:
    error = one(VALID.replace("  sample_end:", "  sample_ends:"))
    assert (error.line, error.col) == (10, 3)
    assert error.message == "unknown lifecycle point 'sample_ends'"
    assert error.hint == "did you mean 'sample_end'?"


def test_unknown_open_point() -> None:
    error = one(VALID.replace("open: task_start", "open: task_starts"))
    assert (error.line, error.col) == (5, 11)
    assert error.hint == "did you mean 'task_start'?"


def test_bad_fixed_metric_key() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample@x: sample.x"))
    assert (error.line, error.col) == (16, 9)
    assert error.json_path == "$.rules.sample_end[0].metrics['sample@x']"
    assert "rejected by MLflow" in error.message
    assert error.hint is not None and "'sample_x'" in error.hint


def test_templated_key_is_not_checked_but_its_expression_is() -> None:
    load_mapping_text(VALID.replace("sample/x: sample.x", '"s/{k}@x": sample.x'))
    error = one(VALID.replace("sample/x: sample.x", '"s/{lenght(k)}": sample.x'))
    assert (error.line, error.col) == (16, 13)
    assert error.message == "unknown function lenght()"


def test_unbalanced_template() -> None:
    error = one(VALID.replace("sample/x: sample.x", '"s/{k": sample.x'))
    assert (error.line, error.col) == (16, 12)
    assert "unmatched '{'" in error.message


def test_undeclared_run_kind_and_parent() -> None:
    text = VALID.replace("      run: task", "      run: tsk").replace(
        "    key: eval_id\n", "    key: eval_id\n    parent: eval\n"
    )
    found = problems(text)
    assert [(e.line, e.col, e.message) for e in found] == [
        (8, 13, "parent 'eval' is not a declared run kind"),
        (13, 12, "run kind 'tsk' is not declared under `runs:`"),
    ]
    assert found[1].hint == "did you mean 'task'?"


def test_parent_cycle() -> None:
    text = """\
version: 1
runs:
  a: {open: run_start, close: run_end, key: x, status: "'FINISHED'", parent: b}
  b: {open: run_start, close: run_end, key: x, status: "'FINISHED'", parent: a}
"""
    error = one(text)
    assert "cycle" in error.message and error.line == 3


def test_duplicate_rule_id() -> None:
    text = VALID + "    - id: m\n      run: task\n"
    error = one(text)
    assert (error.line, error.col) == (17, 11)
    assert error.message == "duplicate rule id 'm'"


def test_table_without_row() -> None:
    text = VALID + "    - run: task\n      table: t.json\n"
    error = one(text)
    assert (error.line, error.col) == (18, 7)
    assert error.message == "`table` needs `row`"


def test_records_without_record_and_artifact_without_value() -> None:
    text = (
        VALID + "    - run: task\n      records: r.json\n    - run: task\n      artifact: a.json\n"
    )
    found = problems(text)
    assert [(e.line, e.col, e.message) for e in found] == [
        (18, 7, "`records` needs `record`"),
        (20, 7, "`artifact` needs `value`"),
    ]


def test_not_dot_pitfall() -> None:
    error = one(VALID.replace("sample/x: sample.x", "sample/x: x && !event.pending"))
    assert (error.line, error.col) == (16, 24)
    assert error.hint == "write `!(a.b)`"


def test_reserved_loop_name() -> None:
    text = VALID.replace("      count: sample\n", "      count: sample\n      for_each: {run: x}\n")
    error = one(text)
    assert (error.line, error.col) == (14, 18)


def test_every_problem_is_reported_sorted() -> None:
    text = (
        VALID.replace("count: sample", "count: samples")
        .replace("sample/x: sample.x", "sample@x: lenght(sample.x)")
        .replace("step: counter.sample.index", "step: percentile(x)")
    )
    found = problems(text)
    assert [(e.line, e.col) for e in found] == [(13, 14), (14, 13), (16, 9), (16, 19)]


def test_on_key_stays_a_string() -> None:
    text = VALID.replace("sample/x: sample.x", "on: sample.x\n        yes: sample.y")
    compiled = load_mapping_text(text, "m.yaml")
    keys = [key.text for key, _ in compiled.rules["sample_end"][0].metrics]
    assert keys == ["on", "yes"]
    assert "on" in compiled.effective["rules"]["sample_end"][0]["metrics"]


def test_python_object_tag_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = VALID.replace(
        "sample/x: sample.x", f"sample/x: !!python/object/apply:os.system ['touch {marker}']"
    )
    error = one(text)
    assert (error.line, error.col) == (16, 19)
    assert "!!python/object/apply:os.system" in error.message
    assert not marker.exists()


# --- what the compiled objects do --------------------------------------------------------


def test_record_map_compiles_to_an_object_expression() -> None:
    text = VALID + (
        "    - run: task\n      records: 'r/{run.name}.json'\n"
        "      record: {id: sample.id, 'n/{k}': sample.n}\n"
    )
    compiled = load_mapping_text(text, "m.yaml")
    rule = compiled.rules["sample_end"][1]
    assert isinstance(rule.record, ObjectExpr)
    doc = {"sample": {"id": 3, "n": None}, "k": "a", "run": {"name": "t"}}
    assert rule.record.search(doc) == {"id": 3, "n/a": None}
    assert rule.records is not None and rule.records.render(doc) == "r/t.json"
    assert not rule.records.is_fixed


def test_expressions_use_the_extra_functions() -> None:
    text = VALID.replace("sample/x: sample.x", '"s/{score.key}": to_number(score.value)')
    text = text.replace(
        "      count: sample\n",
        "      count: sample\n      for_each: {score: items(sample.scores)}\n",
    )
    compiled = load_mapping_text(text, "m.yaml")
    rule = compiled.rules["sample_end"][0]
    ((name, loop),) = rule.for_each
    assert name == "score"
    assert loop.search({"sample": {"scores": {"acc": "C"}}}) == [{"key": "acc", "value": "C"}]
    ((key, value),) = rule.metrics
    doc = {"score": {"key": "acc", "value": "C"}}
    assert key.render(doc) == "s/acc" and value.search(doc) == 1


def test_trace_compiles() -> None:
    text = (
        VALID
        + """\
    - run: task
      trace:
        key: sample.uuid
        start: sample.started_at
        tags: {inspect.sample_id: to_string(sample.id)}
        spans:
          for_each: {event: "sample.events[?event=='model']"}
          id: event.uuid
          parent: null
          name: event.event
          start: event.timestamp
          attributes: {mlflow.chat.tokenUsage: event.output.usage}
        feedback:
          for_each: {score: items(sample.scores)}
          name: score.key
          value: score.value.value
"""
    )
    trace = load_mapping_text(text, "m.yaml").rules["sample_end"][1].trace
    assert trace is not None and trace.spans is not None and trace.feedback is not None
    assert trace.spans.parent is None
    assert isinstance(trace.spans.id, Expr)
    assert trace.feedback.name.search({"score": {"key": "acc"}}) == "acc"


def test_split_template() -> None:
    assert split_template("a") == ["a"]
    assert split_template("{x}") == [(1, "x")]
    assert split_template("u/{format('{}', m)}/t") == ["u/", (3, "format('{}', m)"), "/t"]
    assert split_template("{'}'}") == [(1, "'}'")]
    for bad, offset in [("a}", 1), ("{a", 0), ("x{ }", 1)]:
        with pytest.raises(TemplateError) as info:
            split_template(bad)
        assert info.value.offset == offset


# --- shipped mappings and schema ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        REPO / "mappings" / "default.yaml",
        REPO / "mappings" / "examples" / "custom-metric.yaml",
        REPO / "mappings" / "examples" / "scores-only.yaml",
    ],
)
def test_shipped_mappings_are_valid(path: Path) -> None:
    compiled = load_mapping(path)
    assert "task" in compiled.runs and "eval" in compiled.runs
    assert compiled.rules


def test_default_is_used_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSPECT_MLFLOW_MAPPING", raising=False)
    assert resolve_mapping_path() == default_mapping_path()
    assert load_mapping().files == (str(default_mapping_path()),)


def test_env_var_selects_the_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(VALID)
    monkeypatch.setenv("INSPECT_MLFLOW_MAPPING", str(path))
    assert load_mapping().files == (str(path),)


def test_schema_is_valid_draft7_and_documents_every_property() -> None:
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$id"].startswith("https://")
    assert list(schema["properties"]["rules"]["properties"]) == list(LIFECYCLE_POINTS)

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if where.endswith("then"):
                    continue
                assert isinstance(prop, dict) and prop.get("description"), f"{where}.{name}"
            for key, child in node.items():
                walk(child, f"{where}.{key}")
        elif isinstance(node, list):
            for child in node:
                walk(child, where)

    walk(schema, "$")
