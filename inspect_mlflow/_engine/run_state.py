"""What the engine remembers of each open run: counters, series, keys taken, metric steps.

Plain data, kept between lifecycle points; the run lifecycle (:mod:`.runs`) creates, parks
and restores it, and the rules (:mod:`.rules`) read and update it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from inspect_mlflow._mapping.model import RunSpec

__all__ = ["STEP_VALUES_KEPT", "UNKNOWN_VALUE", "MetricSteps", "RunState"]

STEP_VALUES_KEPT = 64
"""Values remembered per metric key and run (steps are all remembered, as ranges)."""

UNKNOWN_VALUE: Any = object()
"""What :meth:`MetricSteps.add` returns for a step written before whose value was forgotten."""

_INT_MAX = 2**63


@dataclass
class RunState:
    """State of one open run: what ``counter``, ``series``, ``unique`` and keys need."""

    spec: RunSpec
    key: str
    name: str | None
    parent: str | None
    children: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    series: dict[str, list[Any]] = field(default_factory=dict)
    seen: dict[int, set[str]] = field(default_factory=dict)
    """Values already seen by each rule's ``unique`` (by rule number)."""
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, safe key) -> the original key that took it first."""
    renamed: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, original key) -> the suffixed key it was given after a collision."""
    resume: bool = False
    """Opened with a truthy ``resume``: kept (parked) when closed, so it can continue."""
    context: Any = None
    """The context that opened the run, as plain JSON: ``run.parent.context`` of its
    children (kept only for kinds that are some kind's parent)."""
    points: dict[str, MetricSteps] = field(default_factory=dict)
    """Metric key -> the steps it was written at, to catch a step written twice."""
    models: list[str] = field(default_factory=list)
    """Identities of the models linked to the run as inputs (``run.models``)."""
    datasets: dict[str, str] = field(default_factory=dict)
    """Name -> digest of the datasets linked to the run (``run.datasets``; ``link``)."""
    columns: dict[tuple[str, int], list[tuple[str, bool] | None]] = field(default_factory=dict)
    """(table path, id of a rule's row entries) -> per column, its safe name and whether it
    names a credential, when its name is fixed (None: rendered per row). A cache: the
    names a run gives its columns never change, and rows are the engine's hottest loop."""


class MetricSteps:
    """The steps one metric key was written at in one run, and (some of) their values.

    Steps are kept as sorted disjoint ranges, so a counter's steps (0, 1, 2, ...) cost
    one range however many points there are; values are kept for the first
    ``STEP_VALUES_KEPT`` steps and for the latest one. The common case (a step past the
    latest) is a comparison and an assignment.
    """

    __slots__ = ("top", "top_value", "ranges", "values")

    def __init__(self, step: int, value: float) -> None:
        self.top = step
        self.top_value = value
        self.ranges: list[list[int]] = [[step, step]]
        self.values: dict[int, float] = {step: value}

    def add(self, step: int, value: float) -> Any:
        """Record a point; what ``step`` held already (``UNKNOWN_VALUE``: forgotten), or None."""
        if step > self.top:
            last = self.ranges[-1]
            if step == last[1] + 1:
                last[1] = step
            else:
                self.ranges.append([step, step])
            self.top, self.top_value = step, value
            if len(self.values) < STEP_VALUES_KEPT:
                self.values[step] = value
            return None
        if step == self.top:
            return self.top_value
        ranges = self.ranges
        at = bisect.bisect_right(ranges, [step, _INT_MAX]) - 1
        if at >= 0 and ranges[at][0] <= step <= ranges[at][1]:
            return self.values.get(step, UNKNOWN_VALUE)
        if at >= 0 and ranges[at][1] == step - 1:
            ranges[at][1] = step
            if at + 1 < len(ranges) and ranges[at + 1][0] == step + 1:
                ranges[at][1] = ranges.pop(at + 1)[1]
        elif at + 1 < len(ranges) and ranges[at + 1][0] == step + 1:
            ranges[at + 1][0] = step
        else:
            ranges.insert(at + 1, [step, step])
        if len(self.values) < STEP_VALUES_KEPT:
            self.values[step] = value
        return None
