"""Inspect's hook payloads rebuilt from an eval log, in the order a live run delivers them.

Why: a log file holds what the hooks saw while the eval ran (the spec and plan, every
sample with its events, the results), so feeding the payloads rebuilt from it to the
same engine and mapping as a live run (import, the dry run) gives the same operations.
Times come from the log: each point carries its time, which the pipeline
(``_delivery.pipeline``, ``feed(..., at=)``) sets on the engine's clock.

The payloads are Inspect's own (``inspect_ai.hooks`` dataclasses), in the order of a
live run: ``run_start``; per task ``task_start``, then per sample (in completion order,
so the completion index gives the same steps as live) ``sample_init``, ``sample_start``,
``sample_attempt_start``, the sample's events as ``sample_event`` (each once, in delivery
order, without the init events Inspect never delivers), ``sample_scoring``,
``sample_attempt_end``, ``sample_end``; ``task_end``; ``run_end``. ``model_usage``,
``model_cache_usage`` and ``before_model_generate`` are rebuilt from model events;
``model_retry`` and the eval-set points are not in a log and never fire.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspect_ai import hooks as inspect_hooks

from inspect_mlflow._inspect.log_reading import (
    LogReadError,
    epoch_seconds,
    reuse_cutoff,
    samples_by_completion,
    task_ended,
    task_started,
)

__all__ = [
    "Replayed",
    "run_end_point",
    "run_start_point",
    "task_end_point",
    "task_points",
    "task_start_point",
]


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


def run_start_point(headers: Sequence[Any]) -> Replayed:
    """``run_start`` for the logs of one run (task names in the order the tasks ran)."""
    first = headers[0].eval
    times = [t for t in (task_started(h) for h in headers) if t is not None]
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
    times = [t for t in (task_ended(h) for h in headers) if t is not None]
    data = inspect_hooks.RunEnd(
        eval_set_id=first.eval_set_id, run_id=first.run_id, exception=None, logs=EvalLogs(headers)
    )
    return Replayed("run_end", data, max(times) if times else None)


def task_start_point(header: Any) -> Replayed:
    """``task_start`` of a log, from its header alone (with the ids the hook adds)."""
    data = _make(inspect_hooks.TaskStart, **_ids(header), spec=header.eval, plan=header.plan)
    return Replayed("task_start", data, task_started(header), _extra_ids(header))


def task_end_point(header: Any) -> Replayed:
    """``task_end`` of a log, its header as the payload's ``log``."""
    data = inspect_hooks.TaskEnd(**_ids(header), log=header)
    return Replayed("task_end", data, task_ended(header), _extra_ids(header))


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
    last = task_started(header)
    if wanted is None or "task_start" in wanted:
        yield task_start_point(header)
    error: LogReadError | None = None
    done = 0
    try:
        reused_before = reuse_cutoff(header) if skip_reused else None
        for sample in samples_by_completion(path, header, reused_before):
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
        yield Replayed("task_end", data, task_ended(header) or last, extra)
    if error is not None:
        raise LogReadError(path, f"{error.reason} (stopped after {done} sample(s))")


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
    started = epoch_seconds(sample.started_at)
    ended = epoch_seconds(sample.completed_at)
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
        at = epoch_seconds(event.timestamp)
        delivered = epoch_seconds(getattr(event, "completed", None)) or at
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
