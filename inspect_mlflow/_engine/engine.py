"""The mapping engine: a lifecycle point's context in, plain write operations out.

Pure and synchronous: no MLflow, no threads, no Inspect. The hook builds the context
document (``views.context``), calls :meth:`Engine.handle` under its own lock (calls must
be serialised: counters, open runs and ``unique`` sets live here), and queues the
returned operations for the writer. Semantics are those of ``docs/mapping-language.md``:

1. runs whose ``open`` is this point are opened (parents first);
2. the point's rules run in order, each: ``when`` -> ``unique`` -> ``count`` ->
   ``collect`` -> ``for_each`` -> outputs (params, tags, metrics, table row, record,
   artifact, trace) per element;
3. runs whose ``close`` is this point are closed, their open children first.

Nothing here raises into the hook: an expression that fails skips only that output (or
that rule element) and is counted in :attr:`Engine.problems` with where it came from.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inspect_mlflow._engine.expr_compiler import Evaluator, is_false
from inspect_mlflow._engine.values import (
    MAX_CELL_CHARS,
    MAX_PARAM_CHARS,
    MAX_RECORD_CHARS,
    MAX_TAG_CHARS,
    REDACTED,
    Rejected,
    fit_json,
    is_credential_key,
    json_value,
    metric_value,
    step_value,
    text_value,
)
from inspect_mlflow._engine.views import MISSING, LazyView, to_json
from inspect_mlflow._keys import (
    MAX_KEY_LENGTH,
    logged_model_name,
    safe_key,
    safe_path,
    to_text,
    truncate_text,
)
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import (
    RUN_STATUSES,
    CompiledMapping,
    DatasetSpec,
    Entries,
    ExpectationSpec,
    Expr,
    FeedbackSpec,
    KeyTemplate,
    Loops,
    ModelSpec,
    ObjectExpr,
    Rule,
    RunSpec,
    SpanSpec,
    TraceSpec,
    Where,
)
from inspect_mlflow._operations import (
    RUN_STATE_PATH,
    AppendRows,
    CloseRun,
    DatasetData,
    ExpectationData,
    FeedbackData,
    LogArtifact,
    LogInputs,
    LogMetrics,
    LogParams,
    LogTrace,
    Metric,
    ModelData,
    OpenRun,
    Operation,
    SetTags,
    SpanData,
)

__all__ = ["PROBLEM_KINDS", "Engine", "Problem", "Problems"]

logger = logging.getLogger(__name__)

PROBLEM_KINDS: tuple[str, ...] = (
    "expression_error",
    "rejected_value",
    "no_run",
    "key_collision",
    "step_reused",
)
"""What the engine counts: an expression that raised; a value MLflow cannot take (a
metric that is text, a null trace key, ...); a rule whose run is not open; two keys that
became one MLflow-safe key in a run (the later one gets a hash suffix); a metric key
written twice at one step of a run with different values (MLflow keeps both points and
shows whichever it sorts last, so a headline number may be the wrong one)."""

_PROBLEM_NOUNS = {
    "expression_error": "expression errors",
    "rejected_value": "rejected values",
    "no_run": "rules with no open run",
    "key_collision": "key collisions",
    "step_reused": "metric steps written twice with different values",
}

_STEP_VALUES_KEPT = 64
"""Values remembered per metric key and run (steps are all remembered, as ranges)."""

_UNKNOWN = object()

_SAFE_CACHE_LIMIT = 20_000


@dataclass
class Problem:
    """Occurrences of one kind of problem, with the first one described."""

    kind: str
    count: int = 0
    first: str = ""


class Problems:
    """Counts of problems per kind; the first message of each kind is kept and logged."""

    def __init__(self) -> None:
        self.by_kind: dict[str, Problem] = {}

    def add(self, kind: str, where: Where | str | None, message: str) -> None:
        """Count one problem; log it at warning level when it is the first of its kind."""
        problem = self.by_kind.get(kind)
        if problem is None:
            text = f"{where}: {message}" if where else message
            problem = self.by_kind[kind] = Problem(kind, 0, text)
            logger.warning("inspect-mlflow: %s (further ones are counted)", text)
        problem.count += 1

    def count(self, kind: str) -> int:
        """How many problems of ``kind`` were counted."""
        problem = self.by_kind.get(kind)
        return problem.count if problem else 0

    def summary(self) -> list[str]:
        """One line per kind, e.g. ``3 rejected values (first: file:1:2: rules...: ...)``."""
        return [
            f"{p.count} {_PROBLEM_NOUNS.get(p.kind, p.kind)} (first: {p.first})"
            for kind in (*PROBLEM_KINDS, *sorted(set(self.by_kind) - set(PROBLEM_KINDS)))
            if (p := self.by_kind.get(kind)) is not None
        ]


@dataclass
class _Run:
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
    points: dict[str, _Points] = field(default_factory=dict)
    """Metric key -> the steps it was written at, to catch a step written twice."""
    models: list[str] = field(default_factory=list)
    """Identities of the models linked to the run as inputs (``run.models``)."""
    datasets: dict[str, str] = field(default_factory=dict)
    """Name -> digest of the datasets linked to the run (``run.datasets``; ``link``)."""


class _Points:
    """The steps one metric key was written at in one run, and (some of) their values.

    Steps are kept as sorted disjoint ranges, so a counter's steps (0, 1, 2, ...) cost
    one range however many points there are; values are kept for the first
    ``_STEP_VALUES_KEPT`` steps and for the latest one. The common case (a step past the
    latest) is a comparison and an assignment.
    """

    __slots__ = ("top", "top_value", "ranges", "values")

    def __init__(self, step: int, value: float) -> None:
        self.top = step
        self.top_value = value
        self.ranges: list[list[int]] = [[step, step]]
        self.values: dict[int, float] = {step: value}

    def add(self, step: int, value: float) -> Any:
        """Record a point; the value already at ``step`` (``_UNKNOWN`` if forgotten), else None."""
        if step > self.top:
            last = self.ranges[-1]
            if step == last[1] + 1:
                last[1] = step
            else:
                self.ranges.append([step, step])
            self.top, self.top_value = step, value
            if len(self.values) < _STEP_VALUES_KEPT:
                self.values[step] = value
            return None
        if step == self.top:
            return self.top_value
        ranges = self.ranges
        at = bisect.bisect_right(ranges, [step, _INT_MAX]) - 1
        if at >= 0 and ranges[at][0] <= step <= ranges[at][1]:
            return self.values.get(step, _UNKNOWN)
        if at >= 0 and ranges[at][1] == step - 1:
            ranges[at][1] = step
            if at + 1 < len(ranges) and ranges[at + 1][0] == step + 1:
                ranges[at][1] = ranges.pop(at + 1)[1]
        elif at + 1 < len(ranges) and ranges[at + 1][0] == step + 1:
            ranges[at + 1][0] = step
        else:
            ranges.insert(at + 1, [step, step])
        if len(self.values) < _STEP_VALUES_KEPT:
            self.values[step] = value
        return None


_INT_MAX = 2**63


COMPUTED_NAMES = frozenset({"counter", "series", "run"})
"""Names every rule document adds to the context (see ``docs/mapping-language.md``)."""


class _Doc(LazyView):
    """What an expression sees: the context, plus ``counter``, ``series``, ``run``, loop names.

    Chains to the context instead of copying it; the computed entries are built only
    when an expression reads them.
    """

    __slots__ = ("_base", "_engine", "_run", "_bound")

    def __init__(
        self, base: Mapping[str, Any], engine: Engine, run: _Run, bound: dict[str, Any]
    ) -> None:
        super().__init__()
        self._base = base
        self._engine = engine
        self._run = run
        self._bound = bound

    def __repr__(self) -> str:
        return f"_Doc({self._run.key}, bound={sorted(self._bound)})"

    def bind(self, names: Mapping[str, Any]) -> _Doc:
        """A document with loop names added (the computed entries are recomputed)."""
        return _Doc(self._base, self._engine, self._run, {**self._bound, **names})

    def get(self, key: Any, default: Any = None) -> Any:
        """Loop names first, then the computed entries (built once), then the context."""
        bound = self._bound
        if key in bound:
            return bound[key]
        if key in COMPUTED_NAMES:
            return super().get(key, default)
        return self._base.get(key, default)

    def refresh(self) -> None:
        """Forget loaded values (after counters or series changed)."""
        dict.clear(self)
        self._complete = False

    def _visible(self) -> list[str]:
        names = [key for key in self._base if key not in self._bound]
        names.extend(name for name in ("counter", "series", "run") if name not in self._base)
        names.extend(self._bound)
        return list(dict.fromkeys(names))

    def _load(self, key: str) -> Any:
        if key in self._bound:
            return self._bound[key]
        run = self._run
        if key == "counter":
            counts = run.counters
            return {
                name: {"count": counts.get(name, 0), "index": _index(counts.get(name, 0))}
                for name in self._engine.counter_names
            }
        if key == "series":
            return {name: run.series.get(name, []) for name in self._engine.series_names}
        if key == "run":
            parent = self._engine._runs.get(run.parent) if run.parent else None
            return {
                "kind": run.spec.kind,
                "key": run.key,
                "name": run.name,
                "models": list(run.models),
                "datasets": [{"name": n, "digest": d} for n, d in run.datasets.items()],
                "parent": None
                if parent is None
                else {
                    "kind": parent.spec.kind,
                    "key": parent.key,
                    "name": parent.name,
                    "context": parent.context,
                },
            }
        return self._base.get(key, MISSING)


def _index(count: int) -> int | None:
    """0-based index of the latest increment, null before the first one."""
    return count - 1 if count > 0 else None


def _text(value: Any) -> str | None:
    """An expression result as text (JSON text for non-strings); null stays None."""
    if value is None:
        return None
    return to_text(to_json(value))


def _status_ok_error(value: Any) -> str:
    """``ERROR`` when the expression says so (any case), else ``OK``."""
    return "ERROR" if isinstance(value, str) and value.upper() == "ERROR" else "OK"


def _exception(value: Any) -> dict[str, str] | None:
    """A span's exception as ``{type, message, stacktrace}`` text; a string is the message."""
    value = to_json(value)
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        return {"message": to_text(value)}
    out = {
        name: to_text(value[name])
        for name in ("type", "message", "stacktrace")
        if value.get(name) is not None
    }
    return out or None


def _cell(value: Any) -> Any:
    """A table cell: plain JSON, long strings cut with a marker, inside objects too."""
    kind = type(value)
    if kind is str:
        return truncate_text(value, MAX_CELL_CHARS) if len(value) > MAX_CELL_CHARS else value
    if kind is dict or kind is list:
        return fit_json(value, MAX_CELL_CHARS)
    return value


class Engine:
    """Evaluates a compiled mapping at each lifecycle point and returns write operations.

    One engine serves one logging session. It is not thread-safe: the caller serialises
    :meth:`handle` calls (the hook holds a lock); under that rule counters are exact and
    no step is used twice for one key in one run.

    Args:
        mapping: The compiled, validated mapping.
        log_artifacts: False drops tables, records and artifacts (``AppendRows`` and
            ``LogArtifact``); they are then not even evaluated.
        traces: False skips ``trace`` outputs without building them (at ``sample_end`` a
            trace with a span per event is the costliest output).
        clock: Seconds since the epoch (for run start/end and metric timestamps);
            replaceable in tests.
    """

    def __init__(
        self,
        mapping: CompiledMapping,
        *,
        log_artifacts: bool = True,
        traces: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mapping = mapping
        self.log_artifacts = log_artifacts
        self.traces = traces
        self._clock = clock
        self.counter_names: tuple[str, ...] = tuple(sorted(mapping.counters))
        self.series_names: tuple[str, ...] = tuple(sorted(mapping.series))
        self.problems = Problems()
        self._runs: dict[str, _Run] = {}
        self._closed: set[str] = set()
        self._parked: dict[str, _Run] = {}
        """Closed resumable runs of this process, by key: their state, should they continue."""
        self._saved: dict[str, Mapping[str, Any]] = {}
        """State of resumable runs closed in an earlier process (see :meth:`restore`)."""
        self.resume_points: frozenset[str] = mapping.resume_points()
        """Points that may open a resumable run (their state may need :meth:`restore`)."""
        self._safe_cache: dict[str, str] = {}
        self._path_cache: dict[str, str] = {}
        """Artifact paths keep Unicode letters (:func:`safe_path`); keys do not."""
        self._epoch_ns = _epoch_ns_function()
        self._evaluator = Evaluator(OPTIONS)

        self._parent_kinds = frozenset(s.parent for s in mapping.runs.values() if s.parent)
        depth = {kind: self._depth(kind) for kind in mapping.runs}
        by_depth = sorted(mapping.runs.values(), key=lambda spec: depth[spec.kind])
        self._opens: dict[str, tuple[RunSpec, ...]] = {}
        self._closes: dict[str, tuple[RunSpec, ...]] = {}
        for spec in by_depth:
            self._opens[spec.open] = (*self._opens.get(spec.open, ()), spec)
        for spec in reversed(by_depth):
            self._closes[spec.close] = (*self._closes.get(spec.close, ()), spec)

        self._rule_ids: dict[int, int] = {}
        self._fixed: dict[int, str] = {}
        for rules in mapping.rules.values():
            for rule in rules:
                self._rule_ids[id(rule)] = len(self._rule_ids)
                for template in self._templates(rule):
                    if template.is_fixed:
                        self._fixed[id(template)] = "".join(str(p) for p in template.parts)

    # -- public API -------------------------------------------------------------------

    def handle(self, point: str, ctx: Mapping[str, Any]) -> list[Operation]:
        """Open runs, apply the point's rules, close runs; return the writes, in order.

        Args:
            point: The lifecycle point that fired.
            ctx: Its context document (``views.context``); borrowed for this call only.

        Returns:
            Operations holding only plain JSON values (safe to queue and spool).
        """
        now_ms = int(self._clock() * 1000)
        ops: list[Operation] = []
        keys: dict[str, str | None] = {}
        for spec in self._opens.get(point, ()):
            self._guard(spec.where, self._open, spec, ctx, now_ms, ops, keys)
        for rule in self.mapping.rules.get(point, ()):
            self._guard(rule.where, self._apply, rule, ctx, now_ms, ops, keys)
        for spec in self._closes.get(point, ()):
            self._guard(spec.where, self._close_kind, spec, ctx, now_ms, ops, keys)
        return ops

    def close_all(
        self, ctx: Mapping[str, Any] | None = None, status: str = "FAILED"
    ) -> list[Operation]:
        """Close every open run, children first (for a session ending without its points).

        Args:
            ctx: When given, each run's ``status`` expression is evaluated on it.
            status: The status used without ``ctx``, or when the expression fails.

        Returns:
            The ``CloseRun`` operations.
        """
        now_ms = int(self._clock() * 1000)
        ops: list[Operation] = []
        for run in [r for r in self._runs.values() if r.parent not in self._runs]:
            if run.key in self._runs:
                self._close(run, ctx, now_ms, ops, fallback=status)
        return ops

    def open_runs(self) -> list[str]:
        """Logical keys of the runs still open, in the order they were opened."""
        return list(self._runs)

    def run_keys(
        self, point: str, ctx: Mapping[str, Any], *, resumable: bool | None = None
    ) -> list[str]:
        """Logical keys of the runs that ``point`` opens on ``ctx``, parents first.

        Changes nothing: ``inspect-mlflow import`` uses it to tell whether a log's runs
        are already in MLflow (the sink tags every run with its logical key).

        Args:
            point: A lifecycle point.
            ctx: Its context document.
            resumable: True: only runs this context would continue (their ``resume``
                holds); False: only the others; None: all.

        Returns:
            The keys whose key expression is not null, in the order they would open.
        """
        cache: dict[str, str | None] = {}
        keys = []
        for spec in self._opens.get(point, ()):
            if resumable is not None and self._resumes(spec, ctx) != resumable:
                continue
            key = self._run_key(spec.kind, ctx, cache)
            if key is not None:
                keys.append(key)
        return keys

    def pending_resumes(self, point: str, ctx: Mapping[str, Any]) -> list[str]:
        """Keys of resumable runs ``point`` opens on ``ctx`` that this engine knows nothing of.

        Their state (counters, series) may sit in MLflow from an earlier process; the
        caller reads it and hands it to :meth:`restore` before :meth:`handle`, so that a
        continued run counts on instead of starting again at zero. Changes nothing.
        """
        keys: list[str] = []
        cache: dict[str, str | None] = {}
        for spec in self._opens.get(point, ()):
            if spec.resume is None:
                continue
            key = self._run_key(spec.kind, ctx, cache)
            if key is None or key in self._runs or key in self._parked or key in self._saved:
                continue
            if self._resumes(spec, ctx):
                keys.append(key)
        return keys

    def restore(self, key: str, state: Mapping[str, Any] | None) -> None:
        """Give a resumable run the state it was closed with in an earlier process.

        Args:
            key: The run's logical key (from :meth:`pending_resumes`).
            state: The saved ``{"counters": {...}, "series": {...}}`` (see
                ``RUN_STATE_PATH``), or None when there is none: the run then starts
                from zero, and is not asked for again.
        """
        self._saved[key] = state if isinstance(state, Mapping) else {}

    def problem_summary(self) -> list[str]:
        """One line per kind of problem counted so far (empty when all went well)."""
        return self.problems.summary()

    # -- runs -------------------------------------------------------------------------

    def _depth(self, kind: str) -> int:
        depth, seen = 0, {kind}
        parent = self.mapping.runs[kind].parent
        while parent is not None and parent in self.mapping.runs and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = self.mapping.runs[parent].parent
        return depth

    def _run_key(self, kind: str, ctx: Mapping[str, Any], cache: dict[str, str | None]) -> Any:
        """The logical key ``<kind>:<value>`` of ``kind`` on this context (None if null)."""
        if kind in cache:
            return cache[kind]
        spec = self.mapping.runs.get(kind)
        key = None
        if spec is not None:
            value = self._search(spec.key, ctx)
            if value is not MISSING and value is not None:
                key = f"{kind}:{_text(value)}"
        cache[kind] = key
        return key

    def _open(
        self,
        spec: RunSpec,
        ctx: Mapping[str, Any],
        now_ms: int,
        ops: list[Operation],
        keys: dict[str, str | None],
    ) -> None:
        key = self._run_key(spec.kind, ctx, keys)
        if key is None:
            self.problems.add("no_run", spec.where, f"{spec.kind} run not opened: its key is null")
            return
        if key in self._runs:
            return
        resume = spec.resume is not None and self._resumes(spec, ctx)
        if key in self._closed and not resume:
            return
        parent = None
        if spec.parent is not None:
            parent = self._run_key(spec.parent, ctx, keys)
            if parent not in self._runs:
                self.problems.add(
                    "no_run", spec.where, f"parent {spec.parent} run of {key} is not open"
                )
                parent = None
        run = _Run(spec=spec, key=key, name=None, parent=parent, resume=resume)
        if spec.kind in self._parent_kinds:
            run.context = to_json(ctx)
        if resume:
            self._carry_over(run)
        doc = _Doc(ctx, self, run, {})
        if spec.name is not None:
            name = self._search(spec.name, doc)
            run.name = None if name is MISSING else _text(name)
        tags: dict[str, str] = {}
        for template, expr in spec.tags:
            self._text_entry(run, "tag", template, expr, doc, MAX_TAG_CHARS, tags)
        self._runs[key] = run
        if parent is not None:
            self._runs[parent].children.append(key)
        start_ms = self._run_time_ms(spec.start, doc, now_ms)
        ops.append(OpenRun(key, spec.kind, run.name, parent, tags, start_ms, resume=resume))

    def _resumes(self, spec: RunSpec, ctx: Mapping[str, Any]) -> bool:
        """Whether ``spec``'s ``resume`` is truthy on the opening context."""
        if spec.resume is None:
            return False
        value = self._search(spec.resume, ctx)
        return value is not MISSING and not is_false(value)

    def _carry_over(self, run: _Run) -> None:
        """Continue the counts of a run closed earlier in this process or an earlier one."""
        parked = self._parked.pop(run.key, None)
        if parked is not None:
            run.counters, run.series, run.seen = parked.counters, parked.series, parked.seen
            run.keys, run.renamed, run.points = parked.keys, parked.renamed, parked.points
            run.models, run.datasets = parked.models, parked.datasets
            return
        saved = self._saved.pop(run.key, None) or {}
        counters = saved.get("counters")
        if isinstance(counters, Mapping):
            run.counters = {
                name: value
                for name, value in counters.items()
                if name in self.counter_names and isinstance(value, int) and value >= 0
            }
        series = saved.get("series")
        if isinstance(series, Mapping):
            run.series = {
                name: list(values)
                for name, values in series.items()
                if name in self.series_names and isinstance(values, list)
            }

    def _close_kind(
        self,
        spec: RunSpec,
        ctx: Mapping[str, Any],
        now_ms: int,
        ops: list[Operation],
        keys: dict[str, str | None],
    ) -> None:
        """Close the run of ``spec``'s kind this context belongs to, if it is open."""
        key = self._run_key(spec.kind, ctx, keys)
        run = self._runs.get(key) if key else None
        if run is not None:
            self._close(run, ctx, now_ms, ops)

    def _close(
        self,
        run: _Run,
        ctx: Mapping[str, Any] | None,
        now_ms: int,
        ops: list[Operation],
        fallback: str = "FAILED",
    ) -> None:
        for child in list(run.children):
            child_run = self._runs.get(child)
            if child_run is not None:
                self._close(child_run, ctx, now_ms, ops, fallback)
        status = fallback
        end_ms = now_ms
        if ctx is not None:
            end_ms = self._run_time_ms(run.spec.end, _Doc(ctx, self, run, {}), now_ms)
            value = self._search(run.spec.status, _Doc(ctx, self, run, {}))
            if value is not MISSING:
                value = to_json(value)
                if value in RUN_STATUSES:
                    status = value
                else:
                    self.problems.add(
                        "rejected_value",
                        run.spec.status.where,
                        f"status of {run.key} must be one of {', '.join(RUN_STATUSES)}, "
                        f"got {value!r}; closed as {fallback}",
                    )
        del self._runs[run.key]
        self._closed.add(run.key)
        if run.resume:
            self._parked[run.key] = run
            if run.counters or run.series:  # nothing saved reads back as "start at zero"
                state = {"version": 1, "counters": dict(run.counters), "series": run.series}
                ops.append(LogArtifact(run.key, RUN_STATE_PATH, json_value(state)))
        parent = self._runs.get(run.parent) if run.parent else None
        if parent is not None and run.key in parent.children:
            parent.children.remove(run.key)
        ops.append(CloseRun(run.key, status, end_ms))  # type: ignore[arg-type]

    def _run_time_ms(self, expr: Expr | None, doc: _Doc, now_ms: int) -> int:
        """A run's start or end from the mapping (Inspect's own times), else the point's."""
        if expr is None:
            return now_ms
        ns = self._time_ns(expr, doc, required=False)
        return now_ms if ns is None else ns // 1_000_000

    # -- rules ------------------------------------------------------------------------

    def _apply(
        self,
        rule: Rule,
        ctx: Mapping[str, Any],
        now_ms: int,
        ops: list[Operation],
        keys: dict[str, str | None],
    ) -> None:
        key = self._run_key(rule.run, ctx, keys)
        run = self._runs.get(key) if key else None
        if run is None:
            self.problems.add("no_run", rule.where, f"no open {rule.run} run at {rule.point}")
            return
        doc = _Doc(ctx, self, run, {})
        if rule.when is not None:
            cond = self._search(rule.when, doc)
            if cond is MISSING or is_false(cond):
                return
        if rule.unique is not None:
            token = self._search(rule.unique, doc)
            if token is MISSING:
                return
            if token is not None:
                seen = run.seen.setdefault(self._rule_ids.get(id(rule), -1), set())
                text = _text(token) or ""
                if text in seen:
                    return
                seen.add(text)
        if rule.count:
            for name in rule.count:
                run.counters[name] = run.counters.get(name, 0) + 1
            doc.refresh()
        if rule.collect:
            for name, expr in rule.collect:
                value = self._search(expr, doc)
                if value is not MISSING and value is not None:
                    run.series.setdefault(name, []).append(json_value(value))
            doc.refresh()
        out = _Outputs()
        for element in self._elements(rule.for_each, doc):
            self._outputs(rule, run, element, now_ms, out)
        out.emit(run.key, ops)

    def _elements(self, loops: Loops, doc: _Doc) -> list[_Doc]:
        """One document per element of the ``for_each`` cartesian product (or just ``doc``)."""
        docs = [doc]
        for name, expr in loops:
            nxt: list[_Doc] = []
            for current in docs:
                value = self._search(expr, current)
                if value is MISSING or value is None:
                    continue
                if isinstance(value, Mapping):
                    seq: Iterable[Any] = [{"key": k, "value": v} for k, v in value.items()]
                elif isinstance(value, list):
                    seq = value
                else:
                    self.problems.add(
                        "rejected_value",
                        expr.where,
                        f"for_each {name} must give a list or an object, "
                        f"got {type(to_json(value)).__name__}",
                    )
                    continue
                nxt.extend(current.bind({name: item}) for item in seq)
            docs = nxt
            if not docs:
                break
        return docs

    def _outputs(self, rule: Rule, run: _Run, doc: _Doc, now_ms: int, out: _Outputs) -> None:
        """Evaluate every output of one rule element into ``out``."""
        for template, expr in rule.params:
            self._text_entry(run, "param", template, expr, doc, MAX_PARAM_CHARS, out.params)
        for template, expr in rule.tags:
            self._text_entry(run, "tag", template, expr, doc, MAX_TAG_CHARS, out.tags)
        if rule.metrics:
            self._metrics(rule, run, doc, now_ms, out)
        if self.log_artifacts:
            if rule.table is not None and rule.row:
                path = self._path(run, rule.table, doc)
                if path is not None:
                    row = self._row(run, path, rule.row, doc)
                    out.tables.setdefault(path, []).append(row)
            if rule.records is not None and rule.record is not None:
                path = self._path(run, rule.records, doc)
                value = self._value(rule.record, doc) if path is not None else None
                if path is not None and value is not MISSING and value is not None:
                    record = fit_json(json_value(value), MAX_RECORD_CHARS)
                    out.records.setdefault(path, []).append(record)
            if rule.artifact is not None and rule.value is not None:
                path = self._path(run, rule.artifact, doc)
                value = self._value(rule.value, doc) if path is not None else None
                if path is not None and value is not MISSING and value is not None:
                    out.artifacts.append((path, json_value(value)))
        if rule.model is not None:
            model = self._model(rule.model, run, doc)
            if model is not None:
                out.models.append(model)
        if rule.dataset is not None:
            dataset = self._dataset(rule.dataset, run, doc)
            if dataset is not None:
                out.datasets.append(dataset)
        if rule.trace is not None and self.traces:
            trace = self._trace(rule.trace, run, doc)
            if trace is not None:
                out.traces.append(trace)

    def _metrics(self, rule: Rule, run: _Run, doc: _Doc, now_ms: int, out: _Outputs) -> None:
        step = 0
        if rule.step is not None:
            value = self._search(rule.step, doc)
            if value is MISSING:
                return
            checked = step_value(value)
            if isinstance(checked, Rejected):
                self.problems.add("rejected_value", rule.step.where, checked.reason)
                return
            step = checked
        model = dataset = digest = None
        if rule.link is not None:
            model = self._opt_text(rule.link.model, doc)
            dataset = self._opt_text(rule.link.dataset, doc)
            if dataset is not None:
                digest = run.datasets.get(dataset)
                if digest is None:
                    self.problems.add(
                        "rejected_value",
                        rule.link.dataset.where,  # type: ignore[union-attr]
                        f"dataset {dataset!r} is not an input of {run.key}; "
                        "metrics written without it",
                    )
                    dataset = None
        for template, expr in rule.metrics:
            original = self._render(template, doc)
            if original is None:
                continue
            value = self._search(expr, doc)
            if value is MISSING:
                continue
            number = metric_value(value)
            if number is None:
                continue
            if isinstance(number, Rejected):
                self.problems.add("rejected_value", expr.where, f"{original}: {number.reason}")
                continue
            key = self._safe(run, "metric", original, template.where)
            points = run.points.get(key)
            if points is None:
                run.points[key] = _Points(step, number)
            else:
                earlier = points.add(step, number)
                if earlier is not None and earlier != number:
                    self._step_reused(run, key, step, earlier, number, template.where)
            out.metrics.append(Metric(key, number, step, now_ms, model, dataset, digest))

    def _model(self, spec: ModelSpec, run: _Run, doc: _Doc) -> ModelData | None:
        """The model a run evaluated; remembered on the run (``run.models``)."""
        identity = self._opt_text(spec.name, doc)
        if identity is None:
            self.problems.add("rejected_value", spec.name.where, "model name is null; no model")
            return None
        if identity not in run.models:
            run.models.append(identity)
        params: dict[str, str] = {}
        for template, expr in spec.params:
            key = self._render(template, doc)
            text = None if key is None else text_value(self._opt_value(expr, doc), MAX_PARAM_CHARS)
            if key is not None and text is not None:
                params[key] = REDACTED if is_credential_key(key) else text
        return ModelData(
            key=identity,
            name=logged_model_name(identity),
            tags=self._string_map(spec.tags, doc),
            params=params,
        )

    def _dataset(self, spec: DatasetSpec, run: _Run, doc: _Doc) -> DatasetData | None:
        """The data a run evaluated on; its digest is remembered for ``link.dataset``."""
        name = self._opt_text(spec.name, doc)
        digest = self._opt_text(spec.digest, doc)
        if name is None or digest is None:
            where = spec.name.where if name is None else spec.digest.where
            self.problems.add("rejected_value", where, "dataset name or digest is null; no dataset")
            return None
        digest = digest[:MAX_DIGEST_CHARS]
        run.datasets[name] = digest
        source = json_value(self._opt_value(spec.source, doc))
        if not isinstance(source, dict):
            source = {} if source is None else {"uri": _text(source)}
        return DatasetData(
            name=name,
            digest=digest,
            source_type=self._opt_text(spec.source_type, doc) or "inspect",
            source=_compact_json(source),
            profile=self._json_text(spec.profile, doc),
            schema=self._json_text(spec.schema, doc),
            context=self._opt_text(spec.context, doc),
        )

    def _json_text(self, expr: Expr | ObjectExpr | None, doc: _Doc) -> str | None:
        """A ``profile``/``schema`` as compact JSON text; null stays None."""
        if expr is None:
            return None
        value = self._value(expr, doc)
        if value is MISSING or value is None:
            return None
        return _compact_json(json_value(value))

    def _step_reused(
        self, run: _Run, key: str, step: int, earlier: Any, value: float, where: Where
    ) -> None:
        """Count a metric point that lands on a step already holding another value."""
        was = "another value" if earlier is _UNKNOWN else repr(earlier)
        self.problems.add(
            "step_reused",
            where,
            f"{key!r} written twice at step {step} of {run.key} ({was}, then {value!r}); "
            "MLflow shows only one of them",
        )

    def _text_entry(
        self,
        run: _Run,
        space: str,
        template: KeyTemplate,
        expr: Expr,
        doc: _Doc,
        limit: int,
        into: dict[str, str],
    ) -> None:
        """One param or tag: key made safe, value as bounded text, credentials hidden."""
        original = self._render(template, doc)
        if original is None:
            return
        value = self._search(expr, doc)
        if value is MISSING:
            return
        text = text_value(value, limit)
        if text is None:
            return
        if is_credential_key(original):
            text = REDACTED
        into[self._safe(run, space, original, template.where)] = text

    def _row(self, run: _Run, path: str, entries: Entries, doc: _Doc) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for template, expr in entries:
            original = self._render(template, doc)
            if original is None:
                continue
            value = self._search(expr, doc)
            cell = None if value is MISSING else _cell(json_value(value))
            if cell is not None and is_credential_key(original):
                cell = REDACTED
            row[self._safe(run, f"column:{path}", original, template.where)] = cell
        return row

    def _path(self, run: _Run, template: KeyTemplate, doc: _Doc) -> str | None:
        original = self._render(template, doc)
        if original is None:
            return None
        return self._safe(run, "artifact", original, template.where)

    # -- traces -----------------------------------------------------------------------

    def _trace(self, spec: TraceSpec, run: _Run, doc: _Doc) -> LogTrace | None:
        key = self._search(spec.key, doc)
        if key is MISSING:
            return None
        if key is None:
            self.problems.add("rejected_value", spec.key.where, "trace key is null; no trace")
            return None
        trace_key = _text(key) or ""
        start = self._time_ns(spec.start, doc)
        if start is None:
            return None
        end = self._time_ns(spec.end, doc, required=False) if spec.end is not None else None
        name = self._opt_text(spec.name, doc) or trace_key
        spans: tuple[SpanData, ...] = ()
        if spec.spans is not None:
            spans = tuple(self._spans(spec.spans, doc))
        feedback: tuple[FeedbackData, ...] = ()
        if spec.feedback is not None:
            feedback = tuple(self._feedback(spec.feedback, doc))
        expectations: tuple[ExpectationData, ...] = ()
        if spec.expectations is not None:
            expectations = tuple(self._expectations(spec.expectations, doc))
        return LogTrace(
            run=run.key,
            trace_key=trace_key,
            name=name,
            start_time_ns=start,
            end_time_ns=end if end is not None else start,
            inputs=self._opt_json(spec.inputs, doc),
            outputs=self._opt_json(spec.outputs, doc),
            status=_status_ok_error(self._opt_value(spec.status, doc)),  # type: ignore[arg-type]
            tags=self._string_map(spec.tags, doc),
            metadata=self._string_map(spec.metadata, doc),
            model=self._opt_text(spec.model, doc),
            spans=spans,
            feedback=feedback,
            expectations=expectations,
        )

    def _spans(self, spec: SpanSpec, doc: _Doc) -> Iterable[SpanData]:
        for element in self._elements(spec.for_each, doc):
            span_id = self._opt_text(spec.id, element)
            if span_id is None:
                self.problems.add("rejected_value", spec.id.where, "span id is null; span skipped")
                continue
            start = self._time_ns(spec.start, element)
            if start is None:
                continue
            end = self._time_ns(spec.end, element, required=False) if spec.end else None
            status = _status_ok_error(self._opt_value(spec.status, element))
            exception = _exception(self._opt_value(spec.exception, element))
            exc_message = None
            if exception is not None:
                status = "ERROR"
                exc_message = exception.get("message") or exception.get("type")
            yield SpanData(
                span_id=span_id,
                parent_id=self._opt_text(spec.parent, element),
                name=self._opt_text(spec.name, element) or span_id,
                span_type=self._opt_text(spec.type, element) or "UNKNOWN",
                start_time_ns=start,
                end_time_ns=end if end is not None else start,
                inputs=self._opt_json(spec.inputs, element),
                outputs=self._opt_json(spec.outputs, element),
                attributes=self._json_map(spec.attributes, element),
                status=status,  # type: ignore[arg-type]
                error=self._opt_text(spec.error, element) or exc_message,
                exception=exception,
            )

    def _feedback(self, spec: FeedbackSpec, doc: _Doc) -> Iterable[FeedbackData]:
        for element in self._elements(spec.for_each, doc):
            name = self._opt_text(spec.name, element)
            if name is None:
                self.problems.add(
                    "rejected_value", spec.name.where, "feedback name is null; skipped"
                )
                continue
            value = self._search(spec.value, element)
            if value is MISSING:
                continue
            yield FeedbackData(
                name=name,
                value=json_value(value),
                rationale=self._opt_text(spec.rationale, element),
                metadata=self._string_map(spec.metadata, element),
                error=self._opt_text(spec.error, element),
            )

    def _expectations(self, spec: ExpectationSpec, doc: _Doc) -> Iterable[ExpectationData]:
        for element in self._elements(spec.for_each, doc):
            name = self._opt_text(spec.name, element)
            if name is None:
                self.problems.add(
                    "rejected_value", spec.name.where, "expectation name is null; skipped"
                )
                continue
            value = self._search(spec.value, element)
            if value is MISSING or value is None:
                continue
            yield ExpectationData(
                name=name,
                value=json_value(value),
                metadata=self._string_map(spec.metadata, element),
            )

    def _time_ns(self, expr: Expr | None, doc: _Doc, required: bool = True) -> int | None:
        """An ISO time or epoch seconds as integer nanoseconds; counted when unusable."""
        if expr is None:
            return None
        value = self._search(expr, doc)
        if value is MISSING:
            return None
        if value is None:
            if required:
                self.problems.add("rejected_value", expr.where, "time is null")
            return None
        try:
            return int(self._epoch_ns(to_json(value)))
        except Exception as err:
            self.problems.add("rejected_value", expr.where, f"not a time: {err}")
            return None

    def _opt_value(self, expr: Expr | None, doc: _Doc) -> Any:
        if expr is None:
            return None
        value = self._search(expr, doc)
        return None if value is MISSING else value

    def _opt_text(self, expr: Expr | None, doc: _Doc) -> str | None:
        return _text(self._opt_value(expr, doc))

    def _opt_json(self, expr: Expr | None, doc: _Doc) -> Any:
        return json_value(self._opt_value(expr, doc))

    def _string_map(self, entries: Entries, doc: _Doc) -> dict[str, str]:
        out: dict[str, str] = {}
        for template, expr in entries:
            key = self._render(template, doc)
            if key is None:
                continue
            value = self._opt_value(expr, doc)
            text = text_value(value, MAX_TAG_CHARS)
            if text is not None:
                out[key] = REDACTED if is_credential_key(key) else text
        return out

    def _json_map(self, entries: Entries, doc: _Doc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for template, expr in entries:
            key = self._render(template, doc)
            if key is None:
                continue
            value = json_value(self._opt_value(expr, doc))
            if value is not None:
                out[key] = REDACTED if is_credential_key(key) else value
        return out

    # -- helpers ----------------------------------------------------------------------

    def _guard(self, where: Where, step: Callable[..., None], *args: Any) -> None:
        """Run one open or rule; a bug in it is counted, never raised into the hook."""
        try:
            step(*args)
        except Exception as err:  # the engine must not break the eval
            self.problems.add("expression_error", where, f"unexpected error: {err!r}")

    def _search(self, expr: Expr, doc: Any) -> Any:
        """Evaluate (compiled to closures once); on error count it and return ``MISSING``."""
        try:
            return self._evaluator.search(expr, doc)
        except Exception as err:
            self.problems.add("expression_error", expr.where, f"{expr.text}: {err}")
            return MISSING

    def _value(self, expr: Expr | ObjectExpr, doc: _Doc) -> Any:
        """A ``record``/``value``: one expression, or an object built entry by entry.

        An object entry that fails is left out (and counted); the others still land.
        """
        if not isinstance(expr, ObjectExpr):
            return self._search(expr, doc)
        out: dict[str, Any] = {}
        for template, item in expr.entries:
            name = self._render(template, doc)
            if name is None:
                continue
            value = self._search(item, doc)
            if value is not MISSING:
                out[name] = value
        return out

    def _render(self, template: KeyTemplate, doc: _Doc) -> str | None:
        """Fill a key template; None when a placeholder is null or fails."""
        fixed = self._fixed.get(id(template))
        if fixed is not None:
            return fixed
        out: list[str] = []
        for part in template.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = self._search(part, doc)
            if value is MISSING or value is None:
                return None
            out.append(_placeholder_text(value))
        return "".join(out)

    def _safe(self, run: _Run, space: str, original: str, where: Where) -> str:
        """The MLflow-safe key for ``original`` in ``run``; a hash suffix after a collision."""
        renamed = run.renamed.get((space, original))
        if renamed is not None:
            return renamed
        is_path = space == "artifact"
        cache = self._path_cache if is_path else self._safe_cache
        safe = cache.get(original)
        if safe is None:
            if len(cache) >= _SAFE_CACHE_LIMIT:
                cache.clear()
            safe = cache[original] = safe_path(original) if is_path else safe_key(original)
        owner = run.keys.setdefault((space, safe), original)
        if owner == original:
            return safe
        alt = _suffixed(safe, original, is_path=is_path)
        run.renamed[(space, original)] = alt
        run.keys.setdefault((space, alt), original)
        self.problems.add(
            "key_collision",
            where,
            f"{original!r} and {owner!r} both become {safe!r} in {run.key}; "
            f"{original!r} is written as {alt!r}",
        )
        return alt

    @staticmethod
    def _templates(rule: Rule) -> Iterable[KeyTemplate]:
        for entries in (rule.params, rule.tags, rule.metrics, rule.row):
            for template, _ in entries:
                yield template
        for template in (rule.table, rule.records, rule.artifact):
            if template is not None:
                yield template
        for value in (rule.record, rule.value):
            if isinstance(value, ObjectExpr):
                for template, _ in value.entries:
                    yield template


class _Outputs:
    """What one rule firing produced, merged over its ``for_each`` elements."""

    __slots__ = (
        "params",
        "tags",
        "metrics",
        "tables",
        "records",
        "artifacts",
        "traces",
        "models",
        "datasets",
    )

    def __init__(self) -> None:
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.metrics: list[Metric] = []
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.records: dict[str, list[Any]] = {}
        self.artifacts: list[tuple[str, Any]] = []
        self.traces: list[LogTrace] = []
        self.models: list[ModelData] = []
        self.datasets: list[DatasetData] = []

    def emit(self, run: str, ops: list[Operation]) -> None:
        """Append the operations, one per kind of write (rows grouped per file)."""
        if self.models or self.datasets:
            ops.append(LogInputs(run, tuple(self.models), tuple(self.datasets)))
        if self.params:
            ops.append(LogParams(run, self.params))
        if self.tags:
            ops.append(SetTags(run, self.tags))
        if self.metrics:
            ops.append(LogMetrics(run, tuple(self.metrics)))
        for path, rows in self.tables.items():
            ops.append(AppendRows(run, path, tuple(rows), "table"))
        for path, records in self.records.items():
            ops.append(AppendRows(run, path, tuple(records), "records"))
        for path, content in self.artifacts:
            ops.append(LogArtifact(run, path, content))
        ops.extend(self.traces)


MAX_DIGEST_CHARS = 36
"""MLflow keeps a dataset digest of at most 36 characters."""


def _compact_json(value: Any) -> str:
    """JSON text MLflow's UI can parse: non-finite numbers become null."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return _compact_json(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _placeholder_text(value: Any) -> str:
    return to_text(to_json(value))


def _suffixed(safe: str, original: str, *, is_path: bool) -> str:
    """``safe`` with ``_<6 hex of sha1(original)>``; before a file extension for paths."""
    suffix = "_" + hashlib.sha1(original.encode("utf-8")).hexdigest()[:6]
    if is_path:
        head, slash, last = safe.rpartition("/")
        stem, dot, ext = last.rpartition(".")
        if dot and stem:
            return safe_path(f"{head}{slash}{stem}{suffix}.{ext}")
        return safe_path(safe[: MAX_KEY_LENGTH - len(suffix)] + suffix)
    return safe_key(safe[: MAX_KEY_LENGTH - len(suffix)] + suffix)


def _epoch_ns_function() -> Callable[[Any], Any]:
    """The mapping language's ``epoch_ns`` (one definition of time parsing for both)."""
    functions = OPTIONS.custom_functions

    def epoch_ns(value: Any) -> Any:
        return functions.call_function("epoch_ns", [value])

    return epoch_ns
