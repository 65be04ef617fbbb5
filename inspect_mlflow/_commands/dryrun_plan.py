"""The dry run's sink: operations folded into what each run would receive, nothing sent.

Why a sink: the dry run delivers through the same pipeline as every other path (engine
-> scrub -> track -> deliver), and only its last step differs: :class:`PlanCapture`
takes the batches a writer would send and keeps, per run, its tags, params, metric
points, table rows, records, artifacts, traces and inputs (:class:`RunPlan`), noting on
the way what MLflow would refuse or cut (:class:`Finding`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from inspect_mlflow._engine.values import MAX_CELL_CHARS, MAX_PARAM_CHARS, MAX_TAG_CHARS
from inspect_mlflow._keys import TRUNCATION_MARKER
from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogArtifact,
    LogInputs,
    LogMetrics,
    LogParams,
    LogTrace,
    OpenRun,
    Operation,
    SetTags,
)

__all__ = ["FIRST_ROWS", "Finding", "PlanCapture", "RunPlan", "dumps", "iso_time", "short_text"]

FIRST_ROWS = 2
"""Rows shown per table (and records per records file)."""

SHOWN_CHARS = 120
"""Longest value shown in the text report (the JSON report has everything)."""


@dataclass
class Finding:
    """One kind of problem at one place, with how often it happened."""

    kind: str
    where: str
    message: str
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "kind": self.kind,
            "where": self.where,
            "message": self.message,
            "count": self.count,
        }


@dataclass
class RunPlan:
    """Everything one run would receive."""

    key: str
    kind: str
    name: str | None
    parent: str | None
    start_time_ms: int
    status: str | None = None
    end_time_ms: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path -> ``{"rows": n, "columns": [...], "first_rows": [...]}``."""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path -> ``{"count": n, "first": [...]}``."""
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path -> ``{"chars": n}`` (size of the JSON text)."""
    traces: dict[str, Any] = field(
        default_factory=lambda: {"count": 0, "spans": 0, "max_spans": 0, "feedback": {}}
    )
    """``count``, ``spans`` (total), ``max_spans`` (per trace), ``feedback`` (name ->
    assessments) and ``first`` (the first trace, summarised)."""
    models: list[dict[str, Any]] = field(default_factory=list)
    """The LoggedModels linked as inputs: ``{"key", "name", "tags", "params"}``."""
    datasets: list[dict[str, Any]] = field(default_factory=list)
    """The dataset inputs: ``{"name", "digest", "source", "profile", "context", ...}``."""
    links: dict[str, list[str]] = field(default_factory=dict)
    """``model ... dataset ...`` -> the metric keys logged for it."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (metric points as ``[step, value]`` pairs)."""
        return {
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "parent": self.parent,
            "status": self.status,
            "start_time": iso_time(self.start_time_ms),
            "end_time": iso_time(self.end_time_ms),
            "tags": self.tags,
            "params": self.params,
            "metrics": {k: [list(p) for p in v] for k, v in sorted(self.metrics.items())},
            "tables": self.tables,
            "records": self.records,
            "artifacts": self.artifacts,
            "traces": self.traces,
            "models": self.models,
            "datasets": self.datasets,
            "metric_links": self.links,
        }


class PlanCapture:
    """Folds operations into :class:`RunPlan` s and notes what MLflow would refuse or cut.

    It has a sink's ``send``/``close`` shape: the dry run's pipeline delivers to
    :meth:`send` where the live one delivers to the writer.

    Args:
        max_spans: As ``INSPECT_MLFLOW_TRACE_MAX_SPANS``, for the over-limit check.
    """

    def __init__(self, max_spans: int) -> None:
        self.runs: dict[str, RunPlan] = {}
        self.findings: dict[tuple[str, str], Finding] = {}
        self.max_spans = max_spans

    def note(self, kind: str, where: str, message: str) -> None:
        """Count one finding at ``where``; the first message there is kept."""
        found = self.findings.get((kind, where))
        if found is None:
            self.findings[(kind, where)] = Finding(kind, where, message)
        else:
            found.count += 1

    def send(self, ops: list[Operation]) -> None:
        """Fold one delivered batch into the runs' plans."""
        for op in ops:
            if isinstance(op, OpenRun):
                if op.run not in self.runs:
                    self.runs[op.run] = RunPlan(
                        op.run, op.kind, op.name, op.parent, op.start_time_ms, tags=dict(op.tags)
                    )
                self._check_texts(op.run, "tag", op.tags, MAX_TAG_CHARS)
                continue
            run = self.runs.get(op.run)
            if run is None:
                self.note("no_run", op.run, f"a write to {op.run}, which was never opened")
                continue
            if isinstance(op, SetTags):
                run.tags.update(op.tags)
                self._check_texts(op.run, "tag", op.tags, MAX_TAG_CHARS)
            elif isinstance(op, LogParams):
                self._params(run, op.params)
            elif isinstance(op, LogMetrics):
                self._metrics(run, op)
            elif isinstance(op, AppendRows):
                self._rows(run, op)
            elif isinstance(op, LogArtifact):
                if op.path in run.artifacts:
                    self.note(
                        "overwritten", f"{op.run} {op.path}", "artifact written more than once"
                    )
                run.artifacts[op.path] = {"chars": len(dumps(op.content))}
            elif isinstance(op, LogTrace):
                self._trace(run, op)
            elif isinstance(op, LogInputs):
                self._inputs(run, op)
            elif isinstance(op, CloseRun):
                run.status, run.end_time_ms = op.status, op.end_time_ms

    def close(self) -> None:
        """Nothing to release."""

    def _check_texts(self, run: str, space: str, values: Mapping[str, str], limit: int) -> None:
        for key, value in values.items():
            if len(value) >= limit and value.endswith(TRUNCATION_MARKER):
                self.note(
                    "over_limit",
                    f"{run} {space} {key}",
                    f"{space} value cut to MLflow's limit of {limit} characters",
                )

    def _params(self, run: RunPlan, params: Mapping[str, str]) -> None:
        self._check_texts(run.key, "param", params, MAX_PARAM_CHARS)
        for key, value in params.items():
            old = run.params.get(key)
            if old is not None and old != value:
                self.note(
                    "param_changed",
                    f"{run.key} param {key}",
                    f"param logged again with another value ({short_text(old, 40)} -> "
                    f"{short_text(value, 40)}); MLflow refuses to change a param",
                )
                continue
            run.params[key] = value

    @staticmethod
    def _inputs(run: RunPlan, op: LogInputs) -> None:
        for model in op.models:
            entry = asdict(model)
            if entry not in run.models:
                run.models.append(entry)
        for dataset in op.datasets:
            entry = asdict(dataset)
            if entry not in run.datasets:
                run.datasets.append(entry)

    def _metrics(self, run: RunPlan, op: LogMetrics) -> None:
        for metric in op.metrics:
            if metric.model is not None or metric.dataset_name is not None:
                parts = []
                if metric.model is not None:
                    parts.append(f"model {metric.model}")
                if metric.dataset_name is not None:
                    parts.append(f"dataset {metric.dataset_name} ({metric.dataset_digest})")
                keys = run.links.setdefault(", ".join(parts), [])
                if metric.key not in keys:
                    keys.append(metric.key)
            points = run.metrics.setdefault(metric.key, [])
            if any(step == metric.step for step, _ in points):
                self.note(
                    "step_reused",
                    f"{run.key} metric {metric.key}",
                    "a step used more than once for this key (the chart shows both points)",
                )
            points.append((metric.step, metric.value))

    def _rows(self, run: RunPlan, op: AppendRows) -> None:
        target = run.tables if op.format == "table" else run.records
        entry = target.get(op.path)
        if entry is None:
            if op.format == "table":
                entry = target[op.path] = {"rows": 0, "columns": [], "first_rows": []}
            else:
                entry = target[op.path] = {"count": 0, "first": []}
        for row in op.rows:
            if op.format == "table":
                entry["rows"] += 1
                columns = entry["columns"]
                columns.extend(c for c in row if c not in columns)
                if len(entry["first_rows"]) < FIRST_ROWS:
                    entry["first_rows"].append(row)
                for column, cell in row.items():
                    if isinstance(cell, str) and cell.endswith(TRUNCATION_MARKER):
                        if len(cell) >= MAX_CELL_CHARS:
                            self.note(
                                "over_limit",
                                f"{run.key} {op.path} column {column}",
                                f"table cells cut at {MAX_CELL_CHARS} characters",
                            )
                    elif isinstance(cell, (dict, list)) and _cut_inside(cell):
                        self.note(
                            "over_limit",
                            f"{run.key} {op.path} column {column}",
                            f"table cells cut at about {MAX_CELL_CHARS} characters "
                            "(long strings inside an object or list)",
                        )
            else:
                entry["count"] += 1
                if len(entry["first"]) < FIRST_ROWS:
                    entry["first"].append(row)

    def _trace(self, run: RunPlan, op: LogTrace) -> None:
        traces = run.traces
        traces["count"] += 1
        traces["spans"] += len(op.spans)
        traces["max_spans"] = max(traces["max_spans"], len(op.spans))
        feedback: dict[str, int] = traces["feedback"]
        for item in op.feedback:
            feedback[item.name] = feedback.get(item.name, 0) + 1
        if op.model is not None:
            models: dict[str, int] = traces.setdefault("models", {})
            models[op.model] = models.get(op.model, 0) + 1
        if "first" not in traces:
            traces["first"] = {
                "name": op.name,
                "key": op.trace_key,
                "start_time": iso_time(op.start_time_ns // 1_000_000),
                "end_time": iso_time(op.end_time_ns // 1_000_000),
                "status": op.status,
                "spans": len(op.spans),
                "tags": op.tags,
                "feedback": [
                    {"name": f.name, "value": f.value, "rationale": f.rationale}
                    for f in op.feedback
                ],
            }
        if len(op.spans) > self.max_spans:
            self.note(
                "over_limit",
                f"{run.key} traces",
                f"traces with more than {self.max_spans} spans: the rest are counted, not "
                "sent (INSPECT_MLFLOW_TRACE_MAX_SPANS)",
            )


def _cut_inside(value: Any) -> bool:
    """Whether a string inside an object or list cell was cut (it ends with the marker)."""
    if isinstance(value, str):
        return value.endswith(TRUNCATION_MARKER)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_cut_inside(item) for item in items)


def iso_time(ms: int | None) -> str | None:
    """Epoch milliseconds as UTC ISO text (None for none)."""
    if not ms:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    """Compact JSON text, for sizes and the report."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def short_text(value: Any, limit: int = SHOWN_CHARS) -> str:
    """One line of at most ``limit`` characters showing ``value``."""
    text = value if isinstance(value, str) else dumps(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."
