"""Which points the eval's process sends to the delivery process (the payload-only filter)."""

from __future__ import annotations

import textwrap

from inspect_mlflow._engine.relevance import PointFilter
from inspect_mlflow._mapping import load_mapping, load_mapping_text

RUNS = """
version: 1
counters: [n]
runs:
  task:
    open: task_start
    close: task_end
    key: eval_id
    name: name
    status: "'FINISHED'"
rules:
"""


def filter_for(rules: str) -> PointFilter:
    text = RUNS + textwrap.indent(textwrap.dedent(rules), "  ")
    return PointFilter(load_mapping_text(text, "test.yaml"))


def test_default_mapping_sends_model_and_tool_events_only() -> None:
    matters = PointFilter(load_mapping()).matters
    model = {"event": {"event": "model", "completed": "2026-01-01T00:00:00", "uuid": "a"}}
    assert matters("sample_event", model)
    assert matters("sample_event", {"event": {"event": "tool", "uuid": "b"}})
    assert not matters("sample_event", {"event": {"event": "state", "uuid": "c"}})
    assert not matters("sample_event", {"event": {"event": "model", "pending": True}})
    # points that open or close runs, or have rules without a condition, always go
    assert matters("sample_end", {})
    assert matters("task_start", {})
    assert matters("run_end", {})


def test_condition_reading_engine_state_is_never_decided_here() -> None:
    filt = filter_for(
        """
        sample_event:
          - run: task
            when: "counter.n.count > `3`"
            metrics: {x: "`1`"}
        """
    )
    assert filt.matters("sample_event", {"event": {"event": "state"}})


def test_condition_that_fails_lets_the_engine_see_and_report_it() -> None:
    filt = filter_for(
        """
        sample_event:
          - run: task
            when: "length(event.event) > `1`"
            metrics: {x: "`1`"}
        """
    )
    assert not filt.matters("sample_event", {"event": {"event": "a"}})
    assert filt.matters("sample_event", {"event": {"event": "abc"}})
    # a function error (length of a number) must reach the engine, which counts it
    assert filt.matters("sample_event", {"event": {"event": 5}})


def test_jmespath_truthiness_zero_is_true() -> None:
    filt = filter_for(
        """
        sample_event:
          - run: task
            when: event.n
            metrics: {x: "`1`"}
        """
    )
    assert filt.matters("sample_event", {"event": {"n": 0}})
    for empty in (None, False, "", [], {}):
        assert not filt.matters("sample_event", {"event": {"n": empty}})


def test_point_without_rules_is_not_sent() -> None:
    filt = filter_for(
        """
        sample_end:
          - run: task
            metrics: {x: "`1`"}
        """
    )
    assert not filt.matters("sample_event", {"event": {}})
    assert filt.matters("sample_end", {})


def test_only_points_with_conditions_are_decided_in_the_eval_process() -> None:
    filt = PointFilter(load_mapping())
    assert filt.decides("sample_event")
    # points that open or close runs, or have unconditional rules, always go
    assert not filt.decides("sample_end")
    assert not filt.decides("task_start")
