"""Dry run: what a mapping would write to MLflow for one eval log, without MLflow.

Why: a mapping author wants to see the runs, keys, values and steps a mapping produces,
and the expressions that silently gave nothing, before spending an eval on it. The log
is replayed through the same lifecycle points and engine as ``inspect-mlflow import``
(``_importer``); the operations are captured in memory instead of being sent.

What it flags, most certain first:

- likely typos: fields that no Inspect payload of the expression's lifecycle point has
  (``sample.scroes``), found from Inspect's own types without the log
  (:mod:`inspect_mlflow._inspect.payload_fields`), each with a "did you mean";
- the engine's problems (expressions that raised, values of the wrong type such as a
  text metric, rules with no open run, keys that collide once made MLflow-safe), each
  with where it comes from in the mapping;
- expressions that gave nothing (null, empty or failed) every time they ran, grouped by
  the field this log did not have, and rules that never applied (their point never
  fired, or their ``when`` never held);
- what MLflow would refuse or cut: a param logged again with another value, a metric
  step used twice for one key, text cut to MLflow's limits, a trace over the span cap.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inspect_mlflow._delivery.pipeline import Pipeline, environment_secrets
from inspect_mlflow._engine.contexts import context
from inspect_mlflow._engine.engine import Engine, Problem, Problems
from inspect_mlflow._engine.values import MAX_CELL_CHARS, MAX_PARAM_CHARS, MAX_TAG_CHARS
from inspect_mlflow._engine.views import MISSING
from inspect_mlflow._inspect.field_errors import absent_field, explain_error
from inspect_mlflow._inspect.payload_fields import FieldTypo, field_typos
from inspect_mlflow._keys import TRUNCATION_MARKER
from inspect_mlflow._mapping.model import (
    CompiledMapping,
    Entries,
    Expr,
    KeyTemplate,
    Loops,
    ObjectExpr,
    Rule,
    Where,
)
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

__all__ = ["DryRunReport", "Finding", "RunPlan", "dry_run"]

FIRST_ROWS = 2
"""Rows shown per table (and records per records file)."""

_SHOWN_CHARS = 120
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
            "start_time": _iso(self.start_time_ms),
            "end_time": _iso(self.end_time_ms),
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


@dataclass
class DryRunReport:
    """The runs a mapping would write for one log, and what looks wrong."""

    mapping: list[str]
    log: str
    runs: list[RunPlan]
    problems: list[Finding]
    gave_nothing: list[dict[str, str]]
    """``{"where", "expression", "absent"}`` of expressions that never gave a value;
    ``absent`` is the field this log did not have (or had empty), "" when every field it
    reads was there (a condition or function gave nothing)."""
    never_applied: list[dict[str, str]]
    """``{"where", "rule", "reason"}`` of rules that wrote nothing because they never ran."""
    typos: list[dict[str, str]] = field(default_factory=list)
    """``{"where", "expression", "path", "message"}`` of fields no payload of the point has."""
    short: dict[str, str] = field(default_factory=dict, repr=False)
    """Mapping file -> the short name the text report uses for it (``default.yaml``)."""

    @property
    def failed(self) -> bool:
        """Whether ``check --log`` should exit 1: a likely typo or a problem."""
        return bool(self.typos or self.problems)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for ``check --format json``."""
        return {
            "mapping": self.mapping,
            "log": self.log,
            "runs": [run.to_dict() for run in self.runs],
            "typos": self.typos,
            "problems": [p.to_dict() for p in self.problems],
            "gave_nothing": self.gave_nothing,
            "never_applied": self.never_applied,
        }

    def to_text(self) -> str:
        """The human report: per run what would be written, then what to look at."""
        return "\n".join(_text_lines(self)) + "\n"


# -- capture -----------------------------------------------------------------------------


class _Capture:
    """Folds operations into :class:`RunPlan` s and notes what MLflow would refuse or cut.

    It has a sink's ``send``/``close`` shape, so it could sit behind the writer too; the
    dry run calls it directly.
    """

    def __init__(self, max_spans: int) -> None:
        self.runs: dict[str, RunPlan] = {}
        self.findings: dict[tuple[str, str], Finding] = {}
        self.max_spans = max_spans

    def note(self, kind: str, where: str, message: str) -> None:
        found = self.findings.get((kind, where))
        if found is None:
            self.findings[(kind, where)] = Finding(kind, where, message)
        else:
            found.count += 1

    def send(self, ops: list[Operation]) -> None:
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
                run.artifacts[op.path] = {"chars": len(_dumps(op.content))}
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
                    f"param logged again with another value ({_short(old, 40)} -> "
                    f"{_short(value, 40)}); MLflow refuses to change a param",
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
                "start_time": _iso(op.start_time_ns // 1_000_000),
                "end_time": _iso(op.end_time_ns // 1_000_000),
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


# -- instrumented engine -----------------------------------------------------------------


class _PlacedProblems(Problems):
    """The engine's problem counts, kept per place and never logged (they are printed)."""

    def __init__(self) -> None:
        super().__init__()
        self.placed: dict[tuple[str, str], Finding] = {}

    def add(self, kind: str, where: Any, message: str) -> None:
        """Count one problem at its place; remember the first message there."""
        problem = self.by_kind.setdefault(kind, Problem(kind, 0, f"{where}: {message}"))
        problem.count += 1
        place = str(where) if where else ""
        found = self.placed.get((kind, place))
        if found is None:
            self.placed[(kind, place)] = Finding(kind, place, message)
        else:
            found.count += 1


_PROBES = 50
"""Evaluations of an expression that gave nothing probed for the field that was absent."""


class _WatchingEngine(Engine):
    """The engine, noting for each expression whether it ever gave a value, and why not."""

    def __init__(
        self, mapping: CompiledMapping, typos: Sequence[FieldTypo] = (), **kwargs: Any
    ) -> None:
        super().__init__(mapping, **kwargs)
        self.problems = _PlacedProblems()
        self.runs_of: dict[int, int] = {}
        """id(expr) -> evaluations."""
        self.gave: dict[int, int] = {}
        """id(expr) -> evaluations that gave a value (not null, "", [] or {})."""
        self.held: dict[int, int] = {}
        """id(expr) -> evaluations that were true (JMESPath truthiness)."""
        self.absent: dict[int, Counter[str]] = {}
        """id(expr) -> the absent (or empty) field each probed empty evaluation found."""
        self.typos: dict[tuple[Where, str], list[FieldTypo]] = {}
        for typo in typos:
            self.typos.setdefault((typo.where, typo.expression), []).append(typo)
        self._rendering = 0

    def _render(self, template: KeyTemplate, doc: Any) -> str | None:
        # A placeholder that gives "" is a value (the key just has no text there).
        self._rendering += 1
        try:
            return super()._render(template, doc)
        finally:
            self._rendering -= 1

    def _search(self, expr: Expr, doc: Any) -> Any:
        try:
            value = self._evaluator.search(expr, doc)
        except Exception as err:
            hints = self.typos.get((expr.where, expr.text), ())
            self.problems.add("expression_error", expr.where, explain_error(expr, err, hints))
            value = MISSING
        key = id(expr)
        self.runs_of[key] = self.runs_of.get(key, 0) + 1
        empty = value is MISSING or value is None
        if not empty and isinstance(value, (str, list, dict)) and len(value) == 0:
            empty = not (self._rendering and isinstance(value, str))
        if not empty:
            self.gave[key] = self.gave.get(key, 0) + 1
            if value is not False:
                self.held[key] = self.held.get(key, 0) + 1
        elif not self.gave.get(key):
            seen = self.absent.setdefault(key, Counter())
            if sum(seen.values()) < _PROBES:
                seen[absent_field(expr, doc) or ""] += 1
        return value


def _entry_exprs(entries: Entries) -> Iterator[Expr]:
    for template, expr in entries:
        yield from _template_exprs(template)
        yield expr


def _template_exprs(template: KeyTemplate | None) -> Iterator[Expr]:
    if template is not None:
        yield from (part for part in template.parts if isinstance(part, Expr))


def _loop_exprs(loops: Loops) -> Iterator[Expr]:
    yield from (expr for _, expr in loops)


def _value_exprs(value: Expr | ObjectExpr | None) -> Iterator[Expr]:
    if isinstance(value, ObjectExpr):
        yield from _entry_exprs(value.entries)
    elif value is not None:
        yield value


def _rule_exprs(rule: Rule) -> Iterator[Expr | None]:
    """Every expression of a rule except ``when`` (reported as "never applied")."""
    yield rule.unique
    yield rule.step
    yield from (expr for _, expr in rule.collect)
    yield from _loop_exprs(rule.for_each)
    for entries in (rule.params, rule.tags, rule.metrics, rule.row):
        yield from _entry_exprs(entries)
    for template in (rule.table, rule.records, rule.artifact):
        yield from _template_exprs(template)
    yield from _value_exprs(rule.record)
    yield from _value_exprs(rule.value)
    if rule.model is not None:
        yield rule.model.name
        yield from _entry_exprs(rule.model.tags)
        yield from _entry_exprs(rule.model.params)
    if rule.dataset is not None:
        data = rule.dataset
        yield from (data.name, data.digest, data.source, data.source_type, data.context)
        yield from _value_exprs(data.profile)
        yield from _value_exprs(data.schema)
    if rule.link is not None:
        yield from (rule.link.model, rule.link.dataset)
    trace = rule.trace
    if trace is None:
        return
    yield from (trace.key, trace.name, trace.start, trace.end, trace.inputs, trace.outputs)
    yield trace.status
    yield from _entry_exprs(trace.tags)
    yield from _entry_exprs(trace.metadata)
    yield trace.model
    if trace.spans is not None:
        spans = trace.spans
        yield from _loop_exprs(spans.for_each)
        yield from (spans.id, spans.parent, spans.name, spans.type, spans.start, spans.end)
        yield from (spans.inputs, spans.outputs, spans.status, spans.error)
        yield from _entry_exprs(spans.attributes)
    if trace.feedback is not None:
        feedback = trace.feedback
        yield from _loop_exprs(feedback.for_each)
        yield from (feedback.name, feedback.value, feedback.rationale, feedback.error)
        yield from _entry_exprs(feedback.metadata)
    expectations = getattr(trace, "expectations", None)
    if expectations is not None:
        yield from _loop_exprs(expectations.for_each)
        yield from (expectations.name, expectations.value)
        yield from _entry_exprs(expectations.metadata)


def _mapping_exprs(mapping: CompiledMapping) -> Iterator[Expr]:
    """Every expression of the mapping that writes or shapes a value, in mapping order."""
    for spec in mapping.runs.values():
        yield spec.key
        if spec.name is not None:
            yield spec.name
        yield from _entry_exprs(spec.tags)
        yield spec.status
    for rules in mapping.rules.values():
        for rule in rules:
            yield from (expr for expr in _rule_exprs(rule) if expr is not None)


# -- the dry run -------------------------------------------------------------------------


def dry_run(
    mapping: CompiledMapping,
    log: str | Path,
    *,
    log_artifacts: bool = True,
    traces: bool = True,
    max_spans: int = 1000,
    secrets: Sequence[str] | None = None,
) -> DryRunReport:
    """Replay one log through ``mapping`` and report what would be written.

    Args:
        mapping: The compiled mapping.
        log: A ``.eval`` or ``.json`` Inspect log.
        log_artifacts: As ``INSPECT_MLFLOW_LOG_ARTIFACTS``: False leaves tables,
            records and artifacts out.
        traces: As ``INSPECT_MLFLOW_TRACES``: False leaves traces out.
        max_spans: As ``INSPECT_MLFLOW_TRACE_MAX_SPANS``, for the over-limit check.
        secrets: Credential values to mask in what the report shows, through the live
            path's scrub step (None: those of the environment, as the hook would mask).

    Returns:
        The report.

    Raises:
        LogReadError: The log cannot be read (a sample that cannot be read is reported
            as a problem instead, after the samples before it).
    """
    from inspect_mlflow._inspect.log_payloads import (
        LogClock,
        Replayed,
        run_end_point,
        run_start_point,
        task_points,
    )
    from inspect_mlflow._inspect.log_reading import LogReadError, read_header

    header = read_header(log)
    clock = LogClock()
    typos = field_typos(mapping)
    engine = _WatchingEngine(mapping, typos, log_artifacts=log_artifacts, clock=clock)
    capture = _Capture(max_spans)
    pipeline = Pipeline(capture.send, environment_secrets() if secrets is None else secrets)
    points = mapping.points()
    fired: set[str] = set()

    def feed(item: Replayed) -> None:
        if item.point not in points:
            return
        fired.add(item.point)
        if item.time is not None:
            clock.now = item.time
        ops = engine.handle(item.point, context(item.point, item.data, **item.ids))
        if not traces:
            ops = [op for op in ops if not isinstance(op, LogTrace)]
        pipeline.emit(ops)

    feed(run_start_point([header]))
    try:
        for item in task_points(log, header, points):
            feed(item)
    except LogReadError as err:
        capture.note("unreadable", str(log), str(err))
    feed(run_end_point([header]))

    problems = sorted(engine.problems.placed.values(), key=lambda f: (f.kind, f.where))
    problems.extend(capture.findings.values())
    report = DryRunReport(
        mapping=list(mapping.files),
        log=str(log),
        runs=list(capture.runs.values()),
        problems=problems,
        gave_nothing=_gave_nothing(mapping, engine),
        never_applied=_never_applied(mapping, engine, fired),
        typos=[
            {
                "where": str(t.where),
                "expression": t.expression,
                "path": t.path,
                "message": t.message,
            }
            for t in typos
        ],
        short=short_names(mapping.files),
    )
    # The engine's messages may quote a value too: mask the whole report once more.
    return pipeline.scrubber.value(report) if pipeline.scrubber else report


def _gave_nothing(mapping: CompiledMapping, engine: _WatchingEngine) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    seen: set[int] = set()
    for expr in _mapping_exprs(mapping):
        key = id(expr)
        if key in seen:
            continue
        seen.add(key)
        if (expr.where, expr.text) in engine.typos:
            continue  # reported as a likely typo
        if engine.runs_of.get(key) and not engine.gave.get(key):
            seen_absent = engine.absent.get(key) or Counter()
            # The deepest field: absent even where the fields before it are there
            # (`event.output.usage.total_cost` of a model call, not `event.output` of a span).
            named = [(label.count("."), n, label) for label, n in seen_absent.items() if label]
            absent = max(named)[2] if named else ""
            out.append({"where": str(expr.where), "expression": expr.text, "absent": absent})
    return out


def _never_applied(
    mapping: CompiledMapping, engine: _WatchingEngine, fired: set[str]
) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for point, rules in mapping.rules.items():
        for number, rule in enumerate(rules):
            name = rule.id or f"{point}[{number}]"
            if point not in fired:
                reason = f"{point} never fired for this log"
            elif rule.when is not None and not engine.held.get(id(rule.when)):
                reason = f"its when never held: {rule.when.text}"
            else:
                continue
            out.append({"where": str(rule.where), "rule": name, "reason": reason})
    return out


# -- text --------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _short(value: Any, limit: int = _SHOWN_CHARS) -> str:
    text = value if isinstance(value, str) else _dumps(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metric_line(key: str, points: list[tuple[int, float]], width: int) -> str:
    ordered = sorted(points, key=lambda p: p[0])
    first, last = ordered[0], ordered[-1]
    if len(points) == 1:
        where, shown = f"step {first[0]}", _number(first[1])
    else:
        where = f"steps {first[0]}..{last[0]} ({len(points)} points)"
        shown = f"first {_number(first[1])}, last {_number(last[1])}"
    return f"    {key:<{width}}  {where}: {shown}"


def _run_lines(run: RunPlan) -> Iterator[str]:
    """One run: a header line, then only the sections that have something."""
    head = f"run {run.key}  name {run.name!r}  kind {run.kind}"
    if run.parent:
        head += f"  parent {run.parent}"
    yield f"{head}  -> {run.status or 'left open'}"
    yield f"  time: {_iso(run.start_time_ms)} -> {_iso(run.end_time_ms)}"
    for title, values in (("tags", run.tags), ("params", run.params)):
        if values:
            yield f"  {title} ({len(values)})"
            yield from (f"    {k} = {_short(v)}" for k, v in values.items())
    for model in run.models:
        yield f"  model input: LoggedModel {model['name']!r} (model {model['key']})"
        for title in ("tags", "params"):
            yield from (f"    {title[:-1]} {k} = {_short(v)}" for k, v in model[title].items())
    for data in run.datasets:
        yield (
            f"  dataset input: {data['name']!r} digest {data['digest']}  "
            f"context {data['context']}  source {data['source']}  profile {data['profile']}"
        )
    if run.metrics:
        points = sum(len(p) for p in run.metrics.values())
        width = min(max(len(k) for k in run.metrics), 48)
        yield f"  metrics ({len(run.metrics)} keys, {points} points)"
        yield from (_metric_line(k, p, width) for k, p in sorted(run.metrics.items()))
    for link, keys in run.links.items():
        yield f"  metrics for {link}: {len(keys)} keys ({_short(', '.join(keys))})"
    if run.tables:
        yield f"  tables ({len(run.tables)})"
    for path, table in run.tables.items():
        yield f"    {path}: {table['rows']} rows, {len(table['columns'])} columns"
        for number, row in enumerate(table["first_rows"], 1):
            yield f"      row {number}: {_short(row)}"
    if run.records:
        yield f"  records ({len(run.records)})"
    for path, records in run.records.items():
        yield f"    {path}: {records['count']} records"
        for number, record in enumerate(records["first"], 1):
            yield f"      record {number}: {_short(record)}"
    if run.artifacts:
        yield f"  artifacts ({len(run.artifacts)})"
    for path, info in run.artifacts.items():
        yield f"    {path}: {info['chars']} characters of JSON"
    traces = run.traces
    if traces["count"]:
        feedback = ", ".join(f"{name} {n}" for name, n in sorted(traces["feedback"].items()))
        yield (
            f"  traces ({traces['count']}): {traces['spans']} spans "
            f"(at most {traces['max_spans']} per trace); feedback: {feedback or 'none'}"
        )
        for model, n in traces.get("models", {}).items():
            yield f"    for model {model} (trace metadata mlflow.modelId): {n}"
    first = traces.get("first")
    if first:
        assessments = ", ".join(f"{f['name']}={_short(f['value'], 20)}" for f in first["feedback"])
        yield (
            f"    first: {first['name']!r} {first['status']}, {first['spans']} spans, "
            f"feedback {assessments or 'none'}"
        )


def short_names(files: Sequence[str]) -> dict[str, str]:
    """Mapping file -> its name in the text report: ``default.yaml``, not a site-packages path.

    Its base name, unless two files share it; then its path relative to the current
    directory when inside it, else the whole path.
    """
    bases = Counter(os.path.basename(f) for f in files)
    out: dict[str, str] = {}
    for file in files:
        base = os.path.basename(file)
        if bases[base] == 1:
            out[file] = base
            continue
        try:
            relative = os.path.relpath(file)
        except ValueError:
            relative = file
        out[file] = file if relative.startswith("..") else relative
    return out


def _place(where: str, short: Mapping[str, str]) -> str:
    """``where`` with its mapping file by its short name."""
    for file, name in short.items():
        if where.startswith(file + ":"):
            return name + where[len(file) :]
    return where


def _places(wheres: Sequence[str], short: Mapping[str, str]) -> str:
    """``default.yaml:36:28, 68:28, 94:26``: file:line:col, the file only when it changes."""
    out: list[str] = []
    last = None
    for where in wheres:
        place = _place(where, short).split(": ", 1)[0]
        file, _, position = place.rpartition(":")
        file, _, line = file.rpartition(":")
        if not file:
            out.append(place)
            continue
        out.append(f"{line}:{position}" if file == last else place)
        last = file
    return ", ".join(out)


def _empty_groups(report: DryRunReport) -> list[tuple[str, list[str]]]:
    """Expressions that gave nothing, grouped by the field the log did not have."""
    groups: dict[str, list[str]] = {}
    for entry in report.gave_nothing:
        groups.setdefault(entry.get("absent", ""), []).append(entry["where"])
    order = {file: number for number, file in enumerate(report.mapping)}

    def position(where: str) -> tuple[int, ...]:
        for file, number in order.items():
            if where.startswith(file + ":"):
                line, _, col = where[len(file) + 1 :].split(":", 2)[:2] + [""]
                return (number, int(line) if line.isdigit() else 0)
        return (len(order), 0)

    for wheres in groups.values():
        wheres.sort(key=position)
    named = sorted(((k, v) for k, v in groups.items() if k), key=lambda kv: -len(kv[1]))
    return named + [("", groups[""])] if "" in groups else named


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _text_lines(report: DryRunReport) -> Iterator[str]:
    """Findings first (typos, then problems), the runs, then what was merely empty."""
    short = report.short
    mapping = " + ".join(report.mapping)
    yield f"Dry run of {mapping} on {report.log} (nothing is written)"
    yield ""
    if report.typos:
        yield (
            f"likely typos ({len(report.typos)}): fields no Inspect payload of that point has, "
            "so they never give a value"
        )
        for typo in report.typos:
            yield f"  {_place(typo['where'], short)}: {typo['message']}"
            yield f"      in: {typo['expression']}"
    yield f"problems ({len(report.problems)})"
    for problem in report.problems:
        times = f" (x{problem.count})" if problem.count > 1 else ""
        yield f"  {problem.kind}: {_place(problem.where, short)}: {problem.message}{times}"
    for run in report.runs:
        yield ""
        yield from _run_lines(run)
    yield ""
    groups = _empty_groups(report)
    if report.gave_nothing:
        yield (
            f"empty on this log ({_plural(len(report.gave_nothing), 'expression')}), by the "
            "field this log does not have (or has empty)"
        )
    for absent, wheres in groups:
        label = absent or "every field there (a condition or a function gave nothing)"
        yield f"  {label}: {len(wheres)} at {_places(wheres, short)}"
    if report.never_applied:
        yield f"rules that never applied ({len(report.never_applied)})"
    for rule in report.never_applied:
        place = _place(rule["where"], short).split(": ", 1)[0]
        yield f"  {place} ({rule['rule']}): {rule['reason']}"
    yield ""
    yield (
        f"{_plural(len(report.typos), 'likely typo')}, {_plural(len(report.problems), 'problem')}"
        f"; {_plural(len(report.gave_nothing), 'expression')} empty on this log, "
        f"{_plural(len(report.never_applied), 'rule')} never applied"
        + (" (see the top)" if report.failed else "")
    )
