"""A recorded scenario replayed through the engine: the operations it makes, and views of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from payloads import Recording

from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._mapping import load_mapping
from inspect_mlflow._operations import AppendRows, LogMetrics

NOW = 1_750_000_000.0


@dataclasses.dataclass
class Replay:
    rec: Recording
    engine: Engine
    ops: list[Any]

    def of(self, kind: type, run: str | None = None) -> list[Any]:
        return [op for op in self.ops if isinstance(op, kind) and (run is None or op.run == run)]

    def metric_points(self, key: str) -> list[tuple[float, int]]:
        return [(m.value, m.step) for op in self.of(LogMetrics) for m in op.metrics if m.key == key]

    def rows(self, path: str) -> list[dict[str, Any]]:
        return [row for op in self.of(AppendRows) if op.path == path for row in op.rows]

    @property
    def task_key(self) -> str:
        return f"task:{self.rec['task_start'][0].eval_id}"

    @property
    def eval_key(self) -> str:
        return f"eval:{self.rec['run_start'][0].run_id}"


def replay(
    rec: Recording,
    mapping: Any = None,
    points: Iterator[tuple[str, Any]] | None = None,
    evaluator: Any = None,
) -> Replay:
    engine = Engine(mapping or load_mapping(), clock=lambda: NOW)
    if evaluator is not None:
        engine._evaluator = evaluator
    ops: list[Any] = []
    for point, data in points if points is not None else rec.sequence:
        ops.extend(engine.handle(point, context(point, data)))
    return Replay(rec, engine, ops)
