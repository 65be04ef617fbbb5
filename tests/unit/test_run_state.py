"""The engine's per-run bookkeeping of metric steps: compact, and it catches a step reused.

A counter's steps (0, 1, 2, ...) must cost one range however many points a run writes,
and a step written twice with another value must still be caught after the values of
early steps are no longer kept.
"""

from __future__ import annotations

import json

from inspect_mlflow._engine.run_state import STEP_VALUES_KEPT, UNKNOWN_VALUE, MetricSteps


def test_points_keep_counter_steps_as_one_range_and_catch_reuse() -> None:
    points = MetricSteps(0, 1.0)
    for step in range(1, 1000):
        assert points.add(step, float(step)) is None
    assert points.ranges == [[0, 999]]
    assert len(points.values) == STEP_VALUES_KEPT
    assert points.add(999, 999.0) == 999.0  # the latest step: its value is known
    assert points.add(3, 5.0) == 3.0  # an early step: remembered
    assert points.add(500, 1.0) is UNKNOWN_VALUE  # a step past the kept values: still caught


def test_points_merge_out_of_order_steps() -> None:
    points = MetricSteps(10, 0.0)
    for step in (12, 11, 5, 7, 6, 20):
        assert points.add(step, 1.0) is None
    assert points.ranges == [[5, 7], [10, 12], [20, 20]]
    assert points.add(8, 1.0) is None and points.add(9, 1.0) is None
    assert points.ranges == [[5, 12], [20, 20]]
    assert points.add(6, 1.0) == 1.0 and points.add(4, 2.0) is None
    assert points.ranges == [[4, 12], [20, 20]]
    assert json.dumps(points.values)  # plain numbers only
