"""The run state machine: runs opened at their point (parents first), closed children first.

Keeps the open runs and, for resumable ones, their state after closing (``resume``), so a
run continued later in this process, or in another one after :meth:`RunLifecycle.restore`,
counts on instead of starting again at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inspect_mlflow._engine.expr_compiler import is_false
from inspect_mlflow._engine.reading import DocumentReader
from inspect_mlflow._engine.rule_document import RuleDocument
from inspect_mlflow._engine.run_state import RunState
from inspect_mlflow._engine.values import MAX_TAG_CHARS, expr_text, json_value
from inspect_mlflow._engine.views import MISSING, to_json
from inspect_mlflow._mapping.model import RUN_STATUSES, CompiledMapping, Expr, RunSpec
from inspect_mlflow._operations import RUN_STATE_PATH, CloseRun, LogArtifact, OpenRun, Operation

__all__ = ["RunLifecycle"]


class RunLifecycle(DocumentReader):
    """Opens and closes the mapping's runs and keeps the state of each open one."""

    def __init__(self, mapping: CompiledMapping) -> None:
        super().__init__(mapping)
        self.counter_names: tuple[str, ...] = tuple(sorted(mapping.counters))
        self.series_names: tuple[str, ...] = tuple(sorted(mapping.series))
        self._runs: dict[str, RunState] = {}
        self._closed: set[str] = set()
        self._parked: dict[str, RunState] = {}
        """Closed resumable runs of this process, by key: their state, should they continue."""
        self._saved: dict[str, Mapping[str, Any]] = {}
        """State of resumable runs closed in an earlier process (see :meth:`restore`)."""
        self.resume_points: frozenset[str] = mapping.resume_points()
        """Points that may open a resumable run (their state may need :meth:`restore`)."""

        self._parent_kinds = frozenset(s.parent for s in mapping.runs.values() if s.parent)
        depth = {kind: self._depth(kind) for kind in mapping.runs}
        by_depth = sorted(mapping.runs.values(), key=lambda spec: depth[spec.kind])
        self._opens: dict[str, tuple[RunSpec, ...]] = {}
        self._closes: dict[str, tuple[RunSpec, ...]] = {}
        for spec in by_depth:
            self._opens[spec.open] = (*self._opens.get(spec.open, ()), spec)
        for spec in reversed(by_depth):
            self._closes[spec.close] = (*self._closes.get(spec.close, ()), spec)

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

    def run_state(self, key: str) -> RunState | None:
        """The state of the open run ``key``; None when it is not open."""
        return self._runs.get(key)

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
                key = f"{kind}:{expr_text(value)}"
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
        run = RunState(spec=spec, key=key, name=None, parent=parent, resume=resume)
        if spec.kind in self._parent_kinds:
            run.context = to_json(ctx)
        if resume:
            self._carry_over(run)
        doc = RuleDocument(ctx, self, run, {})
        if spec.name is not None:
            name = self._search(spec.name, doc)
            run.name = None if name is MISSING else expr_text(name)
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

    def _carry_over(self, run: RunState) -> None:
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
        run: RunState,
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
            end_ms = self._run_time_ms(run.spec.end, RuleDocument(ctx, self, run, {}), now_ms)
            value = self._search(run.spec.status, RuleDocument(ctx, self, run, {}))
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

    def _run_time_ms(self, expr: Expr | None, doc: RuleDocument, now_ms: int) -> int:
        """A run's start or end from the mapping (Inspect's own times), else the point's."""
        if expr is None:
            return now_ms
        ns = self._time_ns(expr, doc, required=False)
        return now_ms if ns is None else ns // 1_000_000
