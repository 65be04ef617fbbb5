"""``index_by`` and ``get``: the join a trace rule needs to pair span_begin with span_end."""

from __future__ import annotations

import jmespath
import pytest
from jmespath import exceptions

from inspect_mlflow._mapping.functions import FUNCTION_TABLE, OPTIONS, MappingFunctions


def search(expression: str, data: object) -> object:
    return jmespath.search(expression, data, OPTIONS)


EVENTS = [
    {"event": "span_begin", "id": "s1", "name": "solver", "timestamp": "t0"},
    {"event": "model", "uuid": "m1", "span_id": "s1", "timestamp": "t1"},
    {"event": "span_begin", "id": "s2", "name": "scorer", "timestamp": "t2"},
    {"event": "span_end", "id": "s2", "timestamp": "t3"},
    {"event": "span_end", "id": "s1", "timestamp": "t4"},
]


def test_index_by_and_get_pair_begin_with_end() -> None:
    doc = {"ends": search("index_by([?event == 'span_end'], &id)", EVENTS), "events": EVENTS}
    assert set(doc["ends"]) == {"s1", "s2"}
    pairs = [
        (begin["name"], search("get(ends, begin.id).timestamp", {**doc, "begin": begin}))
        for begin in EVENTS
        if begin["event"] == "span_begin"
    ]
    assert pairs == [("solver", "t4"), ("scorer", "t3")]


def test_index_by_skips_null_keys_later_wins_and_keys_are_text() -> None:
    data = [{"k": 1, "v": "a"}, {"v": "no key"}, {"k": 1, "v": "b"}, {"k": True, "v": "c"}]
    assert search("index_by(@, &k)", data) == {
        "1": {"k": 1, "v": "b"},
        "true": {"k": True, "v": "c"},
    }
    assert search("index_by(missing, &k)", {}) == {}
    assert search("get(index_by(@, &k), `1`).v", data) == "b"


def test_get_is_null_for_missing_object_key_or_name() -> None:
    assert search("get(o, 'x')", {"o": {"x": 0}}) == 0
    assert search("get(o, 'y')", {"o": {"x": 0}}) is None
    assert search("get(o, 'x')", {}) is None
    assert search("get(o, k)", {"o": {"x": 0}}) is None
    with pytest.raises(exceptions.JMESPathTypeError):
        search("get(@, 'x')", [1])
    with pytest.raises(exceptions.JMESPathTypeError):
        search("index_by(@, 'id')", [1])  # the key must be an expression reference


def test_known_to_the_static_checker_with_their_arity() -> None:
    assert FUNCTION_TABLE["index_by"].accepts(2) and not FUNCTION_TABLE["index_by"].accepts(1)
    assert FUNCTION_TABLE["get"].accepts(2) and not FUNCTION_TABLE["get"].accepts(3)
    for name in ("index_by", "get"):
        assert ">>>" in (getattr(MappingFunctions, f"_func_{name}").__doc__ or "")


def test_a_mapping_using_them_loads() -> None:
    from inspect_mlflow._mapping import load_mapping_text

    mapping = load_mapping_text(
        """
version: 1
runs:
  task: {open: task_start, close: task_end, key: eval_id, status: "'FINISHED'"}
rules:
  sample_end:
    - run: task
      trace:
        key: sample.uuid
        start: sample.started_at
        spans:
          for_each:
            ends: "[index_by(sample.events[?event == 'span_end'], &id)]"
            begin: "sample.events[?event == 'span_begin']"
          id: begin.id
          name: begin.name
          start: begin.timestamp
          end: get(ends, begin.id).timestamp
"""
    )
    [rule] = mapping.rules["sample_end"]
    assert rule.trace is not None and rule.trace.spans is not None
    assert rule.trace.spans.end is not None and "get(" in rule.trace.spans.end.text
