"""Fuzz the mapping loader and `inspect-mlflow check` with hypothesis.

Every input must give either a compiled mapping that round-trips (every expression found
again, by an independent YAML read, at the path, line and column it reports, holding the
text the file has there) or :class:`MappingInvalid` whose every error is placed
(``file:line:col``, line and column >= 1); never another exception, never a hang (each
example has a deadline). `inspect-mlflow check`
must exit 0 or 1 with located lines, never 2 and never a traceback.

Inputs: the default mapping and the examples mutated line by line and character by
character with YAML's significant characters and JMESPath fragments; random mapping-like
documents built from the mapping's own vocabulary; random text. The budget is fixed and
the run derandomized, so CI time and results are stable (about 20 s).

Control characters and very deep nesting are kept out of the random strategies and
checked by their own tests at the end.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspect_mlflow._commands.cli import main
from inspect_mlflow._mapping import MappingInvalid, load_mapping_text
from inspect_mlflow._mapping.model import LIFECYCLE_POINTS, CompiledMapping, Expr
from inspect_mlflow._paths import data_root, default_mapping_path

BUDGET = settings(
    max_examples=120,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SOURCES = [default_mapping_path(), *sorted((data_root() / "mappings" / "examples").glob("*.yaml"))]
TEXTS = [p.read_text(encoding="utf-8") for p in SOURCES]

SIGNIFICANT = list("{}[]:,-?'\"&*!|>#%@`\\ \t\n.()=<$~^") + [
    "null",
    "~",
    "- ",
    "? ",
    ": ",
    "*a",
    "&a ",
    "<<: ",
    "---\n",
    "...",
    "!!str ",
    "!!python/object:os.system ",
    "yes",
    "on",
    "0x1F",
    "1e999",
    "-.inf",
    ".nan",
    "extends: default\n",
    "[?",
    "| ",
    "&&",
    "||",
    "`1`",
    "@.x",
    "items(",
    "unknown_fn(",
    "counter.",
    "series.",
    "{sample.id}",
]
"""YAML punctuation, tags and odd scalars, and JMESPath fragments."""

# C0 controls other than tab and newline (and their like) make the YAML reader raise
# outside the loader's error handling: kept out here, pinned by a strict xfail below.
_TEXT = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="\x85\u2028\u2029\ufeff"
) | st.sampled_from(["\n", "\t", " "])


def check_loads(text: str, name: str = "fuzz.yaml") -> CompiledMapping | None:
    """Load ``text``: a mapping that round-trips, or every error placed at ``file:line:col``."""
    try:
        compiled = load_mapping_text(text, name)
    except MappingInvalid as invalid:
        assert invalid.errors, "an invalid mapping names at least one problem"
        for error in invalid.errors:
            assert error.line >= 1 and error.col >= 1, f"unplaced: {error}"
            assert error.file == name
            assert str(error).startswith(f"{name}:{error.line}:{error.col}: $")
        return None
    check_round_trip(text, name, compiled)
    return compiled


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]")


def parse_json_path(text: str) -> tuple[str | int, ...]:
    """``$.rules.x[0]['a/b']`` back into its keys and indexes."""
    assert text.startswith("$")
    parts: list[str | int] = []
    at = 1
    while at < len(text):
        match = _PATH_PART.match(text, at)
        assert match, f"unreadable JSON path {text!r}"
        name, index, quoted = match.groups()
        if index is not None:
            parts.append(int(index))
        else:
            parts.append(name if name is not None else re.sub(r"\\(.)", r"\1", quoted))
        at = match.end()
    return tuple(parts)


def _node_at(node: yaml.Node, path: tuple[str | int, ...]) -> yaml.Node:
    for part in path:
        if isinstance(part, int):
            node = node.value[part]
        else:
            node = next(v for k, v in node.value if k.value == part)
    return node


def _expressions(compiled: CompiledMapping) -> Iterator[Expr]:
    for spec in compiled.runs.values():
        yield from (e for e in (spec.key, spec.name, spec.status, spec.start, spec.end) if e)
        yield from (value for _, value in spec.tags)
    for rules in compiled.rules.values():
        for rule in rules:
            yield from (e for e in (rule.when, rule.unique, rule.step) if e)
            yield from (value for _, value in rule.for_each)
            yield from (value for _, value in rule.collect)
            for entries in (rule.params, rule.tags, rule.metrics, rule.row):
                yield from (value for _, value in entries)


def check_round_trip(text: str, name: str, compiled: CompiledMapping) -> None:
    """What loaded is what the text says, and each expression is placed where it is written.

    Read back independently of the loader: PyYAML's own data and node marks. Every
    expression written in this file is found at its reported JSON path, with the text (or
    constant) the file has there, at the line and column of that YAML node.
    """
    data = yaml.safe_load(text)
    root = yaml.compose(text)
    if "extends" not in data:
        assert compiled.counters == frozenset(data.get("counters") or ())
        assert compiled.series == frozenset(data.get("series") or ())
        assert set(compiled.runs) == set(data.get("runs") or {})
        for point, rules in (data.get("rules") or {}).items():
            assert len(compiled.rules.get(point, ())) == len(rules or ()), point
    checked = 0
    for expr in _expressions(compiled):
        if expr.where.file != name:
            continue
        path = parse_json_path(expr.where.json_path)
        value: Any = data
        for part in path:
            value = value[part]
        if isinstance(value, str):
            assert expr.text == value
        elif isinstance(value, dict):  # {const: ...}
            assert expr.search({}) == value["const"]
        else:
            assert expr.search({}) == value or value is True  # `resume: true`
        node = _node_at(root, path)
        assert (expr.where.line, expr.where.col) == (
            node.start_mark.line + 1,
            node.start_mark.column + 1,
        ), expr.where
        checked += 1
    if "extends" not in data and compiled.rules:
        assert checked, "a mapping with rules has expressions to find again"


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A shipped mapping with a few line and character edits."""
    lines = draw(st.sampled_from(TEXTS)).splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 5))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "insert", "cut", "indent", "swap"]))
        line = lines[at]
        if action == "delete":
            del lines[at]
        elif action == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif action == "insert":
            pos = draw(st.integers(0, len(line)))
            piece = draw(st.sampled_from(SIGNIFICANT) | st.text(_TEXT, max_size=4))
            lines[at] = line[:pos] + piece + line[pos:]
        elif action == "cut":
            pos = draw(st.integers(0, len(line)))
            lines[at] = line[:pos] + line[pos + draw(st.integers(1, 8)) :]
        elif action == "indent":
            lines[at] = draw(st.sampled_from(["  ", "\t", " ", ""])) + line.lstrip(" ")
        else:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
    return "".join(lines)


_WORDS = [
    "version",
    "extends",
    "remove",
    "runs",
    "rules",
    "counters",
    "series",
    "open",
    "close",
    "key",
    "parent",
    "name",
    "tags",
    "status",
    "params",
    "metrics",
    "step",
    "run",
    "when",
    "for_each",
    "table",
    "row",
    "artifact",
    "content",
    "count",
    "trace",
    "feedback",
    "id",
    "eval",
    "task",
    *LIFECYCLE_POINTS,
]
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["sample.id", "`1`", "items(sample.scores)", "eval_id", "'x'", "a.b[0]"])
    | st.text(_TEXT, max_size=12)
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(_WORDS) | st.text(_TEXT, max_size=6), children, max_size=5
        )
    ),
    max_leaves=25,
)


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_every_shipped_mapping_round_trips(source) -> None:
    assert check_loads(source.read_text(encoding="utf-8"), source.name) is not None


@BUDGET
@given(mutated())
def test_mutated_mappings_load_or_give_located_errors(text: str) -> None:
    check_loads(text)


@BUDGET
@given(st.dictionaries(st.sampled_from(_WORDS), _DOCUMENTS, min_size=1, max_size=6))
def test_random_mapping_like_documents_load_or_give_located_errors(document: dict) -> None:
    check_loads(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))


@settings(BUDGET, max_examples=60)
@given(st.text(_TEXT, max_size=300))
def test_random_text_loads_or_gives_located_errors(text: str) -> None:
    check_loads(text)


@settings(BUDGET, max_examples=25)
@given(text=mutated())
def test_check_command_exits_0_or_1_with_located_lines(text: str, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["check", str(path)])
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines, "check always says something"
    if code == 0:
        assert str(path) in lines[-1] and ": OK, " in lines[-1]  # "default + path: OK"
    else:
        assert lines[-1].startswith(f"{path}: INVALID, ")
        for line in lines[:-1]:
            if line.startswith(str(path)):
                assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: \$", line), line


# -- known escapes (yaml_load.py) -----------------------------------------------------------


def test_control_characters_give_a_located_error() -> None:
    with pytest.raises(MappingInvalid) as caught:
        load_mapping_text("version: 1\x00\n", "ctl.yaml")
    (error,) = caught.value.errors
    assert (error.line, error.col) == (1, 11)
    assert "not allowed" in error.message


def test_deep_nesting_gives_a_located_error() -> None:
    with pytest.raises(MappingInvalid) as caught:
        load_mapping_text("[" * 5000 + "]" * 5000, "deep.yaml")
    (error,) = caught.value.errors
    assert (error.file, error.line, error.col) == ("deep.yaml", 1, 1)
    assert "nested too deeply" in error.message
