"""Helpers for the fault tests: record what the hook emitted, check it all landed once.

``assert_landed_exactly(uri, experiment, ops)`` compares a list of write operations (what
the engine produced, or what a spool file holds) with what the store has: every run once
(by its logical key), every param and tag, the exact multiset of metric points per run
and key (a lost point or a duplicate fails), every table's row count, every trace once
with its assessments, and each run's final status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogMetrics,
    LogParams,
    LogTrace,
    OpenRun,
    Operation,
    SetTags,
)
from inspect_mlflow._writer.mlflow_sink import RUN_KEY_TAG
from inspect_mlflow._writer.writer import BackgroundWriter


@contextlib.contextmanager
def recorded_emits() -> Iterator[list[Operation]]:
    """Every operation any BackgroundWriter is given while the block runs.

    Writers of this process only: the block sets ``INSPECT_MLFLOW_DELIVERY=thread`` so
    that evals run in it evaluate and write here, not in the delivery process.
    """
    seen: list[Operation] = []
    original = BackgroundWriter.emit
    delivery = os.environ.get("INSPECT_MLFLOW_DELIVERY")
    os.environ["INSPECT_MLFLOW_DELIVERY"] = "thread"

    def emit(self: BackgroundWriter, ops: Sequence[Operation]) -> None:
        seen.extend(ops)
        original(self, ops)

    BackgroundWriter.emit = emit  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        BackgroundWriter.emit = original  # type: ignore[method-assign]
        if delivery is None:
            os.environ.pop("INSPECT_MLFLOW_DELIVERY", None)
        else:
            os.environ["INSPECT_MLFLOW_DELIVERY"] = delivery


class Captured(logging.Handler):
    """Records of the ``inspect_mlflow`` loggers (usable outside a test's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextlib.contextmanager
def captured_logs(name: str = "inspect_mlflow") -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _point(step: int, timestamp: int, value: float) -> tuple[int, int, str]:
    return (int(step), int(timestamp), repr(float(value)))


def runs_by_key(client: Any, experiment: str) -> dict[str, list[Any]]:
    """Runs of an experiment grouped by logical key (a duplicate shows as two)."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} does not exist"
    grouped: dict[str, list[Any]] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        grouped.setdefault(run.data.tags.get(RUN_KEY_TAG, "?"), []).append(run)
    return grouped


def assert_landed_exactly(tracking_uri: str, experiment: str, ops: Sequence[Operation]) -> None:
    """Everything in ``ops`` is in the store, once (see the module docstring)."""
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = runs_by_key(client, experiment)
    opened = {op.run for op in ops if isinstance(op, OpenRun)}
    assert opened, "nothing was opened"
    for key in opened:
        assert len(runs.get(key, [])) == 1, f"run {key}: {len(runs.get(key, []))} runs, not 1"
    assert set(runs) == opened, f"unexpected runs: {set(runs) - opened}"
    run = {key: found[0] for key, found in runs.items()}

    params: dict[str, dict[str, str]] = {}
    tags: dict[str, dict[str, str]] = {}
    points: dict[tuple[str, str], Counter[tuple[int, int, str]]] = {}
    rows: Counter[tuple[str, str]] = Counter()
    traces: dict[str, dict[str, int]] = {}
    status: dict[str, str] = {}
    for op in ops:
        if isinstance(op, LogParams):
            params.setdefault(op.run, {}).update(op.params)
        elif isinstance(op, SetTags):
            tags.setdefault(op.run, {}).update(op.tags)
        elif isinstance(op, LogMetrics):
            for m in op.metrics:
                points.setdefault((op.run, m.key), Counter())[
                    _point(m.step, m.timestamp_ms, m.value)
                ] += 1
        elif isinstance(op, AppendRows):
            rows[(op.run, op.path)] += len(op.rows)
        elif isinstance(op, LogTrace):
            # Feedback and expectations (the target) are both assessments of the trace.
            traces.setdefault(op.run, {})[op.trace_key] = len(op.feedback) + len(
                getattr(op, "expectations", ())
            )
        elif isinstance(op, CloseRun):
            status[op.run] = op.status

    for key, expected in params.items():
        got = run[key].data.params
        assert {k: got.get(k) for k in expected} == expected, f"params of {key}"
    for key, expected in tags.items():
        got = run[key].data.tags
        assert {k: got.get(k) for k in expected} == expected, f"tags of {key}"
    for (key, metric), expected in points.items():
        history = client.get_metric_history(run[key].info.run_id, metric)
        got = Counter(_point(m.step, m.timestamp, m.value) for m in history)
        assert got == expected, f"metric {metric} of {key}: {got} != {expected}"
    for (key, path), count in rows.items():
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run[key].info.run_id, path, tmp)
            content = json.loads(Path(local).read_text())
        data = content["data"] if isinstance(content, dict) else content
        assert len(data) == count, f"table {path} of {key}: {len(data)} rows, not {count}"
    tracing = TracingClient(tracking_uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    for key, expected in traces.items():
        found = tracing.search_traces(
            locations=[exp_id], run_id=run[key].info.run_id, max_results=500
        )
        assert len(found) == len(expected), f"traces of {key}: {len(found)} != {len(expected)}"
        assessments = sorted(len(t.info.assessments) for t in found)
        assert assessments == sorted(expected.values()), f"assessments of {key}"
    for key, final in status.items():
        assert run[key].info.status == final, f"status of {key}"
