"""The mapping language's extra JMESPath functions and the key helpers they share."""

from __future__ import annotations

import doctest
import time

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jmespath import exceptions
from jmespath.functions import Functions

from inspect_mlflow import _keys as keys
from inspect_mlflow._keys import is_valid_key, safe_key, to_text, truncate_text
from inspect_mlflow._mapping import functions, functions_numbers, functions_time
from inspect_mlflow._mapping.functions import FUNCTION_TABLE, OPTIONS


def search(expression: str, data: object) -> object:
    return jmespath.search(expression, data, OPTIONS)


@pytest.mark.parametrize("module", [functions, functions_numbers, functions_time, keys])
def test_doctests_pass(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0


DOCUMENTED = [
    "items",
    "from_items",
    "format",
    "slice",
    "score_value",
    "if",
    "percentile",
    "seconds_between",
    "epoch_ns",
    "format_time",
    "json",
    "truncate",
    "safe_key",
    "compact",
    "coalesce",
    "sum_known",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_documented_function_has_signature_and_example(name: str) -> None:
    assert name in FUNCTION_TABLE
    method = getattr(functions.MappingFunctions, f"_func_{name}")
    assert method.__doc__ and ">>>" in method.__doc__


def test_function_table_has_builtins_and_arity() -> None:
    assert FUNCTION_TABLE["length"].accepts(1)
    assert not FUNCTION_TABLE["length"].accepts(2)
    assert FUNCTION_TABLE["format"].variadic and FUNCTION_TABLE["format"].accepts(5)
    assert not FUNCTION_TABLE["format"].accepts(1)
    assert FUNCTION_TABLE["coalesce"].accepts(1) and not FUNCTION_TABLE["coalesce"].accepts(0)
    assert FUNCTION_TABLE["slice"].describe() == "3 arguments"
    assert FUNCTION_TABLE["coalesce"].describe() == "at least 1 argument"


# items / from_items


def test_items_keeps_order_and_null_is_empty() -> None:
    assert search("items(@)", {"z": 1, "a": 2}) == [
        {"key": "z", "value": 1},
        {"key": "a", "value": 2},
    ]
    assert search("items(nothing)", {}) == []
    with pytest.raises(exceptions.JMESPathTypeError):
        search("items(@)", [1])


def test_from_items_both_shapes_and_roundtrip() -> None:
    data = {"a": 1, "b": [2]}
    assert search("from_items(items(@))", data) == data
    assert search("from_items(@)", [["x", 1], [2, "two"]]) == {"x": 1, "2": "two"}
    assert search("from_items(nothing)", {}) is None
    with pytest.raises(functions.FunctionValueError):
        search("from_items(@)", [1])


# format


def test_format_fills_in_order_as_text() -> None:
    assert search("format('{}-{}-{}', `1`, `true`, `null`)", {}) == "1-true-null"
    assert search("format('{{}}{}', 'x')", {}) == "{}x"
    assert search("format('{}', `[1, 2]`)", {}) == "[1,2]"


def test_format_counts_must_match() -> None:
    with pytest.raises(functions.FunctionValueError):
        search("format('{}{}', 'x')", {})
    with pytest.raises(functions.FunctionValueError):
        search("format('{}', 'x', 'y')", {})
    with pytest.raises(exceptions.VariadictArityError):
        search("format('x')", {})


# slice


def test_slice_strings_arrays_and_nulls() -> None:
    assert search("slice(@, `0`, `3`)", "abcdef") == "abc"
    assert search("slice(@, `-2`, null)", "abcdef") == "ef"
    assert search("slice(@, null, `2`)", [1, 2, 3]) == [1, 2]
    assert search("slice(@, `1.0`, `2`)", [1, 2, 3]) == [2]
    assert search("slice(nothing, `0`, `1`)", {}) is None
    with pytest.raises(functions.FunctionValueError):
        search("slice(@, `0.5`, `2`)", "abc")
    with pytest.raises(exceptions.JMESPathTypeError):
        search("slice(@, `true`, `2`)", "abc")


# score_value, to_number (JMESPath's), version 1's to_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        (2.5, 2.5),
        (True, 1),
        (False, 0),
        ("C", 1),
        ("I", 0),
        ("P", 0.5),
        ("N", 0),
        ("yes", 1),
        ("TRUE", 1),
        ("no", 0),
        ("42", 42),
        (" 0.25 ", 0.25),
        ("-1e3", -1000.0),
        ("nan", None),
        ("inf", None),
        ("c", None),
        ("correct", None),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_score_value(value: object, expected: object) -> None:
    result = search("score_value(@)", value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), ("42", 42), ("2.5", 2.5), ("C", None), (True, None), (None, None)],
)
def test_to_number_is_jmespaths_own(value: object, expected: object) -> None:
    assert search("to_number(@)", value) == expected
    assert functions.MappingFunctions._func_to_number is Functions._func_to_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [("C", 1), ("correct", 1), ("Correct", 1), ("i", 0), ("partial", 0.5), ("N", None)],
)
def test_version_1_to_number_is_kept_for_version_1_files(value: object, expected: object) -> None:
    assert search("_to_number_v1(@)", value) == expected


def test_internal_functions_cannot_be_called_by_a_mapping() -> None:
    assert "_box" not in FUNCTION_TABLE and "_to_number_v1" not in FUNCTION_TABLE
    assert FUNCTION_TABLE["if"].accepts(3) and not FUNCTION_TABLE["if"].accepts(2)


# percentile


def test_percentile_linear_interpolation() -> None:
    data = [10, 1, 4, 3, 2]
    assert search("percentile(@, `0`)", data) == 1.0
    assert search("percentile(@, `100`)", data) == 10.0
    assert search("percentile(@, `50`)", data) == 3.0
    assert search("percentile(@, `95`)", data) == pytest.approx(8.8)
    assert search("percentile(@, `50`)", [None, 5]) == 5.0
    assert search("percentile(@, `50`)", []) is None
    assert search("percentile(nothing, `50`)", {}) is None


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(functions.FunctionValueError):
        search("percentile(@, `101`)", [1])
    with pytest.raises(functions.FunctionValueError):
        search("percentile(@, `50`)", [True, 1])
    with pytest.raises(exceptions.JMESPathTypeError):
        search("percentile(@, `true`)", [1])


# times


def test_seconds_between_iso_and_epoch() -> None:
    doc = {
        "a": "2024-05-01T10:00:00+00:00",
        "b": "2024-05-01T12:00:01.25+02:00",
        "naive": "2024-05-01T10:00:02",
        "e1": 100,
        "e2": 102.5,
    }
    assert search("seconds_between(a, b)", doc) == 1.25
    assert search("seconds_between(a, naive)", doc) == 2.0
    assert search("seconds_between(e1, e2)", doc) == 2.5
    assert search("seconds_between(a, missing)", doc) is None
    with pytest.raises(functions.FunctionValueError):
        search("seconds_between('yesterday', a)", doc)
    with pytest.raises(exceptions.JMESPathTypeError):
        search("seconds_between(`true`, a)", doc)


def test_epoch_ns_is_exact() -> None:
    assert search("epoch_ns(@)", "2024-01-01T00:00:00.000001Z") == 1704067200000001000
    assert search("epoch_ns(@)", "2024-01-01T00:00:00.123456789Z") == 1704067200123456000
    assert search("epoch_ns(@)", 1) == 1_000_000_000
    assert search("epoch_ns(@)", 1.000000001) == 1_000_000_001
    assert search("epoch_ns(nothing)", {}) is None


def test_format_time_is_in_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inspect's times are UTC; a run name reads in the clock of the eval's machine.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        doc = {"utc": "2026-12-03T11:03:09+00:00", "naive": "2026-12-03T11:03:09", "e": 0}
        assert search("format_time(utc, '%m-%d %H:%M')", doc) == "12-03 16:33"
        assert search("format_time(naive, '%H:%M')", doc) == "16:33"
        assert search("format_time(e, '%Y-%m-%d %H:%M')", doc) == "1970-01-01 05:30"
        assert search("format_time(missing, '%H')", doc) is None
        with pytest.raises(functions.FunctionValueError):
            search("format_time('soon', '%H')", doc)
    finally:
        monkeypatch.undo()
        time.tzset()


# json / truncate / safe_key


def test_json_is_compact_and_ordered() -> None:
    assert search("json(@)", {"b": 1, "a": [None, True]}) == '{"b":1,"a":[null,true]}'
    assert search("json(@)", "x") == '"x"'


def test_truncate() -> None:
    text = "x" * 30
    assert search("truncate(@, `30`)", text) == text
    cut = search("truncate(@, `20`)", text)
    assert len(cut) == 20 and cut.endswith("...[truncated]")
    assert search("truncate(@, `3`)", text) == "xxx"
    assert search("truncate(nothing, `3`)", {}) is None
    with pytest.raises(functions.FunctionValueError):
        search("truncate(@, `-1`)", text)


def test_truncate_text_helper() -> None:
    assert truncate_text("abc", 3) == "abc"
    assert truncate_text("a" * 7000, 6000) == "a" * (6000 - 14) + "...[truncated]"
    with pytest.raises(ValueError):
        truncate_text("abc", -1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mockllm/model@v1", "mockllm/model_v1"),
        ("sample/accuracy", "sample/accuracy"),
        ("/leading", "leading"),
        ("a//b", "a/b"),
        ("a/../b", "a/b"),
        ("..", "_"),
        ("", "_"),
        ("trailing/", "trailing"),
        ("a/./b", "a/b"),
        ("spaces ok: yes", "spaces ok: yes"),
        ("héllo", "h_llo"),
        ("a" * 300, "a" * 250),
    ],
)
def test_safe_key(text: str, expected: str) -> None:
    assert safe_key(text) == expected
    assert is_valid_key(safe_key(text))
    assert search("safe_key(@)", text) == expected


def test_safe_key_cut_does_not_leave_a_trailing_slash() -> None:
    key = safe_key("a" * 249 + "/bcd")
    assert key == "a" * 249
    assert is_valid_key(key)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("sample/total", True),
        ("usage/mockllm/model/input", True),
        ("a.b-c d:e", True),
        ("a@b", False),
        ("a//b", False),
        ("/a", False),
        ("a/", False),
        ("../a", False),
        ("a/../b", False),
        (".", False),
        ("", False),
        ("a" * 251, False),
    ],
)
def test_is_valid_key(text: str, valid: bool) -> None:
    assert is_valid_key(text) is valid


def test_to_text() -> None:
    assert to_text(1.0) == "1.0"
    assert to_text(False) == "false"
    assert to_text({"a": "é"}) == '{"a":"é"}'


# compact / coalesce / sum_known


def test_compact_coalesce_sum_known() -> None:
    assert search("compact(@)", [None, 0, "", None, False]) == [0, "", False]
    assert search("compact(nothing)", {}) == []
    assert search("coalesce(a, b, c)", {"b": 0, "c": 1}) == 0
    assert search("coalesce(a)", {}) is None
    assert search("sum_known(@)", [1, None, 2]) == 3
    assert search("sum_known(@)", []) is None
    assert search("sum_known(nothing)", {}) is None
    with pytest.raises(functions.FunctionValueError):
        search("sum_known(@)", [1, True])


def test_bools_are_not_numbers_in_builtins() -> None:
    with pytest.raises(exceptions.JMESPathTypeError):
        search("sum(@)", [1, True])


# lazy views


class FakeView(dict):
    """Stands in for the runtime's lazy views: a dict subclass with materialize()."""

    materialized = 0

    def materialize(self) -> dict:
        FakeView.materialized += 1
        return {key: value for key, value in self.items()}


class FakeListView(list):
    def materialize(self) -> list:
        return [item.materialize() if hasattr(item, "materialize") else item for item in self]


def test_views_pass_type_checks() -> None:
    view = FakeView(a=1, b=2)
    # Without materialisation, jmespath's type-name check rejects a dict subclass.
    with pytest.raises(exceptions.JMESPathTypeError):
        jmespath.search("keys(@)", view)
    assert search("keys(@)", view) == ["a", "b"]
    assert search("items(@)", view) == [{"key": "a", "value": 1}, {"key": "b", "value": 2}]
    assert search("type(@)", view) == "object"
    assert search("length(@)", FakeListView([1, 2, 3])) == 3
    assert search("sum(@)", FakeListView([1, 2, 3])) == 6


def test_nested_views_materialised_only_when_looked_into() -> None:
    doc = {"events": [FakeView(event="model", n=1), FakeView(event="tool", n=2)]}
    FakeView.materialized = 0
    assert search("length(events[?event == 'model'])", doc) == 1
    assert FakeView.materialized == 0
    assert search("json(events)", doc) == '[{"event":"model","n":1},{"event":"tool","n":2}]'
    assert FakeView.materialized == 2
    assert search("merge(events[0], events[1])", doc) == {"event": "tool", "n": 2}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_safe_key_always_valid_and_idempotent(text: str) -> None:
    key = safe_key(text)
    assert is_valid_key(key)
    assert safe_key(key) == key
    if is_valid_key(text) and ".." not in text:
        assert key == text
