"""Import existing Inspect eval logs: replay each log through the lifecycle points.

Why: a log file holds what the hooks saw while the eval ran (the spec and plan, every
sample with its events, the results), so feeding it to the same engine, mapping and
writer as a live run lands the same runs, tags, params, metrics with their steps,
tables, artifacts and traces in MLflow. Times come from the log, not from the import:
the engine's clock is set to each point's time in the log before the point is handled.

The replay builds Inspect's own hook payloads (``inspect_ai.hooks`` dataclasses) and
sends them in the order a live run does: ``run_start``; per task ``task_start``, then per
sample (in completion order, so the completion index gives the same steps as live)
``sample_init``, ``sample_start``, ``sample_attempt_start``, the sample's events as
``sample_event`` (each once, in delivery order, without the init events Inspect never
delivers), ``sample_scoring``, ``sample_attempt_end``, ``sample_end``; ``task_end``;
``run_end``. Logs of one run (same run id) are replayed together under one parent run.
``model_usage``, ``model_cache_usage`` and ``before_model_generate`` are rebuilt from
model events; ``model_retry`` and the eval-set points are not in a log and never fire.

A log already in MLflow is skipped, unless its summary gives metric keys its runs lack:
then it was scored after it was logged (``inspect score`` calls no lifecycle hook) and
its runs are updated, replayed in full with what they hold already left out (see
``Importer._only_new``).

Memory stays bounded with thousands of logs: a first pass keeps a few strings per
file, then one run's headers and one sample at a time are held while its writes are
queued, and the writer is flushed every few thousand operations.

Threads: everything here runs on the caller's thread; only the writer's own thread
talks to MLflow for writes (a second sink answers "is this log already there?").
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inspect_ai import hooks as inspect_hooks

from inspect_mlflow._config import Settings
from inspect_mlflow._delivery.pipeline import Pipeline, environment_secrets
from inspect_mlflow._engine.engine import Engine
from inspect_mlflow._engine.views import context
from inspect_mlflow._mapping.model import CompiledMapping
from inspect_mlflow._operations import (
    CloseRun,
    LogMetrics,
    LogTrace,
    OpenRun,
    Operation,
)

__all__ = [
    "ImportReport",
    "Importer",
    "LogClock",
    "LogOutcome",
    "LogReadError",
    "Replayed",
    "find_logs",
    "read_header",
    "run_end_point",
    "run_import_command",
    "run_start_point",
    "task_points",
]

LOG_SUFFIXES = (".eval", ".json")

_TIMESTAMPED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}[:-]\d{2}[:-]\d{2}")
"""Inspect names its log files ``<ISO time>_<task>_<id>``; other ``.json`` files in a log
directory (listings, eval-set state) are not logs."""


class LogReadError(Exception):
    """A log (or one of its samples) could not be read; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Replayed:
    """One lifecycle point rebuilt from a log."""

    point: str
    data: Any
    """The hook payload Inspect would have passed (an ``inspect_ai.hooks`` dataclass)."""
    time: float | None
    """When it happened, seconds since the epoch (None: not known, keep the last time)."""
    ids: Mapping[str, Any] = field(default_factory=dict)
    """Identities the hook adds to the context besides the payload (``task_id``)."""


# -- reading -----------------------------------------------------------------------------


def find_logs(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The log files named by ``paths`` (files, or directories searched recursively).

    A file given by name is tried whatever its name; in a directory, every ``.eval`` file
    and every ``.json`` file named like an Inspect log counts.

    Args:
        paths: Files and directories.

    Returns:
        The files found (sorted per directory, duplicates removed) and, for paths that
        do not exist, ``(path, reason)``.
    """
    found: dict[Path, None] = {}
    missing: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(".eval") or (
                        name.endswith(".json") and _TIMESTAMPED.match(name)
                    ):
                        found[(Path(root) / name).absolute()] = None
        elif path.is_file():
            found[path.absolute()] = None
        else:
            missing.append((str(raw), "no such file or directory"))
    return list(found), missing


def read_header(path: str | Path) -> Any:
    """An eval log without its samples (``EvalLog`` with ``location`` set).

    Raises:
        LogReadError: The file is not a readable Inspect log.
    """
    from inspect_ai.log import read_eval_log

    if not str(path).endswith(LOG_SUFFIXES):
        raise LogReadError(path, "not an Inspect log (expected a .eval or .json file)")
    try:
        header = read_eval_log(str(path), header_only=True)
    except Exception as err:
        raise LogReadError(path, f"cannot read the log: {_describe(err)}") from err
    if getattr(header, "eval", None) is None or not header.eval.eval_id:
        raise LogReadError(path, "not an Inspect log (no eval id)")
    return header


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _epoch(value: Any) -> float | None:
    """An ISO time (text or datetime) or epoch seconds as epoch seconds; None if unknown."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return None


def _make(cls: type, **fields: Any) -> Any:
    """Build a hook dataclass from the fields this Inspect version has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in names})


def _ids(header: Any) -> dict[str, Any]:
    spec = header.eval
    return {"eval_set_id": spec.eval_set_id, "run_id": spec.run_id, "eval_id": spec.eval_id}


def _extra_ids(header: Any) -> dict[str, Any]:
    """Identities the hook adds to every task-level context: ``task_id``.

    All attempts of a task share it, while each attempt has its own eval id.
    """
    task_id = getattr(header.eval, "task_id", None)
    return {"task_id": task_id} if task_id else {}


def _task_started(header: Any) -> float | None:
    stats = header.stats
    return _epoch(getattr(stats, "started_at", None)) or _epoch(header.eval.created)


def _task_ended(header: Any) -> float | None:
    return _epoch(getattr(header.stats, "completed_at", None))


# -- replay ------------------------------------------------------------------------------


def run_start_point(headers: Sequence[Any]) -> Replayed:
    """``run_start`` for the logs of one run (task names in the order the tasks ran)."""
    first = headers[0].eval
    times = [t for t in (_task_started(h) for h in headers) if t is not None]
    data = inspect_hooks.RunStart(
        eval_set_id=first.eval_set_id,
        run_id=first.run_id,
        task_names=[h.eval.task for h in headers],
    )
    return Replayed("run_start", data, min(times) if times else None)


def run_end_point(headers: Sequence[Any]) -> Replayed:
    """``run_end`` for the logs of one run: no exception, the log headers as ``logs``."""
    from inspect_ai._eval.eval import EvalLogs

    first = headers[0].eval
    times = [t for t in (_task_ended(h) for h in headers) if t is not None]
    data = inspect_hooks.RunEnd(
        eval_set_id=first.eval_set_id, run_id=first.run_id, exception=None, logs=EvalLogs(headers)
    )
    return Replayed("run_end", data, max(times) if times else None)


def task_points(
    path: str | Path,
    header: Any,
    points: frozenset[str] | None = None,
    *,
    skip_reused: bool = False,
) -> Iterator[Replayed]:
    """Every point of one task, ``task_start`` to ``task_end``, rebuilt from its log.

    Samples are read one at a time. When one cannot be read, the task still ends (its
    ``task_end`` carries a header whose status is ``error`` and whose error says what
    failed, so the task run closes as failed), then :class:`LogReadError` is raised.

    Args:
        path: The log file.
        header: Its header (:func:`read_header`).
        points: Only build payloads for these points (all when None).
        skip_reused: Leave out samples a retried task reused from its earlier attempt
            (they started before this attempt): live, Inspect fires no point for them,
            and the earlier attempt already delivered them. For a log whose earlier
            attempt is in MLflow already.

    Raises:
        LogReadError: A sample could not be read (after the error ``task_end``).
    """
    wanted = points
    ids = _ids(header)
    extra = _extra_ids(header)
    last = _task_started(header)
    if wanted is None or "task_start" in wanted:
        data = _make(inspect_hooks.TaskStart, **ids, spec=header.eval, plan=header.plan)
        yield Replayed("task_start", data, last, extra)
    error: LogReadError | None = None
    done = 0
    try:
        reused_before = _reuse_cutoff(header) if skip_reused else None
        for sample in _samples_by_completion(path, header, reused_before):
            for item in _sample_points(sample, header, wanted):
                last = item.time if item.time is not None else last
                yield dataclasses.replace(item, ids=extra) if extra else item
            done += 1
    except LogReadError as err:
        error = err
    end_header = header
    if error is not None:
        from inspect_ai._util.error import EvalError

        message = f"inspect-mlflow import: stopped after {done} sample(s): {error.reason}"
        end_header = header.model_copy(
            update={
                "status": "error",
                "error": EvalError(message=message, traceback="", traceback_ansi=""),
            }
        )
    if wanted is None or "task_end" in wanted:
        data = inspect_hooks.TaskEnd(**ids, log=end_header)
        yield Replayed("task_end", data, _task_ended(header) or last, extra)
    if error is not None:
        raise LogReadError(path, f"{error.reason} (stopped after {done} sample(s))")


def _read_sample(path: str, summary: Any) -> Any:
    from inspect_ai.log import read_eval_log_sample

    try:
        try:
            return read_eval_log_sample(
                path, id=summary.id, epoch=summary.epoch, resolve_attachments="core"
            )
        except TypeError:  # an Inspect without "core": resolve everything
            return read_eval_log_sample(
                path, id=summary.id, epoch=summary.epoch, resolve_attachments=True
            )
    except Exception as err:
        reason = f"cannot read sample {summary.id} (epoch {summary.epoch}): {_describe(err)}"
        raise LogReadError(path, reason) from err


def _completion_key(item: Any) -> tuple[float, float, int, str]:
    done = _epoch(getattr(item, "completed_at", None))
    start = _epoch(getattr(item, "started_at", None))
    return (
        done if done is not None else math.inf,
        start if start is not None else math.inf,
        item.epoch,
        str(item.id),
    )


def _reuse_cutoff(header: Any) -> float | None:
    """When this attempt of the task started, to the second (samples before it were reused).

    The log's own times have second precision, cut down: a sample that started before
    the cut-off surely came from an earlier attempt, while one reused in the very second
    the attempt started is counted as new (replayed again) rather than lost.
    """
    times = [t for t in (_task_started(header), _epoch(header.eval.created)) if t is not None]
    return math.floor(max(times)) if times else None


def _samples_by_completion(
    path: str | Path, header: Any, reused_before: float | None = None
) -> Iterator[Any]:
    """The samples of a log in the order they completed, one in memory at a time.

    ``.eval`` files are zip archives read sample by sample (the summaries give the
    order); a ``.json`` log is one document, read whole. Samples that started before
    ``reused_before`` are left out.
    """

    def keep(item: Any) -> bool:
        started = _epoch(getattr(item, "started_at", None))
        return reused_before is None or started is None or started >= reused_before

    from inspect_ai.log import read_eval_log, read_eval_log_sample_summaries

    location = str(path)
    if location.endswith(".eval"):
        try:
            summaries = read_eval_log_sample_summaries(location)
        except Exception as err:
            raise LogReadError(location, f"cannot read the samples: {_describe(err)}") from err
        for summary in sorted(filter(keep, summaries), key=_completion_key):
            yield _read_sample(location, summary)
        return
    try:
        try:
            log = read_eval_log(location, resolve_attachments="core")
        except TypeError:
            log = read_eval_log(location, resolve_attachments=True)
    except Exception as err:
        raise LogReadError(location, f"cannot read the samples: {_describe(err)}") from err
    samples = sorted(filter(keep, log.samples or []), key=_completion_key, reverse=True)
    del log
    while samples:
        yield samples.pop()


def _delivered(events: Sequence[Any]) -> list[Any]:
    """The events a live hook receives, in log order.

    Not the init span (it ends before Inspect starts its event emitter), never the
    ``sample_init`` event, never a pending event.
    """
    init_id = next(
        (e.id for e in events if e.event == "span_begin" and getattr(e, "type", None) == "init"),
        None,
    )
    start = 0
    if init_id is not None:
        for index, event in enumerate(events):
            if event.event == "span_end" and getattr(event, "id", None) == init_id:
                start = index + 1
                break
    return [
        e
        for e in events[start:]
        if e.event != "sample_init" and not e.pending and (init_id is None or e.span_id != init_id)
    ]


def _sample_points(sample: Any, header: Any, wanted: frozenset[str] | None) -> Iterator[Replayed]:
    """The points of one sample, in the order a live run delivers them."""

    def want(point: str) -> bool:
        return wanted is None or point in wanted

    ids = {**_ids(header), "sample_id": sample.uuid}
    started = _epoch(sample.started_at)
    ended = _epoch(sample.completed_at)
    summary = _start_summary(sample)
    for point, cls in (("sample_init", "SampleInit"), ("sample_start", "SampleStart")):
        if want(point) and hasattr(inspect_hooks, cls):
            yield Replayed(point, getattr(inspect_hooks, cls)(**ids, summary=summary), started)
    attempts = want("sample_attempt_start") and hasattr(inspect_hooks, "SampleAttemptStart")
    attempt_ends = want("sample_attempt_end") and hasattr(inspect_hooks, "SampleAttemptEnd")
    attempt = 1
    if attempts:
        yield Replayed(
            "sample_attempt_start",
            inspect_hooks.SampleAttemptStart(**ids, summary=summary, attempt=1),
            started,
        )
    for retry_error in sample.error_retries or []:
        if attempt_ends:
            data = inspect_hooks.SampleAttemptEnd(
                **ids, summary=summary, attempt=attempt, error=retry_error, will_retry=True
            )
            yield Replayed("sample_attempt_end", data, started)
        attempt += 1
        if attempts:
            data = inspect_hooks.SampleAttemptStart(**ids, summary=summary, attempt=attempt)
            yield Replayed("sample_attempt_start", data, started)

    scoring = want("sample_scoring") and hasattr(inspect_hooks, "SampleScoring")
    timeline: list[Replayed] = []
    for event in _delivered(sample.events or []):
        at = _epoch(event.timestamp)
        delivered = _epoch(getattr(event, "completed", None)) or at
        if scoring and event.event == "span_begin" and getattr(event, "type", None) == "scorers":
            timeline.append(Replayed("sample_scoring", inspect_hooks.SampleScoring(**ids), at))
            scoring = False
        if event.event == "model":
            timeline.extend(_model_points(event, header, ids, want, at, delivered))
        if want("sample_event"):
            timeline.append(
                Replayed("sample_event", inspect_hooks.SampleEvent(**ids, event=event), delivered)
            )
    # Stable: events keep their log order unless a later one was delivered earlier
    # (a model or tool event is delivered when it completes, not when it starts).
    timeline.sort(key=lambda item: item.time if item.time is not None else -math.inf)
    yield from timeline
    if scoring:
        last = timeline[-1].time if timeline else started
        yield Replayed("sample_scoring", inspect_hooks.SampleScoring(**ids), last)
    if attempt_ends:
        data = inspect_hooks.SampleAttemptEnd(
            **ids, summary=summary, attempt=attempt, error=sample.error, will_retry=False
        )
        yield Replayed("sample_attempt_end", data, ended)
    if want("sample_end"):
        yield Replayed("sample_end", inspect_hooks.SampleEnd(**ids, sample=sample), ended)


def _start_summary(sample: Any) -> Any:
    """The summary a live ``sample_start`` carries: no scores, no usage, not completed."""
    from inspect_ai.log import EvalSampleSummary

    return _make_model(
        EvalSampleSummary,
        id=sample.id,
        epoch=sample.epoch,
        uuid=sample.uuid,
        input=sample.input,
        choices=sample.choices,
        target=sample.target,
        description=getattr(sample, "description", None),
        metadata=sample.metadata or {},
        started_at=sample.started_at,
    )


def _make_model(cls: Any, **fields: Any) -> Any:
    """Build a pydantic model from the fields this Inspect version has."""
    return cls(**{k: v for k, v in fields.items() if k in cls.model_fields})


def _model_points(
    event: Any,
    header: Any,
    ids: dict[str, Any],
    want: Callable[[str], bool],
    at: float | None,
    delivered: float | None,
) -> Iterator[Replayed]:
    """``before_model_generate`` and ``model_usage``/``model_cache_usage`` of a model event."""
    cache = getattr(event, "cache", None)
    task = {"task_name": header.eval.task, **{k: ids[k] for k in ("eval_set_id", "run_id")}}
    if want("before_model_generate") and hasattr(inspect_hooks, "BeforeModelGenerate"):
        data = _make(
            inspect_hooks.BeforeModelGenerate,
            model_name=event.model,
            input=event.input,
            tools=event.tools,
            tool_choice=event.tool_choice,
            config=event.config,
            cache="write" if cache == "write" else None,
            eval_id=ids["eval_id"],
            sample_id=None,
            **task,
        )
        yield Replayed("before_model_generate", data, at)
    usage = getattr(getattr(event, "output", None), "usage", None)
    if usage is None or getattr(event, "error", None):
        return
    if cache == "read":
        if want("model_cache_usage") and hasattr(inspect_hooks, "ModelCacheUsageData"):
            data = _make(inspect_hooks.ModelCacheUsageData, model_name=event.model, usage=usage)
            yield Replayed("model_cache_usage", data, delivered)
    elif want("model_usage") and hasattr(inspect_hooks, "ModelUsageData"):
        data = _make(
            inspect_hooks.ModelUsageData,
            model_name=event.model,
            usage=usage,
            call_duration=getattr(event, "working_time", None) or 0.0,
            eval_id=ids["eval_id"],
            retries=getattr(event, "retries", None) or 0,
            **task,
        )
        yield Replayed("model_usage", data, delivered)


# -- import ------------------------------------------------------------------------------


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


class LogClock:
    """The engine's clock during a replay: the time of the point being handled.

    Set :attr:`now` to a point's time in the log before the engine handles it.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
        self._clock = LogClock()
        self.engine = Engine(
            mapping,
            log_artifacts=settings.log_artifacts,
            traces=settings.traces,
            clock=self._clock,
        )
        if sink is None:
            sink = self._mlflow_sink(resume=not force)
        self.sink = sink
        self.writer = BackgroundWriter(sink)
        self.pipeline = Pipeline(self.writer.emit, settings.secrets)
        """The live path's chain (scrub -> writer): an import stores no credential either."""
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
            started = _task_started(header)
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
        started = _task_started(header)
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
        start = _make(inspect_hooks.TaskStart, **_ids(header), spec=header.eval, plan=header.plan)
        point, ctx = "task_start", context("task_start", start, **_extra_ids(header))
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
        scratch = Engine(self.mapping, log_artifacts=False, traces=False, clock=LogClock())
        ids, extra = _ids(header), _extra_ids(header)
        start = _make(inspect_hooks.TaskStart, **ids, spec=header.eval, plan=header.plan)
        items = [
            run_start_point([header]),
            Replayed("task_start", start, None, extra),
            Replayed("task_end", inspect_hooks.TaskEnd(**ids, log=header), None, extra),
        ]
        lacking: list[str] = []
        for item in items:
            if item.point not in self.points:
                continue
            for op in scratch.handle(item.point, context(item.point, item.data, **item.ids)):
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

    def _feed(self, item: Replayed) -> None:
        if item.point not in self.points:
            return
        if item.time is not None:
            self._clock.now = item.time
        ctx = context(item.point, item.data, **item.ids)
        if item.point in self.engine.resume_points and not self.force:
            self._prepare(item.point, ctx)
        ops: list[Operation] = self.engine.handle(item.point, ctx)
        ops = [self._opening(op) if isinstance(op, OpenRun) else op for op in ops]
        if self._updating:
            ops = self._only_new(ops)
        if not ops:
            return
        self.pipeline.emit(ops)
        self._pending += len(ops)
        if self._pending >= self.flush_every:
            self.writer.flush(max(self.settings.flush_timeout, 60.0))
            self._pending = 0


# -- command line ------------------------------------------------------------------------


def run_import_command(args: argparse.Namespace, console: Any = None) -> int:
    """Run ``inspect-mlflow import``: a progress bar on stderr, a summary on stdout.

    Settings come from the options, then the environment (as for the hook).

    Exit status: 0 every log imported or skipped, 1 a log or the mapping could not be
    read, 2 writes did not reach MLflow (or the settings are bad).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from inspect_mlflow._config import SettingsError, load_settings
    from inspect_mlflow._mapping import MappingInvalid, load_mapping

    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"inspect-mlflow import: {err}", file=sys.stderr)
        return 2
    uri = args.tracking_uri or settings.tracking_uri or "sqlite:///mlflow.db"
    settings = dataclasses.replace(
        settings,
        tracking_uri=uri,
        experiment_name=args.experiment or settings.experiment_name,
        mapping_path=args.mapping or settings.mapping_path,
        # A password in --tracking-uri is a credential too.
        secrets=(*settings.secrets, *environment_secrets(uri)),
    )
    try:
        mapping = load_mapping(settings.mapping_path)
    except MappingInvalid as invalid:
        for error in invalid.errors:
            print(error, file=sys.stderr)
        print("inspect-mlflow import: the mapping is invalid; nothing imported", file=sys.stderr)
        return 1

    console = console or Console(stderr=True)
    counts = {"imported": 0, "skipped": 0, "failed": 0}
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("logs  {task.fields[counts]}"),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("import", total=None, counts="")

        def on_total(total: int) -> None:
            progress.update(task, total=total)

        def on_log(outcome: LogOutcome) -> None:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status == "failed" and not progress.disable:
                progress.console.print(f"[red]failed[/red] {outcome.path}: {outcome.detail}")
            shown = ", ".join(f"{n} {status}" for status, n in counts.items())
            progress.update(task, advance=1, counts=shown)

        report = Importer(settings, mapping, force=args.force).run(
            args.paths, on_total=on_total, on_log=on_log
        )

    updated = f"{report.count('updated')} updated, " if report.count("updated") else ""
    print(
        f"inspect-mlflow import: {report.count('imported')} imported, {updated}"
        f"{report.count('skipped')} skipped, {report.count('failed')} failed "
        f"-> experiment '{settings.experiment_name}' at {uri}"
    )
    for outcome in report.outcomes:
        if outcome.status != "imported":
            print(f"  {outcome.status}: {outcome.path}: {outcome.detail}")
    for line in report.problems:
        print(f"  problem: {line}")
    if not report.delivered:
        print("  some writes did not reach MLflow before the deadline")
        return 2
    if any(o.status == "failed" and "not delivered" in o.detail for o in report.outcomes):
        return 2
    return 1 if report.count("failed") else 0
