"""Compiled expressions answer exactly what jmespath's interpreter answers.

The compiler replaces the interpreter on every search of the engine and of the event-loop
filter, so any difference would change what reaches MLflow. Three checks: every shipped
mapping replayed over real hook payloads produces the same operations either way; a list
of edge cases (falsiness, 0/1 vs booleans, ordering, projections, functions, errors) gives
the same value or the same error; plain paths take the one-loop shortcut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jmespath
import pytest
from inspect_ai.model import ModelOutput, ModelUsage
from payloads import record_scenario
from replays import replay

from inspect_mlflow._engine.expr_compiler import Evaluator, ExprCompiler, _field_names
from inspect_mlflow._engine.views import convert
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import Expr, Where

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


class _Interpreted:
    """The evaluation the engine made before the compiler: jmespath's own search."""

    def search(self, expr: Expr, doc: Any) -> Any:
        return expr.search(doc)


@pytest.mark.parametrize("scenario", ["ok", "failing"])
@pytest.mark.parametrize(
    "mapping_file",
    [None, *(MAPPINGS / "examples" / name for name in ("custom-metric.yaml", "scores-only.yaml"))],
    ids=["default", "custom-metric", "scores-only"],
)
def test_every_shipped_mapping_produces_the_same_operations_compiled_or_interpreted(
    scenario: str, mapping_file: Path | None
) -> None:
    rec = record_scenario(scenario)
    compiled = replay(rec, load_mapping(mapping_file))
    interpreted = replay(rec, load_mapping(mapping_file), evaluator=_Interpreted())
    assert len(compiled.ops) >= 5  # the replay did produce the runs' operations
    assert compiled.ops == interpreted.ops
    assert compiled.engine.problems.summary() == interpreted.engine.problems.summary()


DOCS: list[Any] = [
    {
        "a": {"b": {"c": 1}},
        "n": None,
        "zero": 0,
        "one": 1,
        "t": True,
        "f": False,
        "s": "text",
        "empty": {"s": "", "l": [], "o": {}},
        "l": [1, 2, 3, 0, None, "x", [4, 5], {"k": 1}],
        "people": [
            {"name": "a", "age": 30, "tags": ["x"]},
            {"name": "b", "age": None},
            {"name": "c", "age": 5, "tags": []},
        ],
        "obj": {"x": {"v": 1}, "y": {"v": None}, "z": {"w": 2}},
        "events": [
            {"event": "span_begin", "id": "s1", "type": "solver"},
            {"event": "model", "uuid": "m1", "span_id": "s1"},
            {"event": "span_end", "id": "s1"},
        ],
    },
    [1, [2, [3]], None, {"a": 1}],
    "just text",
    None,
    0,
    {},
]

EXPRESSIONS = [
    "a.b.c",
    'a."b".c',
    "a.b.c.d",
    "n.x",
    "s.x",
    "l[0]",
    "l[-1]",
    "l[100]",
    "l[1:3]",
    "l[::-1]",
    "l[::2]",
    "a[0]",
    "l[*]",
    "l[]",
    "l[][]",
    "people[*].name",
    "people[].tags[]",
    "people[?age > `10`].name",
    "people[?age].name",
    "people[?!age].name",
    "people[?age == null].name",
    "people[?tags].name",
    "obj.*.v",
    "obj.*",
    "s.*",
    "n.*",
    "zero || 'fallback'",
    "empty.s || empty.l || empty.o || n || f || 'last'",
    "zero && 'and'",
    "empty.l && 'and'",
    "!zero",
    "!one",
    "!empty.s",
    "!s",
    "!n",
    "zero == f",
    "one == t",
    "zero != f",
    "one == `1.0`",
    "zero == `0`",
    "s == zero",
    "zero == s",
    "t == one",
    "f == `0`",
    "`1.0` == one",
    "`0.0` == f",
    "s == 'text'",
    "a == a",
    "a.b == {c: `1`}",
    "l[0] < l[1]",
    "s < 'zzz'",
    "s < `1`",
    "t < f",
    "n >= `1`",
    "one >= zero",
    "{x: a.b.c, y: n, z: s}",
    "[a.b.c, n, s]",
    "n.{x: a}",
    "n.[a]",
    "l | [0]",
    "people | length(@)",
    "length(s)",
    "length(n)",
    "to_string(zero)",
    "to_number('12')",
    "sort_by(people[?age], &age)[].name",
    "max_by(people[?age], &age).name",
    "map(&name, people)",
    "keys(obj)",
    "index_by(events[?event == 'span_end'], &id)",
    "group_by(events, &event)",
    "unique(people[].age)",
    "replace(s, 'a', 'b')",
    "(events[0].event == 'span_begin' && {v: events[0].id} || {v: events[0].uuid}).v",
    "format('{}#{}', s, one)",
    "items(obj)",
    "coalesce(n, zero, one)",
    "`[1, 2]`",
    "'raw'",
    "@",
    "@.a",
    "[?@ == `1`]",
    "[]",
    "*",
    "sum(l)",
    "abs(s)",
]


def _outcome(fn: Any, doc: Any) -> tuple[str, Any]:
    try:
        return "value", fn(doc)
    except Exception as err:
        return "error", (type(err).__name__, str(err))


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_each_edge_case_gives_the_interpreters_value_or_error(text: str) -> None:
    parsed = jmespath.compile(text)
    compiled = ExprCompiler(OPTIONS).compile(parsed.parsed)
    for doc in DOCS:
        expected = _outcome(lambda d: parsed.search(d, OPTIONS), doc)
        got = _outcome(compiled, doc)
        assert got == expected, (text, doc)
        # The 0/1 vs true/false rule: equal values, and of the same type too.
        assert type(got[1]) is type(expected[1]), (text, doc)


def test_some_edge_cases_really_are_errors_and_falsy_values() -> None:
    # Guards the list above against checking only trivial agreement.
    compiler = ExprCompiler(OPTIONS)
    doc = DOCS[0]
    assert _outcome(compiler.compile(jmespath.compile("s < `1`").parsed), doc)[0] == "error"
    assert compiler.compile(jmespath.compile("zero == f").parsed)(doc) is False
    assert compiler.compile(jmespath.compile("zero || 'fallback'").parsed)(doc) == 0
    assert compiler.compile(jmespath.compile("!zero").parsed)(doc) is False


def test_only_chains_of_fields_take_the_one_loop_path() -> None:
    assert _field_names(jmespath.compile('a.b."c/d"').parsed) == ("a", "b", "c/d")
    assert _field_names(jmespath.compile("a").parsed) == ("a",)
    for text in ("a[0]", "a.b || c", "a[].b", "length(a)", "a.*", "@", "`1`", "a.b[?c]"):
        assert _field_names(jmespath.compile(text).parsed) is None, text


@pytest.mark.parametrize("kind", ["not_a_jmespath_node", "children", "compile"])
def test_a_node_type_it_does_not_know_is_left_to_the_interpreter(kind: str) -> None:
    # Also names of the compiler's own helpers: a node type never reaches them.
    node = {"type": kind, "children": []}
    compiled = ExprCompiler(OPTIONS).compile(node)
    with pytest.raises(NotImplementedError, match=kind):
        compiled({})


# -- plain paths: the evaluator's shortcut reads what the interpreter reads --------------


def _output() -> Any:
    out = ModelOutput.from_content(model="mockllm/model", content="42")
    out.usage = ModelUsage(input_tokens=3, output_tokens=2, total_tokens=5)
    return out


PLAIN_DOCS: list[dict[str, Any]] = [
    {"event": convert(_output()), "n": None, "s": "text", "l": [1, 2], "x": {"y": {"z": 0}}},
    {"event": {"usage": None}, "s": {"t": False}},
    {},
]

PLAIN_PATHS = [
    "event.usage.input_tokens",
    "event.choices",
    "event.usage.missing",
    "event.completion",
    "n.a",
    "s.t",
    "s.t.u",
    "l.a",
    "x.y.z",
    "missing.a.b",
]


@pytest.mark.parametrize("doc", PLAIN_DOCS)
def test_plain_paths_read_what_jmespath_reads(doc: dict[str, Any]) -> None:
    evaluator = Evaluator(OPTIONS)
    for text in PLAIN_PATHS:
        compiled = Expr(text, jmespath.compile(text), Where("test.yaml", "$"), OPTIONS)
        assert evaluator.search(compiled, doc) == compiled.search(doc), text
