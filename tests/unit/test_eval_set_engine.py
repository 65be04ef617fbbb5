"""Resumable run kinds (`resume:`): the language, the compiler's checks, the engine.

Hand-made contexts, no Inspect and no MLflow: what continues, what counts on, what is
saved when a resumable run closes, and that a kind without `resume` is untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._mapping import MappingInvalid, load_mapping, load_mapping_text
from inspect_mlflow._operations import (
    RUN_STATE_PATH,
    CloseRun,
    LogArtifact,
    LogMetrics,
    OpenRun,
)

MAPPING = """
version: 1
counters: [n, attempt]
series: [times]
runs:
  group:
    open: run_start
    close: run_end
    key: coalesce(set_id, run_id)
    resume: set_id != null
    status: "'FINISHED'"
  task:
    open: task_start
    close: task_end
    key: (set_id && format('{}/{}', set_id, task_id)) || eval_id
    resume: set_id != null
    parent: group
    name: name
    status: "(status == 'success' && 'FINISHED') || 'FAILED'"
rules:
  task_start:
    - run: task
      count: attempt
  sample_end:
    - run: task
      count: n
      collect: {times: time}
      step: counter.n.index
      metrics: {sample/time: time}
  task_end:
    - run: task
      step: counter.attempt.index
      metrics:
        samples: counter.n.count
        mean_time: avg(series.times)
"""

NOW = 1700000000.0


def engine(text: str = MAPPING) -> Engine:
    return Engine(load_mapping_text(text, "test.yaml"), clock=lambda: NOW)


def ctx(**values: Any) -> dict[str, Any]:
    base = {"set_id": "S", "run_id": "r1", "eval_id": "e1", "task_id": "T", "name": "arith"}
    base.update(values)
    return base


def points(ops: list[Any]) -> list[tuple[str, float, int]]:
    return [
        (m.key, m.value, m.step) for op in ops if isinstance(op, LogMetrics) for m in op.metrics
    ]


def attempt(eng: Engine, eval_id: str, times: list[float], status: str = "success", **ids: Any):
    """One task attempt: task_start, a sample_end per time, task_end; all ops."""
    ops = eng.handle("task_start", ctx(eval_id=eval_id, **ids))
    for t in times:
        ops += eng.handle("sample_end", ctx(eval_id=eval_id, time=t, **ids))
    ops += eng.handle("task_end", ctx(eval_id=eval_id, status=status, **ids))
    return ops


# -- the language ---------------------------------------------------------------------


def test_resume_accepts_true_false_and_expressions() -> None:
    for value, expected in (("true", True), ("false", None), ("run_id", "run_id")):
        text = MAPPING.replace("resume: set_id != null\n    parent", f"resume: {value}\n    parent")
        spec = load_mapping_text(text, "t.yaml").runs["task"]
        if expected is None:
            assert spec.resume is None
        else:
            assert spec.resume is not None
            assert spec.resume.search({"run_id": "x"}) in (True, "x")
    assert load_mapping_text(MAPPING.replace("    resume: set_id != null\n", ""), "t.yaml")


@pytest.mark.parametrize(
    ("value", "message"),
    [("3", "resume"), ("'unknown_fn(x)'", "unknown function"), ("'a ||'", "syntax")],
)
def test_resume_is_checked_at_load(value: str, message: str) -> None:
    text = MAPPING.replace("resume: set_id != null\n    parent", f"resume: {value}\n    parent")
    with pytest.raises(MappingInvalid) as caught:
        load_mapping_text(text, "t.yaml")
    text_errors = "\n".join(str(e) for e in caught.value.errors)
    assert "runs.task.resume" in text_errors
    assert message in text_errors


def test_default_mapping_resumes_only_inside_an_eval_set() -> None:
    mapping = load_mapping()
    for kind in ("eval", "task"):
        spec = mapping.runs[kind]
        assert spec.resume is not None
        assert spec.resume.search({"eval_set_id": "S"}) is True
        assert spec.resume.search({"eval_set_id": None}) is False
    task_key = mapping.runs["task"].key
    assert task_key.search({"eval_set_id": None, "eval_id": "E", "task_id": "T"}) == "E"
    assert task_key.search({"eval_set_id": "S", "eval_id": "E", "task_id": "T"}) == "S/T"
    eval_key = mapping.runs["eval"].key
    assert eval_key.search({"eval_set_id": None, "run_id": "R"}) == "R"
    assert eval_key.search({"eval_set_id": "S", "run_id": "R"}) == "S"


# -- the engine -----------------------------------------------------------------------


def test_a_retried_attempt_continues_the_open_run_and_its_counters() -> None:
    eng = engine()
    opened = eng.handle("run_start", ctx())
    assert opened == [OpenRun("group:S", "group", None, None, {}, int(NOW * 1000), resume=True)]
    first = eng.handle("task_start", ctx(eval_id="e1"))
    assert [op.run for op in first if isinstance(op, OpenRun)] == ["task:S/T"]
    first += eng.handle("sample_end", ctx(eval_id="e1", time=1.0))
    # Attempt 1 never reaches task_end; attempt 2 (new eval_id, same task) continues.
    second = attempt(eng, "e2", [3.0, 5.0])
    assert not [op for op in second if isinstance(op, OpenRun)]
    assert points(first + second) == [
        ("sample/time", 1.0, 0),
        ("sample/time", 3.0, 1),
        ("sample/time", 5.0, 2),
        ("samples", 3.0, 1),
        ("mean_time", 3.0, 1),
    ]
    assert [op for op in second if isinstance(op, CloseRun)] == [
        CloseRun("task:S/T", "FINISHED", int(NOW * 1000))
    ]


def test_a_closed_resumable_run_reopens_in_the_same_process() -> None:
    eng = engine()
    eng.handle("run_start", ctx())
    one = attempt(eng, "e1", [1.0], status="error")
    saved = [op for op in one if isinstance(op, LogArtifact)]
    assert saved == [
        LogArtifact(
            "task:S/T",
            RUN_STATE_PATH,
            {"version": 1, "counters": {"attempt": 1, "n": 1}, "series": {"times": [1.0]}},
        )
    ]
    assert one.index(saved[0]) == len(one) - 2 and isinstance(one[-1], CloseRun)
    assert one[-1].status == "FAILED"
    eng.handle("run_end", ctx())
    assert eng.open_runs() == []

    eng.handle("run_start", ctx(run_id="r2"))
    assert eng.pending_resumes("task_start", ctx(run_id="r2", eval_id="e2")) == []
    two = attempt(eng, "e2", [3.0], run_id="r2")
    reopened = [op for op in two if isinstance(op, OpenRun)]
    assert reopened == [
        OpenRun("task:S/T", "task", "arith", "group:S", {}, int(NOW * 1000), resume=True)
    ]
    assert points(two) == [("sample/time", 3.0, 1), ("samples", 2.0, 1), ("mean_time", 2.0, 1)]


def test_state_saved_by_an_earlier_process_is_restored_before_opening() -> None:
    earlier = engine()
    earlier.handle("run_start", ctx())
    ops = attempt(earlier, "e1", [1.0, 2.0], status="error")
    state = next(op.content for op in ops if isinstance(op, LogArtifact))

    later = engine()
    assert later.pending_resumes("run_start", ctx(run_id="r2")) == ["group:S"]
    later.restore("group:S", None)  # the group run saved nothing: start at zero
    assert later.pending_resumes("run_start", ctx(run_id="r2")) == []
    later.handle("run_start", ctx(run_id="r2"))
    start = ctx(run_id="r2", eval_id="e9")
    assert later.pending_resumes("task_start", start) == ["task:S/T"]
    later.restore("task:S/T", state)
    ops = attempt(later, "e9", [4.0], run_id="r2")
    assert points(ops) == [
        ("sample/time", 4.0, 2),
        ("samples", 3.0, 1),
        ("mean_time", pytest.approx(7.0 / 3), 1),
    ]
    # Unknown names and bad values in a saved state are ignored, not trusted.
    other = engine()
    other.restore("task:S/T", {"counters": {"n": -4, "nope": 3, "attempt": "x"}, "series": 5})
    other.handle("run_start", ctx())
    assert points(attempt(other, "e1", [1.0]))[0] == ("sample/time", 1.0, 0)


def test_without_resume_nothing_changes() -> None:
    eng = engine()
    plain = ctx(set_id=None)
    assert eng.pending_resumes("run_start", plain) == []
    assert eng.handle("run_start", plain) == [
        OpenRun("group:r1", "group", None, None, {}, int(NOW * 1000))
    ]
    ops = attempt(eng, "e1", [1.0], set_id=None)
    assert not [op for op in ops if isinstance(op, LogArtifact)]
    assert [op.run for op in ops if isinstance(op, OpenRun)] == ["task:e1"]
    # A closed run without resume is never opened again.
    assert eng.handle("task_start", ctx(set_id=None)) == []


def test_a_resumable_run_with_nothing_counted_saves_no_state() -> None:
    eng = engine()  # no rule counts or collects on the group run
    eng.handle("run_start", ctx())
    ops = eng.handle("run_end", ctx())
    assert [type(op).__name__ for op in ops] == ["CloseRun"]
