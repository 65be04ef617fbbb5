"""How a batch becomes MLflow requests: steps in order, requests within MLflow's limits.

:func:`plan` groups a batch's operations into steps (a run's data merged up to its next
open or close, traces together, a run's documents with its close), so that each request
carries as much as it may while order still holds where it matters. :func:`pack` splits
one step's tags, params and metrics into ``log_batch`` requests, and
:func:`parallel_requests` says how many requests may be in flight at once. All pure: no
MLflow call is made here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import TypeAlias

from mlflow.entities import Metric, Param, RunTag
from mlflow.environment_variables import MLFLOW_HTTP_POOL_MAXSIZE

from inspect_mlflow._operations import (
    CloseRun,
    LogArtifact,
    LogMetrics,
    LogParams,
    LogTrace,
    OpenRun,
    Operation,
    SetTags,
)

__all__ = [
    "Entry",
    "Outcome",
    "Step",
    "early_traces",
    "entry",
    "metric_entry",
    "pack",
    "parallel_requests",
    "plan",
]

MAX_METRICS_PER_REQUEST = 1000
MAX_PARAMS_PER_REQUEST = 100
MAX_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
MAX_REQUEST_CHARS = 900_000
"""MLflow refuses ``log_batch`` bodies over 1,000,000 characters; keep room for the
envelope (run id, field names, JSON punctuation) that the estimate below leaves out."""

ENTRY_OVERHEAD = 64
"""Estimated JSON characters of one entry besides its key and value."""

MAX_PARALLEL_UPLOADS = 8
"""Table files of one run uploaded at once over HTTP when the run closes (at most)."""

MAX_PARALLEL_TRACES = 8
"""``start_trace`` requests of a batch in flight at once over HTTP (at most)."""

POOL_HEADROOM = 2
"""Connections of MLflow's HTTP pool that :func:`parallel_requests` leaves to others."""


def parallel_requests() -> tuple[int, int]:
    """How many ``start_trace`` requests and how many uploads may be in flight at once.

    Why: MLflow's client sends every request of a process through one connection pool
    per host, of ``MLFLOW_HTTP_POOL_MAXSIZE`` connections (10 by default). A batch's
    traces (on the trace lane) and a run's uploads (on the writer thread) overlap, and 8
    of each overflowed it: urllib3 then opened extra connections and printed
    "Connection pool is full, discarding connection" as each came back, a warning that
    reads like a failure. Both are sized to fit the pool, with :data:`POOL_HEADROOM`
    connections left for the rest (the lane's span upload, the eval's own MLflow calls
    when delivering from its process). The delivery process enlarges its own pool
    (:func:`inspect_mlflow._delivery.process.size_http_pool`) so that it keeps 8 of each.

    Returns:
        ``(start_trace requests, uploads)``, each at least 1.
    """
    try:
        pool = int(MLFLOW_HTTP_POOL_MAXSIZE.get())
    except (TypeError, ValueError):
        pool = 10
    room = max(2, pool - POOL_HEADROOM)
    traces = max(1, min(MAX_PARALLEL_TRACES, room // 2))
    return traces, max(1, min(MAX_PARALLEL_UPLOADS, room - traces))


Outcome: TypeAlias = tuple[set[int], set[int], BaseException | None]
"""A step's result: indices refused for good, indices to retry, the error (None: landed)."""


@dataclass(slots=True)
class Step:
    """A unit of the plan: indices of the batch's operations it delivers, in order."""

    kind: str
    run: str | None
    indices: list[int] = field(default_factory=list)


def early_traces(steps: Sequence[Step]) -> set[int]:
    """Positions of the trace steps that may start with the batch, before its other steps.

    A batch's traces go on the trace lane beside its other steps; the trace steps that
    come before any run is opened or any input is logged in this batch refer only to
    runs and models that exist already, so they need not wait for the steps planned
    before them (a run's ``log_batch``). At a run's end that starts its last traces, the
    slowest part (one ``start_trace`` each), a round trip or more sooner.
    """
    early: set[int] = set()
    for position, step in enumerate(steps):
        if step.kind in ("OpenRun", "LogInputs"):
            break
        if step.kind == "trace":
            early.add(position)
    return early


def plan(ops: Sequence[Operation]) -> list[Step]:
    """Group a batch into steps, merging a run's tags, params and metrics.

    A run's data operations join the first data step of that run in the batch until an
    ``OpenRun`` or ``CloseRun`` of the same run; traces join one step until any run
    opens or closes; a run's ``LogArtifact`` operations since its last ``OpenRun`` join
    its ``CloseRun`` (they are uploaded together). Everything else is its own step, in
    batch order.
    """
    steps: list[Step] = []
    data: dict[str, Step] = {}
    traces: Step | None = None
    artifacts: dict[str, list[Step]] = {}
    for index, op in enumerate(ops):
        if isinstance(op, (SetTags, LogParams, LogMetrics)):
            step = data.get(op.run)
            if step is None:
                step = data[op.run] = Step("data", op.run)
                steps.append(step)
            step.indices.append(index)
        elif isinstance(op, LogTrace):
            if traces is None:
                traces = Step("trace", None)
                steps.append(traces)
            traces.indices.append(index)
        elif isinstance(op, LogArtifact):
            step = Step("LogArtifact", op.run, [index])
            artifacts.setdefault(op.run, []).append(step)
            steps.append(step)
        else:
            if isinstance(op, (OpenRun, CloseRun)):
                data.pop(op.run, None)
                traces = None
            step = Step(type(op).__name__, op.run, [index])
            held = artifacts.pop(op.run, []) if isinstance(op, (OpenRun, CloseRun)) else []
            if isinstance(op, CloseRun) and held:
                # The run's documents go up with its tables, in one parallel round.
                steps[:] = [s for s in steps if all(s is not h for h in held)]
                step.indices[:0] = [h.indices[0] for h in held]
            steps.append(step)
    return steps


@dataclass(slots=True)
class Entry:
    """One metric, param or tag of a ``log_batch`` request, with its estimated size."""

    key: str
    entity: Metric | Param | RunTag
    size: int


def entry(key: str, entity: Param | RunTag) -> Entry:
    """A param or tag entry, sized by the JSON text of its key and value."""
    return Entry(key, entity, len(json.dumps(key)) + len(json.dumps(entity.value)) + ENTRY_OVERHEAD)


def metric_entry(key: str, metric: Metric) -> Entry:
    """A metric entry (its number and times take about the same room whatever they are)."""
    return Entry(key, metric, len(key) + 32 + ENTRY_OVERHEAD)


def _chunks(entries: list[Entry], limit: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    size = 0
    for item in entries:
        if chunk and (len(chunk) >= limit or size + item.size > MAX_REQUEST_CHARS):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item.size
    if chunk:
        yield chunk


def pack(params: list[Entry], tags: list[Entry], metrics: list[Entry]) -> list[list[Entry]]:
    """Split entries into ``log_batch`` requests within MLflow's per-request limits.

    Params and tags are paired chunk by chunk (as MLflow's own client does), and metrics
    fill the room left in those requests before new ones are started.
    """
    requests_: list[list[Entry]] = []
    sizes: list[int] = []
    for p, t in zip_longest(
        _chunks(params, MAX_PARAMS_PER_REQUEST), _chunks(tags, MAX_TAGS_PER_REQUEST), fillvalue=[]
    ):
        p_size, t_size = sum(e.size for e in p), sum(e.size for e in t)
        if p_size + t_size > MAX_REQUEST_CHARS:
            requests_ += [p, t]
            sizes += [p_size, t_size]
        else:
            requests_.append(p + t)
            sizes.append(p_size + t_size)
    counts = [0] * len(requests_)
    slot = 0
    for metric in metrics:
        while slot < len(requests_) and (
            counts[slot] >= MAX_METRICS_PER_REQUEST
            or len(requests_[slot]) >= MAX_ENTITIES_PER_REQUEST
            or sizes[slot] + metric.size > MAX_REQUEST_CHARS
        ):
            slot += 1
        if slot == len(requests_):
            requests_.append([])
            sizes.append(0)
            counts.append(0)
        requests_[slot].append(metric)
        sizes[slot] += metric.size
        counts[slot] += 1
    return requests_
