"""The mapping-language parts behind issue 17: run times, span exceptions, expectations.

Unit level (engine only, plain documents); the end-to-end checks against real evals are
in ``test_e2e_first_look.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._mapping import MappingInvalid, load_mapping_text
from inspect_mlflow._operations import CloseRun, LogTrace, OpenRun

MAPPING = """
version: 1
runs:
  task:
    open: task_start
    close: task_end
    key: eval_id
    start: created
    end: latest([finished, last_sample])
    status: "'FINISHED'"
rules:
  sample_end:
    - run: task
      trace:
        key: uuid
        start: "'2024-01-01T00:00:00Z'"
        spans:
          for_each: {span: spans}
          id: span.id
          name: span.id
          start: "'2024-01-01T00:00:00Z'"
          exception: "span.raised && {type: 'RuntimeError', message: error, stacktrace: tb}"
        expectations:
          name: "'expected_response'"
          value: target
          metadata: {sample_id: id}
"""

NOW = 1_000.0


def _engine() -> Engine:
    return Engine(load_mapping_text(MAPPING, "first-look.yaml"), clock=lambda: NOW)


def _ops(engine: Engine, point: str, doc: dict[str, Any]) -> list[Any]:
    return engine.handle(point, doc)


def test_run_times_come_from_the_mapping_and_fall_back_to_the_point() -> None:
    engine = _engine()
    [opened] = _ops(engine, "task_start", {"eval_id": "e", "created": "2024-01-01T00:00:01Z"})
    assert isinstance(opened, OpenRun) and opened.start_time_ms == 1_704_067_201_000
    [closed] = _ops(
        engine,
        "task_end",
        {"eval_id": "e", "finished": "2024-01-01T00:00:05+00:00", "last_sample": 1704067205.5},
    )
    assert isinstance(closed, CloseRun) and closed.end_time_ms == 1_704_067_205_500

    engine = _engine()
    [opened] = _ops(engine, "task_start", {"eval_id": "f"})  # no time: the point's
    [closed] = _ops(engine, "task_end", {"eval_id": "f"})
    assert (opened.start_time_ms, closed.end_time_ms) == (NOW * 1000, NOW * 1000)


def test_a_span_exception_marks_it_error_and_expectations_ride_with_the_trace() -> None:
    engine = _engine()
    _ops(engine, "task_start", {"eval_id": "e"})
    doc = {
        "eval_id": "e",
        "uuid": "u",
        "id": 7,
        "target": ["4", "four"],
        "error": "boom",
        "tb": "Traceback ...",
        "spans": [{"id": "ok"}, {"id": "bad", "raised": True}],
    }
    [trace] = [op for op in _ops(engine, "sample_end", doc) if isinstance(op, LogTrace)]
    spans = {s.span_id: s for s in trace.spans}
    assert (spans["ok"].status, spans["ok"].exception) == ("OK", None)
    assert spans["bad"].status == "ERROR" and spans["bad"].error == "boom"
    assert spans["bad"].exception == {
        "type": "RuntimeError",
        "message": "boom",
        "stacktrace": "Traceback ...",
    }
    [expectation] = trace.expectations
    assert (expectation.name, expectation.value) == ("expected_response", ["4", "four"])
    assert expectation.metadata == {"sample_id": "7"}
    assert engine.problem_summary() == []


def test_expectations_need_a_name_and_a_value() -> None:
    broken = MAPPING.replace("          name: \"'expected_response'\"\n", "")
    with pytest.raises(MappingInvalid, match="name"):
        load_mapping_text(broken, "broken.yaml")
