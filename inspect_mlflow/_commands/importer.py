"""Import existing Inspect eval logs into MLflow: each log replayed through the pipeline.

Why: a log file holds what the hooks saw while the eval ran, so the payloads rebuilt
from it (:mod:`inspect_mlflow._inspect.log_payloads`), fed to the same mapping and
pipeline as a live run (engine -> scrub -> writer), land the same runs, tags, params,
metrics with their steps, tables, artifacts and traces. Times come from the log, not
from the import. Logs of one run (same run id) are replayed together under one parent.

A log already in MLflow is skipped, unless its summary gives metric keys its runs lack:
then it was scored after it was logged (``inspect score`` calls no lifecycle hook) and
its runs are updated, replayed in full with what they hold already left out (see
``Importer._only_new``).

Memory stays bounded with thousands of logs: a first pass keeps a few strings per
file, then one run's headers and one sample at a time are held while its writes are
queued, and the writer is flushed every few thousand operations.

Threads: everything here runs on the caller's thread; only the writer's own thread
talks to MLflow for writes (a second sink answers "is this log already there?").
The command line is :mod:`inspect_mlflow._commands.import_command`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspect_mlflow._config import Settings
from inspect_mlflow._delivery.pipeline import Pipeline
from inspect_mlflow._engine.contexts import context
from inspect_mlflow._inspect.log_payloads import (
    Replayed,
    run_end_point,
    run_start_point,
    task_end_point,
    task_points,
    task_start_point,
)
from inspect_mlflow._inspect.log_reading import LogReadError, find_logs, read_header, task_started
from inspect_mlflow._mapping.model import CompiledMapping
from inspect_mlflow._operations import CloseRun, LogMetrics, LogTrace, OpenRun, Operation

__all__ = ["ImportReport", "Importer", "LogOutcome"]


@dataclass(frozen=True, slots=True)
class LogOutcome:
    """What became of one log file."""

    path: str
    status: str
    """``imported``, ``updated`` (already there; its new scores were added), ``skipped``
    or ``failed``."""
    detail: str = ""


@dataclass
class ImportReport:
    """Every log's outcome, and the problems the engine and the writer counted."""

    outcomes: list[LogOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    delivered: bool = True
    """False when some writes did not reach MLflow."""

    def count(self, status: str) -> int:
        """How many logs ended with ``status``."""
        return sum(1 for outcome in self.outcomes if outcome.status == status)


@dataclass(slots=True)
class _Ref:
    """What the first pass keeps of a log: enough to group and order, nothing more."""

    path: str
    run_id: str
    started: float


class Importer:
    """Replays logs into one MLflow experiment through the engine and background writer.

    Args:
        settings: Tracking URI, experiment, artifacts/traces switches and trace caps.
        mapping: The compiled mapping (the same one the hook would use).
        force: Import logs whose runs are already in the experiment again, as new runs.
        sink: The sink the writer delivers to (default: an ``MlflowSink`` for
            ``settings``); tests may pass another.
        lookup: What finds existing runs by logical key (``find_runs``) and reads the
            state of a run to continue (``read_run_state``); default: a second
            ``MlflowSink``, none with ``force``.
        flush_every: Operations queued before the importer waits for the writer, which
            bounds memory on big logs.
    """

    def __init__(
        self,
        settings: Settings,
        mapping: CompiledMapping,
        *,
        force: bool = False,
        sink: Any = None,
        lookup: Any = None,
        flush_every: int = 2000,
    ) -> None:
        from inspect_mlflow._writer.writer import BackgroundWriter

        assert settings.tracking_uri is not None
        self.settings = settings
        self.mapping = mapping
        self.points = mapping.points()
        self.force = force
        if sink is None:
            sink = self._mlflow_sink(resume=not force)
        self.sink = sink
        self.writer = BackgroundWriter(sink)
        self.pipeline = Pipeline(
            mapping,
            self.writer.emit,
            settings.secrets,
            adjust=self._adjust,
            replayed=True,
            log_artifacts=settings.log_artifacts,
            traces=settings.traces,
        )
        """The live path's chain (engine -> scrub -> writer): an import stores no
        credential either."""
        self.engine = self.pipeline.engine
        if lookup is None and not force:
            lookup = self._mlflow_sink(resume=False)
        self.lookup = lookup
        self.flush_every = flush_every
        self._pending = 0
        self._seen_evals: set[str] = set()
        self._opened: set[str] = set()
        """Runs this command opened (with ``force`` only the first open is a new run)."""
        self._continues: set[str] = set()
        """Eval ids of logs that continue a run already in MLflow or opened here."""
        self._found: dict[str, tuple[dict[str, frozenset[str]], list[str]]] = {}
        """Eval id -> (run key -> the metric keys it holds, keys that continue) of logs
        already in MLflow: a few strings per log, not the runs."""
        self._updating = False
        """True while a run with logs to update is replayed (see :meth:`_only_new`)."""
        self._existing: dict[str, Any] = {}
        """Logical key -> the MLflow run it already has, for the runs being updated."""
        self._unassessed: dict[str, set[str]] = {}
        """MLflow run id -> ids of its traces without any assessment, for an update."""

    def _mlflow_sink(self, *, resume: bool) -> Any:
        from inspect_mlflow._writer.mlflow_sink import MlflowSink

        assert self.settings.tracking_uri is not None
        return MlflowSink(
            self.settings.tracking_uri,
            self.settings.experiment_name,
            resume=resume,
            trace_options={
                "max_spans_per_trace": self.settings.trace_max_spans,
                "max_attribute_chars": self.settings.trace_max_text,
            },
        )

    # -- public -----------------------------------------------------------------------

    def run(
        self,
        paths: Iterable[str | Path],
        *,
        on_total: Callable[[int], None] | None = None,
        on_log: Callable[[LogOutcome], None] | None = None,
    ) -> ImportReport:
        """Import every log under ``paths``; never raises for a bad log.

        Args:
            paths: Log files and directories.
            on_total: Called once with the number of log files found.
            on_log: Called with each log's outcome as soon as it is known.

        Returns:
            The report (also after a failure to reach MLflow, which fails the logs left).
        """
        report = ImportReport()

        def settle(outcome: LogOutcome) -> None:
            if self.pipeline.scrubber:  # a reason may quote a log's content or a URL
                outcome = self.pipeline.scrubber.value(outcome)
            report.outcomes.append(outcome)
            if on_log is not None:
                on_log(outcome)

        files, missing = find_logs(paths)
        if on_total is not None:
            on_total(len(files) + len(missing))
        for path, reason in missing:
            settle(LogOutcome(path, "failed", reason))
        try:
            with self.pipeline.scrubbing_logs():
                for group in self._groups(files, settle):
                    self._import_run(group, settle)
        finally:
            report.delivered = self.writer.shutdown(max(self.settings.flush_timeout, 60.0))
            problems = self.engine.problem_summary() + self.writer.problem_summary()
            report.problems = [self.pipeline.scrubber.text(line) for line in problems]
        return report

    # -- steps ------------------------------------------------------------------------

    def _groups(
        self, files: Sequence[Path], settle: Callable[[LogOutcome], None]
    ) -> list[list[_Ref]]:
        """Logs grouped by run (one parent run each), runs and tasks in start order.

        Only a path, a run id and a time are kept per log: the headers are read again
        when their run is imported (a few milliseconds each), so memory does not grow
        with the number of logs.
        """
        runs: dict[str, list[_Ref]] = {}
        for path in files:
            try:
                header = read_header(path)
            except LogReadError as err:
                settle(LogOutcome(str(path), "failed", err.reason))
                continue
            started = task_started(header)
            ref = _Ref(str(path), header.eval.run_id, started if started is not None else 0.0)
            runs.setdefault(ref.run_id, []).append(ref)
        groups = [sorted(refs, key=lambda r: (r.started, r.path)) for refs in runs.values()]
        groups.sort(key=lambda refs: (refs[0].started, refs[0].path))
        return groups

    def _import_run(self, refs: list[_Ref], settle: Callable[[LogOutcome], None]) -> None:
        """Replay the logs of one run that are not in MLflow yet, under one parent run."""
        headers: list[tuple[str, Any]] = []
        for ref in refs:
            try:
                headers.append((ref.path, read_header(ref.path)))
            except LogReadError as err:
                settle(LogOutcome(ref.path, "failed", err.reason))
        if not headers:
            return
        todo: list[tuple[str, Any]] = []
        updates: dict[str, str] = {}
        """Path -> what MLflow lacks, for logs already there with scores it does not have."""
        for path, header in headers:
            reason = self._skip_reason(header, [h for _, h in headers])
            lacking = self._lacking(header) if reason and header.status != "started" else []
            if lacking and self._found[header.eval.eval_id][1]:
                reason += "; its new scores are not imported (not supported for eval sets yet)"
            elif lacking:
                more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
                updates[path] = f"added what its runs lacked: {', '.join(lacking[:5])}{more}"
                reason = ""
            if reason:
                settle(LogOutcome(path, "skipped", reason))
            else:
                todo.append((path, header))
        if not todo:
            return
        self._updating = bool(updates)
        all_headers = [h for _, h in headers]
        failed_before = self.writer.stats["ops_failed"]
        outcomes: list[LogOutcome] = []
        self._feed(run_start_point(all_headers))
        for path, header in todo:
            try:
                reused = header.eval.eval_id in self._continues
                for item in task_points(path, header, self.points, skip_reused=reused):
                    self._feed(item)
                if path in updates:
                    outcomes.append(LogOutcome(path, "updated", updates[path]))
                else:
                    outcomes.append(LogOutcome(path, "imported"))
            except LogReadError as err:
                outcomes.append(LogOutcome(path, "failed", f"{err.reason}; partly imported"))
        self._feed(run_end_point(all_headers))
        self.writer.flush(max(self.settings.flush_timeout, 60.0))
        self._pending = 0
        self._updating = False
        self._existing.clear()
        self._unassessed.clear()
        lost = self.writer.stats["ops_failed"] - failed_before
        for outcome in outcomes:
            if lost and outcome.status in ("imported", "updated"):
                outcome = LogOutcome(
                    outcome.path, "failed", f"{lost} write(s) of its run were not delivered"
                )
            settle(outcome)

    def _skip_reason(self, header: Any, run_headers: list[Any]) -> str:
        """Why a log is not imported, or ``""``.

        A log is identified by its eval id. It is in the experiment when every run its
        ``task_start`` opens (else its ``run_start``) exists there, found by logical key;
        for a run that attempts of a task continue (``resume``, as in eval sets), the run
        must also cover this attempt: name its eval id in a tag, or have ended after the
        attempt started (a later attempt is imported into it).
        """
        if header.status == "started":
            return "the eval is still running (or was killed): status 'started'"
        eval_id = header.eval.eval_id
        if eval_id in self._seen_evals:
            return "another copy of a log this command imported (same eval id)"
        self._seen_evals.add(eval_id)
        keys, continued = self._identity(header, run_headers)
        found: dict[str, Any] = {}
        if keys and not self.force and self.lookup is not None:
            found = self.lookup.find_runs(keys)
        if any(key in found or key in self._opened for key in continued):
            self._continues.add(eval_id)
        if not keys or len(found) < len(keys):
            return ""
        self._found[eval_id] = (
            {key: frozenset(run.data.metrics) for key, run in found.items()},
            continued,
        )
        started = task_started(header)
        for key in continued:
            run = found[key]
            end = run.info.end_time
            named = eval_id in run.data.tags.values()
            if not named and end and started is not None and started * 1000 >= end:
                return ""
        return f"already in experiment '{self.settings.experiment_name}' ({', '.join(keys)})"

    def _identity(self, header: Any, run_headers: list[Any]) -> tuple[list[str], list[str]]:
        """The run keys that identify a log, and those of them that continue a run.

        Those ``task_start`` opens, else those ``run_start`` opens.
        """
        start = task_start_point(header)
        point, ctx = "task_start", context("task_start", start.data, **start.ids)
        keys = self.engine.run_keys(point, ctx)
        if not keys:
            point, ctx = "run_start", context("run_start", run_start_point(run_headers).data)
            keys = self.engine.run_keys(point, ctx)
        return keys, self.engine.run_keys(point, ctx, resumable=True)

    def _lacking(self, header: Any) -> list[str]:
        """Metric keys the log's summary gives that its runs in MLflow do not have.

        Why: a log scored after it was logged (``eval(score=False)``, then ``inspect
        score``) is already in the experiment, but without its scores; Inspect calls no
        hook while it scores. Its header alone (task start and end, no samples) is run
        through a scratch engine of the same mapping: a summary metric key that a found
        run lacks (``match/accuracy``) says the log has scores MLflow has not seen. Only
        keys are compared: values that count samples are not known without them.
        """
        found = self._found.get(header.eval.eval_id, ({}, []))[0]
        if not found:
            return []
        written: list[Operation] = []
        scratch = Pipeline(
            self.mapping,
            written.extend,
            self.settings.secrets,
            replayed=True,
            log_artifacts=False,
            traces=False,
        )
        for item in [run_start_point([header]), task_start_point(header), task_end_point(header)]:
            if item.point in self.points:
                ctx = context(item.point, item.data, **item.ids)
                scratch.feed(item.point, ctx, at=item.time)
        lacking: list[str] = []
        for op in written:
            held = found.get(op.run)
            if held is None or not isinstance(op, LogMetrics):
                continue
            lacking += [m.key for m in op.metrics if m.key not in held and m.key not in lacking]
        return lacking

    def _only_new(self, ops: list[Operation]) -> list[Operation]:
        """While updating runs already in MLflow: leave out what they hold already.

        Only the metrics a run lacks are sent (see :meth:`_new_points`); a run close
        keeps the run's end time. The rest is idempotent
        (params, tags, artifacts; tables are rewritten whole from the log; a trace is
        sent again under its own id and only its missing assessments are added).
        """
        kept: list[Operation] = []
        for op in ops:
            if isinstance(op, OpenRun) and op.run not in self._existing:
                found = self.lookup.find_runs([op.run]) if self.lookup is not None else {}
                if op.run in found:
                    self._existing[op.run] = found[op.run]
            run = self._existing.get(op.run)
            if run is None:
                kept.append(op)
            elif isinstance(op, LogMetrics):
                new = self._new_points(run, op)
                if new is not None:
                    kept.append(new)
            elif isinstance(op, CloseRun) and run.info.end_time:
                kept.append(dataclasses.replace(op, end_time_ms=run.info.end_time))
            elif isinstance(op, LogTrace):
                self._replace_unscored_trace(run, op)
                kept.append(op)
            else:
                kept.append(op)
        return kept

    def _replace_unscored_trace(self, run: Any, op: LogTrace) -> None:
        """Delete the stored trace ``op`` re-sends when it has no assessment at all.

        Why: the trace of an unscored sample holds the empty ``scorers`` span of
        ``eval(score=False)``, which ``inspect score`` replaced by one with the scorers;
        sent again over it, the trace would show both. A trace that has assessments
        (someone's feedback among them, maybe) is kept: the re-send only adds the
        missing ones.
        """
        from mlflow.tracing.client import TracingClient

        from inspect_mlflow._writer.mlflow_sink.trace_values import trace_id_for

        assert self.settings.tracking_uri is not None
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
        client = TracingClient(self.settings.tracking_uri)
        if run_id not in self._unassessed:
            ids: set[str] = set()
            token = None
            while True:
                page = client.search_traces(
                    locations=[experiment_id],
                    run_id=run_id,
                    include_spans=False,
                    max_results=500,
                    page_token=token,
                )
                # Unscored: no feedback (an expectation, the target, is not a score).
                ids.update(
                    t.info.trace_id
                    for t in page
                    if not any(a.feedback is not None for a in t.info.assessments or ())
                )
                token = page.token
                if not token:
                    break
            self._unassessed[run_id] = ids
        trace_id = trace_id_for(op.trace_key, run_id)
        if trace_id in self._unassessed[run_id]:
            client.delete_traces(experiment_id, trace_ids=[trace_id])
            self._unassessed[run_id].discard(trace_id)

    @staticmethod
    def _new_points(run: Any, op: LogMetrics) -> LogMetrics | None:
        """``op`` without the points of metrics ``run`` has; None when none is left.

        A metric the run has is left as it is, whatever the log says: its steps count
        samples in the order they completed, and a live run saw them complete in an order
        the log's times need not reproduce, so a point-by-point comparison would add
        reordered points, not new ones.
        """
        kept = tuple(m for m in op.metrics if m.key not in run.data.metrics)
        if not kept:
            return None
        return op if len(kept) == len(op.metrics) else LogMetrics(op.run, kept)

    def _prepare(self, point: str, ctx: Mapping[str, Any]) -> None:
        """Give runs this point continues the state they were closed with in MLflow.

        As the hook does: a task attempt continuing a run from an earlier import or a
        live eval counts on from where that run stopped.
        """
        for key in self.engine.pending_resumes(point, ctx):
            state = self.lookup.read_run_state(key) if self.lookup is not None else None
            self.engine.restore(key, state)

    def _opening(self, op: OpenRun) -> OpenRun:
        """Note the run; with ``--force`` its first open in this command is a new run."""
        if op.run in self._opened:
            return op
        self._opened.add(op.run)
        return dataclasses.replace(op, resume=False) if op.resume and self.force else op

    def _adjust(self, ops: list[Operation]) -> list[Operation]:
        """The import's step of the pipeline, between the engine and the scrub.

        With ``--force`` a run's first open is a new run; while updating runs already
        in MLflow, what they hold is left out.
        """
        ops = [self._opening(op) if isinstance(op, OpenRun) else op for op in ops]
        return self._only_new(ops) if self._updating else ops

    def _feed(self, item: Replayed) -> None:
        if item.point not in self.points:
            return
        ctx = context(item.point, item.data, **item.ids)
        if item.point in self.engine.resume_points and not self.force:
            self._prepare(item.point, ctx)
        self._pending += len(self.pipeline.feed(item.point, ctx, at=item.time))
        if self._pending >= self.flush_every:
            self.writer.flush(max(self.settings.flush_timeout, 60.0))
            self._pending = 0
