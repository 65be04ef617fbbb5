"""The replay of a log against what Inspect really handed a live hook for the same eval.

``payloads.record_scenario("ok")`` records every hook payload of a real eval (3 samples x
2 epochs, 3 at a time, a tool call each, two scorers); the replay of that eval's ``.eval``
file must give the same lifecycle points, in the same order per sample, with each event
once, and the engine must turn both into the same writes. No MLflow here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from inspect_ai import hooks as inspect_hooks
from payloads import record_scenario

from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._inspect.log_payloads import (
    Replayed,
    run_end_point,
    run_start_point,
    task_points,
)
from inspect_mlflow._inspect.log_reading import read_header
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._operations import LogMetrics, LogTrace, OpenRun

SAMPLE_POINTS = (
    "sample_init",
    "sample_start",
    "sample_attempt_start",
    "sample_scoring",
    "sample_attempt_end",
    "sample_end",
)


@pytest.fixture(scope="module")
def recorded() -> Any:
    return record_scenario("ok")


@pytest.fixture(scope="module")
def replayed(recorded: Any) -> list[Replayed]:
    path = recorded.logs[0].location
    header = read_header(path)
    return [run_start_point([header]), *task_points(path, header), run_end_point([header])]


def test_payloads_are_inspect_hook_dataclasses(replayed: list[Replayed]) -> None:
    names = {
        "run_start": "RunStart",
        "task_start": "TaskStart",
        "sample_event": "SampleEvent",
        "sample_end": "SampleEnd",
        "task_end": "TaskEnd",
        "run_end": "RunEnd",
        "model_usage": "ModelUsageData",
    }
    for item in replayed:
        if item.point in names:
            assert type(item.data) is getattr(inspect_hooks, names[item.point])
    assert all(item.time is not None and item.time > 1.6e9 for item in replayed)


def test_same_points_as_live(recorded: Any, replayed: list[Replayed]) -> None:
    live = Counter(point for point, _ in recorded.sequence if point != "sample_event")
    again = Counter(item.point for item in replayed if item.point != "sample_event")
    assert again == live
    assert live["sample_end"] == 6 and live["model_usage"] == 12


def test_each_event_once_without_the_init_events(recorded: Any, replayed: list[Replayed]) -> None:
    # Live, a finished model event arrives twice; the replay feeds each event once.
    live = {(d.sample_id, d.event.uuid) for d in recorded["sample_event"]}
    events = [(i.data.sample_id, i.data.event.uuid) for i in replayed if i.point == "sample_event"]
    assert len(events) == len(set(events))
    assert set(events) == live
    kinds = {i.data.event.event for i in replayed if i.point == "sample_event"}
    assert "sample_init" not in kinds and {"model", "tool", "score"} <= kinds


def test_sample_points_in_live_order(recorded: Any, replayed: list[Replayed]) -> None:
    def per_sample(pairs: list[tuple[str, Any]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for point, data in pairs:
            if point in SAMPLE_POINTS:
                out.setdefault(data.sample_id, []).append(point)
        return out

    live = per_sample(recorded.sequence)
    again = per_sample([(i.point, i.data) for i in replayed])
    assert again == live
    assert all(points == list(SAMPLE_POINTS) for points in again.values())


def test_samples_end_in_completion_order(recorded: Any, replayed: list[Replayed]) -> None:
    ends = [i for i in replayed if i.point == "sample_end"]
    done = [i.data.sample.completed_at for i in ends]
    assert done == sorted(done)
    assert [i.time for i in ends] == sorted(i.time for i in ends)
    # Live, samples running at once may end in another order than their completion
    # times (no timestamp records when sample_end fired): the same samples, though.
    live = [d.sample.uuid for d in recorded["sample_end"]]
    assert sorted(i.data.sample.uuid for i in ends) == sorted(live)


def _writes(pairs: list[tuple[str, Any, float | None]]) -> dict[str, Any]:
    mapping = load_mapping(None)
    clock = [0.0]
    engine = Engine(mapping, clock=lambda: clock[0])
    metrics: dict[str, list[tuple[int, float]]] = {}
    opened, traces = [], []
    for point, data, when in pairs:
        if when is not None:
            clock[0] = when
        for op in engine.handle(point, context(point, data)):
            if isinstance(op, LogMetrics):
                for m in op.metrics:
                    metrics.setdefault(m.key, []).append((m.step, m.value))
            elif isinstance(op, OpenRun):
                opened.append((op.run, op.name, op.parent, op.tags))
            elif isinstance(op, LogTrace):
                traces.append((op.trace_key, len(op.spans), len(op.feedback)))
    return {"metrics": metrics, "runs": opened, "traces": sorted(traces)}


def test_the_engine_writes_the_same_as_live(recorded: Any, replayed: list[Replayed]) -> None:
    live = _writes([(p, d, 0.0) for p, d in recorded.sequence])
    again = _writes([(i.point, i.data, i.time) for i in replayed])
    assert again["runs"] == live["runs"]
    assert again["traces"] == live["traces"]
    assert set(again["metrics"]) == set(live["metrics"])
    for key, points in live["metrics"].items():
        if key.startswith(("per_call/", "per_sample/")):
            # Live, samples ran 3 at a time: their events interleave, and they may end,
            # differently (the e2e test, one sample at a time, compares exact steps).
            assert sorted(p[0] for p in again["metrics"][key]) == sorted(p[0] for p in points)
            assert sorted(p[1] for p in again["metrics"][key]) == sorted(p[1] for p in points)
        else:
            # Means over samples are summed in the order the samples ended, which differs
            # between the live run and the replay: equal up to floating-point rounding.
            got, want = sorted(again["metrics"][key]), sorted(points)
            assert [p[0] for p in got] == [p[0] for p in want], key
            assert [p[1] for p in got] == pytest.approx([p[1] for p in want], rel=1e-9), key


def test_engine_run_keys_name_the_runs_a_point_opens(replayed: list[Replayed]) -> None:
    engine = Engine(load_mapping(None))
    start = next(i for i in replayed if i.point == "task_start")
    run = replayed[0]
    assert engine.run_keys("task_start", context("task_start", start.data)) == [
        f"task:{start.data.eval_id}"
    ]
    assert engine.run_keys("run_start", context("run_start", run.data)) == [
        f"eval:{run.data.run_id}"
    ]
    assert engine.run_keys("sample_end", context("run_start", run.data)) == []
    # Outside an eval set no run is continued (``resume`` is false).
    ctx = context("task_start", start.data)
    assert engine.run_keys("task_start", ctx, resumable=True) == []
    assert engine.run_keys("task_start", ctx, resumable=False) == [f"task:{start.data.eval_id}"]
    assert engine.open_runs() == []
