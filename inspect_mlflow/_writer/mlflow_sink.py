"""The sink that delivers write operations to MLflow.

This module and ``traces.py`` are the only ones that import ``mlflow``. Everything goes
through one explicit :class:`mlflow.MlflowClient` built from the tracking URI; nothing
here reads or changes MLflow's process-wide state (active run, tracking URI, experiment).

A batch is planned before it is sent, so that each MLflow request carries as much as it
may while order still holds where it matters:

- ``OpenRun`` creates the run (once per logical key) with its name, parent and tags in
  one request;
- ``SetTags``/``LogParams``/``LogMetrics`` of one run are merged across the batch, up to
  the next ``OpenRun``/``CloseRun`` of that run, and sent as ``log_batch`` requests
  within MLflow's limits;
- ``AppendRows`` only accumulates rows in memory; ``CloseRun`` writes each accumulated
  table or record list as one JSON artifact, registers the tables in the run's
  ``mlflow.loggedArtifacts`` tag (as ``log_table`` does, so the UI shows them as
  tables) and then terminates the run;
- ``LogInputs`` links the run's models and datasets in one ``log_inputs`` request; a
  model's LoggedModel is found or created once per sink (``logged_models``), and metrics
  and traces that name the model carry its id;
- ``LogTrace`` goes to the trace sender, after the runs it refers to exist. Over HTTP a
  batch's traces are sent on a thread of their own (the trace lane) while the batch's
  other steps go on; :meth:`MlflowSink.send` returns when both are done.

Threading: one instance is driven by one thread (the writer's); it keeps per-run state
(logical key -> MLflow run id, accumulated rows) without locks. The trace lane only reads
run ids of runs that already exist; call counts are kept under a lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from typing import Any, TypeAlias

import requests
from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelInput,
    Metric,
    Param,
    RunStatus,
    RunTag,
    ViewType,
)
from mlflow.environment_variables import (
    MLFLOW_HTTP_POOL_MAXSIZE,
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
)
from mlflow.exceptions import MlflowException

from inspect_mlflow._operations import (
    RUN_STATE_PATH,
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
from inspect_mlflow._writer.logged_models import MODEL_ID_METADATA, LoggedModels
from inspect_mlflow._writer.sink import Rejection, SinkError
from inspect_mlflow._writer.store_lock import prepare_local_store

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "inspect_mlflow.run_key"
"""Tag holding a run's logical key, so a replay finds the run instead of duplicating it."""

LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
DATA_CONTEXT_TAG = "mlflow.data.context"
"""Input tag saying what a dataset was used for (``eval``)."""

MAX_METRICS_PER_REQUEST = 1000
MAX_PARAMS_PER_REQUEST = 100
MAX_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
MAX_REQUEST_CHARS = 900_000
"""MLflow refuses ``log_batch`` bodies over 1,000,000 characters; keep room for the
envelope (run id, field names, JSON punctuation) that the estimate below leaves out."""

_ENTRY_OVERHEAD = 64
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


_TRANSIENT_CODES = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
    }
)
"""MLflow error codes worth retrying (HTTP 5xx and 429, connection failures)."""

_RUN_LEVEL_CODES = frozenset(
    {"RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"}
)
"""Error codes that concern the whole run or the caller, not one value of a batch."""

_TRACES_MODULE = "inspect_mlflow._writer.traces"


def classify(error: BaseException) -> tuple[bool, str]:
    """Say whether an error from an MLflow call is transient, and name its kind.

    Connection failures and timeouts reach us as :class:`MlflowException` with the
    ``requests`` error as cause or context, or as the ``requests`` error itself.

    Returns:
        ``(transient, kind)``; ``kind`` is an MLflow error code or an exception name.
    """
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)) or isinstance(
            seen, (ConnectionError, TimeoutError)
        ):
            return True, type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, MlflowException):
        # The REST client maps HTTP statuses to these codes (429 -> RESOURCE_EXHAUSTED,
        # 503 -> TEMPORARILY_UNAVAILABLE, 504 -> DEADLINE_EXCEEDED, other 5xx and 408 ->
        # INTERNAL_ERROR), so the code alone decides.
        code = str(error.error_code)
        return code in _TRANSIENT_CODES, code
    kind = getattr(error, "kind", None)
    return False, kind if isinstance(kind, str) else type(error).__name__


def _reason(error: BaseException) -> str:
    text = error.message if isinstance(error, MlflowException) else str(error)
    return str(text)[:500]


def _is_run_level(error: BaseException) -> bool:
    if not isinstance(error, MlflowException):
        return False
    return error.error_code in _RUN_LEVEL_CODES or "must be in the 'active' state" in str(
        error.message
    )


def _dumps(content: Any) -> str:
    """JSON text that browsers can parse: non-finite floats become null."""
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(content), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def table_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """MLflow's table format: the union of row keys (first-seen order) and one list per row.

    This is what ``MlflowClient.log_table`` writes for a JSON file (pandas ``split``
    orient without index); a missing cell is null and a nested object stays an object.
    """
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    names = list(columns)
    return _dumps({"columns": names, "data": [[row.get(c) for c in names] for row in rows]})


@dataclass(slots=True)
class _Entry:
    """One metric, param or tag of a ``log_batch`` request, with its estimated size."""

    key: str
    entity: Metric | Param | RunTag
    size: int


_Outcome: TypeAlias = tuple[set[int], set[int], BaseException | None]
"""A step's result: indices refused for good, indices to retry, the error (None: landed)."""


@dataclass(slots=True)
class _Step:
    """A unit of the plan: indices of the batch's operations it delivers, in order."""

    kind: str
    run: str | None
    indices: list[int] = field(default_factory=list)


class _StepFailed(Exception):
    """A step did not (entirely) land.

    ``failed`` are indices of operations refused for good (None: the whole step);
    ``pending`` are indices to send again after the transient ``error``.
    """

    def __init__(
        self,
        error: BaseException,
        failed: Iterable[int] | None = None,
        pending: Iterable[int] = (),
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.failed = None if failed is None else set(failed)
        self.pending = set(pending)


class SinkCancelled(ConnectionAbortedError):
    """The sink was cancelled (its writer gave up on it): no further MLflow call is made.

    A connection error on purpose: what was not sent is pending, not refused (the writer
    that cancelled the sink has handed it to the spool).
    """

    kind = "cancelled"


class Refused(Exception):
    """A permanent problem the sink finds itself, before asking MLflow."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _retry_later(
    error: BaseException,
    ops: Sequence[Operation],
    pending: set[int],
    failed: set[int],
    rejected: list[Rejection],
) -> SinkError:
    """The error for a batch stopped by a transient failure: what to send again, what not."""
    kind = classify(error)[1]
    raised = SinkError(
        f"MLflow call failed ({kind}): {_reason(error)}",
        transient=True,
        kind=kind,
        pending=[ops[i] for i in sorted(pending - failed)],
        failed=[ops[i] for i in sorted(failed)],
        rejected=rejected,
    )
    raised.__cause__ = error
    return raised


def plan(ops: Sequence[Operation]) -> list[_Step]:
    """Group a batch into steps, merging a run's tags, params and metrics.

    A run's data operations join the first data step of that run in the batch until an
    ``OpenRun`` or ``CloseRun`` of the same run; traces join one step until any run
    opens or closes; a run's ``LogArtifact`` operations since its last ``OpenRun`` join
    its ``CloseRun`` (they are uploaded together). Everything else is its own step, in
    batch order.
    """
    steps: list[_Step] = []
    data: dict[str, _Step] = {}
    traces: _Step | None = None
    artifacts: dict[str, list[_Step]] = {}
    for index, op in enumerate(ops):
        if isinstance(op, (SetTags, LogParams, LogMetrics)):
            step = data.get(op.run)
            if step is None:
                step = data[op.run] = _Step("data", op.run)
                steps.append(step)
            step.indices.append(index)
        elif isinstance(op, LogTrace):
            if traces is None:
                traces = _Step("trace", None)
                steps.append(traces)
            traces.indices.append(index)
        elif isinstance(op, LogArtifact):
            step = _Step("LogArtifact", op.run, [index])
            artifacts.setdefault(op.run, []).append(step)
            steps.append(step)
        else:
            if isinstance(op, (OpenRun, CloseRun)):
                data.pop(op.run, None)
                traces = None
            step = _Step(type(op).__name__, op.run, [index])
            held = artifacts.pop(op.run, []) if isinstance(op, (OpenRun, CloseRun)) else []
            if isinstance(op, CloseRun) and held:
                # The run's documents go up with its tables, in one parallel round.
                steps[:] = [s for s in steps if all(s is not h for h in held)]
                step.indices[:0] = [h.indices[0] for h in held]
            steps.append(step)
    return steps


class MlflowSink:
    """Delivers operations to one MLflow experiment through an explicit client.

    Network work happens only in :meth:`send` (on the writer thread); building the sink
    does none, so it is safe to create on the event loop.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        *,
        resume: bool = False,
        artifact_location: str | None = None,
        trace_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Configure the sink; the client and experiment are resolved on first send.

        Args:
            tracking_uri: Tracking URI for the client (``http://...``, ``sqlite:///...``).
            experiment_name: Experiment to log to; created if missing (a concurrent
                creation by another process is fine).
            resume: Look up each run by its logical key before creating it (for spool
                replay); the live path leaves this off to spend one request per run.
            artifact_location: Artifact root for the experiment, used only when this
                sink creates it.
            trace_options: Keyword arguments for the trace sender.
        """
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.resume = resume
        self.artifact_location = artifact_location
        self.trace_options = dict(trace_options or {})
        self._count_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        """MLflow client calls made, by method name (for tests and diagnostics)."""
        self._client_obj: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._run_ids: dict[str, str] = {}
        self._closed: set[str] = set()
        self._continued: set[str] = set()
        """Runs that existed before this sink opened them (their tables get appended to)."""
        self._merged: dict[str, set[tuple[str, str]]] = {}
        self._tables: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        self._logged_tables: dict[str, list[dict[str, str]]] = {}
        self._trace_sender: Any = None
        self._traces_unavailable = False
        self._cancelled = False
        self._remote = tracking_uri.startswith(("http://", "https://", "databricks"))
        self._lane: ThreadPoolExecutor | None = None
        self._lane_pid = 0
        self._artifact_uris: dict[str, str] = {}
        """MLflow run id -> its artifact URI, as learnt when the run was created or found."""
        self._artifact_repos: dict[str, Any] = {}
        self._models = LoggedModels(self._call, lambda: self._experiment_id)
        """Model identity -> LoggedModel id (one lookup or creation per model)."""
        self._run_names: dict[str, str] = {}
        self._uncertain: set[str] = set()
        """Runs whose ``create_run`` failed transiently: the server may have created them."""
        self.spooled_runs: set[str] = set()
        """Runs whose close went to the spool with the rows held for them (set by the
        spool's owner): :meth:`close` does not warn about their rows."""

    # -- public ----------------------------------------------------------------------

    @property
    def experiment_id(self) -> str | None:
        """The experiment id once resolved by the first send."""
        return self._experiment_id

    def run_id(self, run: str) -> str | None:
        """The MLflow run id of a logical run key, if this sink created or found it."""
        return self._run_ids.get(run)

    def find_runs(self, runs: Iterable[str]) -> dict[str, Any]:
        """The active runs of the experiment that carry these logical run keys.

        For ``inspect-mlflow import``, which skips a log whose runs are already there.
        It only reads (a missing experiment means none exist) and caches nothing but the
        experiment id, so a separate sink instance can answer it on the caller's thread
        while the writer's own sink delivers.

        Args:
            runs: Logical run keys (``<kind>:<value>``).

        Returns:
            Key -> the MLflow ``Run`` found by its ``inspect_mlflow.run_key`` tag, for the
            keys that have one (one search request per key).
        """
        if self._experiment_id is None:
            experiment = self._call("get_experiment_by_name", self.experiment_name)
            if experiment is None or experiment.lifecycle_stage != "active":
                return {}
            self._experiment_id = str(experiment.experiment_id)
        found: dict[str, Any] = {}
        for run in runs:
            existing = self._search_run(run)
            if existing is not None:
                found[run] = existing
        return found

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, int, float]]:
        """Stored points of one metric of a run, as ``(step, timestamp ms, value)``.

        For ``inspect-mlflow replay``, which skips points already stored; like
        :meth:`find_runs` it only reads, on a separate sink instance.
        """
        history = self._call("get_metric_history", run_id, key)
        return [(int(m.step), int(m.timestamp), float(m.value)) for m in history]

    def read_run_state(self, run: str) -> dict[str, Any] | None:
        """The state a resumable run was closed with, read from MLflow (for continuing it).

        Meant for a separate sink instance that only reads, on the caller's thread, while
        the writer's own sink delivers: it caches nothing but the experiment id. Costs a
        run search, and, when the run exists, a listing and a download of its state file.

        Args:
            run: Logical run key.

        Returns:
            The saved ``{"version", "counters", "series"}``; ``{}`` when the run exists
            but has no saved state (it never closed); None when there is no such run.
        """
        if self._experiment_id is None:
            experiment = self._call("get_experiment_by_name", self.experiment_name)
            if experiment is None or experiment.lifecycle_stage != "active":
                return None
            self._experiment_id = str(experiment.experiment_id)
        existing = self._search_run(run)
        if existing is None:
            return None
        state = self._download_json(existing.info.run_id, RUN_STATE_PATH)
        return state if isinstance(state, dict) else {}

    def send(self, ops: Sequence[Operation]) -> None:
        """Deliver a batch in order (see the module docstring for how it is grouped).

        Raises:
            SinkError: Part of the batch did not land; ``pending`` is what to retry after
                a transient error, ``failed`` and ``rejected`` what cannot land.
        """
        ops = list(ops)
        if not ops:
            return
        try:
            self._ensure_experiment()
        except Exception as error:
            transient, kind = classify(error)
            raise SinkError(
                f"cannot resolve MLflow experiment {self.experiment_name!r}: {_reason(error)}",
                transient=transient,
                kind=kind,
                pending=ops if transient else (),
                failed=() if transient else ops,
            ) from error
        rejected: list[Rejection] = []
        failed: set[int] = set()
        first_error: BaseException | None = None
        for op in ops:
            if isinstance(op, LogInputs):
                for model in op.models:
                    self._models.know(model)
        steps = plan(ops)
        background: list[Future[_Outcome]] = []
        for position, step in enumerate(steps):
            if step.kind == "trace" and self._remote:
                background.append(self._trace_lane().submit(self._settle, step, ops, []))
                continue
            refused, retry, error = self._settle(step, ops, rejected)
            failed |= refused
            if error is None:
                continue
            if not retry:
                first_error = first_error or error
                continue
            later = {i for step_ in steps[position + 1 :] for i in step_.indices}
            failed_late, pending_late, _ = self._join(background)
            failed |= failed_late
            raise _retry_later(error, ops, retry | later | pending_late, failed, rejected)
        failed_late, pending_late, error = self._join(background)
        failed |= failed_late
        if pending_late:
            assert error is not None
            raise _retry_later(error, ops, pending_late, failed, rejected)
        first_error = first_error or error
        if failed or rejected:
            kind = classify(first_error)[1] if first_error else "rejected"
            message = _reason(first_error) if first_error else f"{len(rejected)} value(s) refused"
            raise SinkError(
                f"MLflow refused part of a batch ({kind}): {message}",
                transient=False,
                kind=kind,
                failed=[ops[i] for i in sorted(failed)],
                rejected=rejected,
            ) from first_error

    def _settle(self, step: _Step, ops: list[Operation], rejected: list[Rejection]) -> _Outcome:
        """Run one step: (indices refused for good, indices to retry, the error or None)."""
        try:
            self._run_step(step, ops, rejected)
        except _StepFailed as stop:
            refused = set(step.indices) if stop.failed is None else stop.failed
            return refused, stop.pending, stop.error
        except Exception as caught:
            if classify(caught)[0]:
                return set(), set(step.indices), caught
            return set(step.indices), set(), caught
        return set(), set(), None

    @staticmethod
    def _join(background: list[Future[_Outcome]]) -> _Outcome:
        """Wait for the trace steps sent alongside; their outcomes folded into one.

        The error is the first transient one when any step is to be retried (it decides
        the kind of the retry), else the first refusal.
        """
        refused: set[int] = set()
        retry: set[int] = set()
        transient: BaseException | None = None
        permanent: BaseException | None = None
        for future in background:
            failed_, pending_, error = future.result()
            refused |= failed_
            retry |= pending_
            if error is not None and pending_:
                transient = transient or error
            elif error is not None:
                permanent = permanent or error
        return refused, retry, transient if retry else permanent

    def _trace_lane(self) -> ThreadPoolExecutor:
        """One thread that sends a batch's traces while its other steps go on.

        Traces only refer to runs that exist (a trace step comes after the ``OpenRun`` of
        its runs) and nothing waits for them but the end of the batch, so over HTTP the
        trace requests (a ``start_trace`` per sample) overlap the runs' own requests: at
        the end of a run, its tables, artifacts and closing no longer queue behind the
        last interval's traces. One thread, so trace steps stay in order among themselves.
        """
        if self._lane is None or self._lane_pid != os.getpid():  # none yet, or forked
            self._lane = ThreadPoolExecutor(1, thread_name_prefix="inspect-mlflow-trace-lane")
            self._lane_pid = os.getpid()
        return self._lane

    def cancel(self) -> None:
        """Make no further MLflow call: each later one raises (any thread may call this).

        For a writer that abandons this sink while one of its calls blocks (a server that
        died mid-request): when that call returns, nothing more is sent from here.
        """
        self._cancelled = True

    def close(self) -> None:
        """Forget per-run state; rows of runs never closed are dropped with a warning."""
        unclosed = [
            run for run, tables in self._tables.items() if tables and run not in self.spooled_runs
        ]
        if unclosed:
            logger.warning(
                "inspect-mlflow: runs closed the sink with unwritten tables: %s", unclosed
            )
        close = getattr(self._trace_sender, "close", None)
        if callable(close):
            close()
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.shutdown(wait=False)
        self._tables.clear()

    # -- setup -----------------------------------------------------------------------

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            # A new sqlite file is set up by one process at a time (see store_lock).
            prepare_local_store(self.tracking_uri)
            self._client_obj = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client_obj

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._check_not_cancelled()
        self._count(name)
        return getattr(self._client, name)(*args, **kwargs)

    def _check_not_cancelled(self) -> None:
        """Raise :class:`SinkCancelled` once :meth:`cancel` was called: no call goes out."""
        if self._cancelled:
            raise SinkCancelled("the sink was cancelled; no further MLflow call")

    def _count(self, name: str, n: int = 1) -> None:
        """Count MLflow calls; uploads and the trace lane count from threads of their own."""
        with self._count_lock:
            self.calls[name] += n

    def _ensure_experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        experiment = self._call("get_experiment_by_name", self.experiment_name)
        if experiment is None:
            try:
                experiment_id = self._call(
                    "create_experiment",
                    self.experiment_name,
                    artifact_location=self.artifact_location,
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self._call("get_experiment_by_name", self.experiment_name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        elif experiment.lifecycle_stage != "active":
            raise Refused(
                f"experiment {self.experiment_name!r} is deleted; restore it or log to "
                "another experiment",
                "experiment_deleted",
            )
        else:
            experiment_id = experiment.experiment_id
        self._experiment_id = str(experiment_id)
        return self._experiment_id

    def _require_run(self, run: str) -> str:
        run_id = self._run_ids.get(run)
        if run_id is None:
            raise _StepFailed(
                Refused(f"run {run!r} was never created (its OpenRun failed)", "unknown_run")
            )
        return run_id

    # -- steps -----------------------------------------------------------------------

    def _run_step(self, step: _Step, ops: list[Operation], rejected: list[Rejection]) -> None:
        """Run one step; raises :class:`_StepFailed` or the MLflow error if it did not land."""
        if step.kind == "data":
            assert step.run is not None
            run_id = self._require_run(step.run)
            group = [ops[i] for i in step.indices]
            self._log_data(step.run, run_id, group, rejected)  # type: ignore[arg-type]
            return
        if step.kind == "trace":
            self._log_traces(step, ops)
            return
        op = ops[step.indices[-1]]  # a CloseRun step starts with the documents it carries
        if isinstance(op, OpenRun):
            self._open_run(op, rejected)
        elif isinstance(op, AppendRows):
            if op.run in self._closed:
                raise _StepFailed(
                    Refused(
                        f"rows for {op.path!r} arrived after run {op.run!r} was closed",
                        "run_closed",
                    )
                )
            tables = self._tables.setdefault(op.run, {})
            tables.setdefault((op.path, op.format), []).extend(op.rows)
        elif isinstance(op, LogArtifact):
            run_id = self._require_run(op.run)
            self._upload_texts(run_id, self._documents([op], rejected))
        elif isinstance(op, LogInputs):
            self._log_inputs(op)
        elif isinstance(op, CloseRun):
            held = [ops[i] for i in step.indices[:-1]]
            self._close_run(op, self._documents(held, rejected), rejected)

    def _log_inputs(self, op: LogInputs) -> None:
        """The run's models (found or created) and datasets, in one request."""
        run_id = self._require_run(op.run)
        models = [LoggedModelInput(self._models.resolve(m, run_id)) for m in op.models]
        datasets = [
            DatasetInput(
                Dataset(
                    name=d.name,
                    digest=d.digest,
                    source_type=d.source_type,
                    source=d.source,
                    schema=d.schema,
                    profile=d.profile,
                ),
                tags=[InputTag(DATA_CONTEXT_TAG, d.context)] if d.context else [],
            )
            for d in op.datasets
        ]
        self._call("log_inputs", run_id, datasets=datasets or None, models=models or None)

    def _open_run(self, op: OpenRun, rejected: list[Rejection]) -> None:
        if op.run in self._run_ids:
            if op.resume and op.run in self._closed:
                self._reopen(op.run, "FINISHED")
            return
        if self.resume or op.resume or op.run in self._uncertain:
            # (An earlier create_run of this run failed mid-request: it may have landed.)
            found = self._find_run(op.run)
            self._uncertain.discard(op.run)
            if found is not None:
                if op.resume:
                    self._reopen(op.run, found.info.status)
                return
        tags = {str(k): str(v) for k, v in op.tags.items()}
        essential: dict[str, str] = {RUN_KEY_TAG: op.run}
        if op.name:
            essential[RUN_NAME_TAG] = op.name
        if op.parent is not None:
            parent_id = self._run_ids.get(op.parent)
            if parent_id is None:
                rejected.append(
                    Rejection(op.run, PARENT_RUN_TAG, f"parent run {op.parent!r} was never created")
                )
            else:
                essential[PARENT_RUN_TAG] = parent_id
        try:
            run = self._call(
                "create_run",
                self._experiment_id,
                start_time=op.start_time_ms or None,
                tags={**tags, **essential},
                run_name=op.name,
            )
        except Exception as error:
            if classify(error)[0]:
                self._uncertain.add(op.run)  # the retry looks for it first: no duplicate
            raise
        self._run_ids[op.run] = run.info.run_id
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        self._run_names[run.info.run_id] = run.info.run_name

    def _reopen(self, run: str, status: str) -> None:
        """Continue a run that ended: RUNNING again, and its tables get appended to."""
        if status != "RUNNING":
            self._call("update_run", self._run_ids[run], status="RUNNING")
        self._closed.discard(run)
        self._continued.add(run)

    def _search_run(self, run: str) -> Any:
        """The active run tagged with this logical key, or None (one request)."""
        if "'" in run or "\\" in run:
            return None  # not expressible in a filter string; create a new run instead
        found = self._call(
            "search_runs",
            [self._experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{run}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1,
        )
        return found[0] if found else None

    def _find_run(self, run: str) -> Any:
        """Adopt an existing run tagged with this logical key; the MLflow run, or None."""
        existing = self._search_run(run)
        if existing is None:
            return None
        self._run_ids[run] = existing.info.run_id
        self._artifact_uris[existing.info.run_id] = existing.info.artifact_uri
        self._run_names[existing.info.run_id] = existing.info.run_name
        try:
            logged = json.loads(existing.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        except ValueError:
            logged = []
        if isinstance(logged, list):
            self._logged_tables[run] = [e for e in logged if isinstance(e, dict)]
        return existing

    def _terminate(self, run_id: str, status: str, end_time: int | None) -> None:
        """End a run with its status and end time, in one request.

        ``MlflowClient.set_terminated`` first fetches the run (a round trip, on the run
        end the eval waits for) only to print a link to it; this asks the client's store
        to update the run directly and prints the same link from what the sink knows.
        A client without that store (another MLflow) goes through ``set_terminated``.
        """
        store = getattr(getattr(self._client, "_tracking_client", None), "store", None)
        update = getattr(store, "update_run_info", None)
        if not callable(update):
            self._call("set_terminated", run_id, status=status, end_time=end_time)
            return
        self._check_not_cancelled()
        self._count("set_terminated")
        end = end_time or int(time.time() * 1000)
        update(run_id, run_status=RunStatus.from_string(status), end_time=end, run_name=None)
        self._announce(run_id)

    def _announce(self, run_id: str) -> None:
        """Print where the run is, as MLflow's client does when a run ends on a server."""
        if not self._remote or self.tracking_uri.startswith("databricks"):
            return
        if MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get():
            return
        experiment = f"{self.tracking_uri.rstrip('/')}/#/experiments/{self._experiment_id}"
        name = self._run_names.get(run_id) or run_id
        sys.stdout.write(f"🏃 View run {name} at: {experiment}/runs/{run_id}\n")
        sys.stdout.write(f"🧪 View experiment at: {experiment}\n")

    @staticmethod
    def _documents(ops: Sequence[Operation], rejected: list[Rejection]) -> list[tuple[str, str]]:
        """``(text, path)`` of each ``LogArtifact``; a document that is not JSON is refused."""
        uploads: list[tuple[str, str]] = []
        for op in ops:
            assert isinstance(op, LogArtifact)
            try:
                uploads.append((_dumps(op.content), op.path))
            except (TypeError, ValueError) as error:
                rejected.append(Rejection(op.run, op.path, f"not JSON: {error}"))
        return uploads

    def _close_run(
        self, op: CloseRun, documents: list[tuple[str, str]], rejected: list[Rejection]
    ) -> None:
        run_id = self._require_run(op.run)
        tables = self._tables.get(op.run, {})
        logged = list(self._logged_tables.get(op.run, []))
        uploads: list[tuple[str, str]] = list(documents)
        for (path, fmt), rows in tables.items():
            if op.run in self._continued and (path, fmt) not in self._merged.get(op.run, set()):
                # A continued run keeps the rows it wrote before: read them back first.
                # Once merged, the rows stay merged in memory (a retried close must not
                # read back what it wrote itself).
                rows[:0] = self._existing_rows(run_id, path, fmt)
                self._merged.setdefault(op.run, set()).add((path, fmt))
            try:
                text = table_json(rows) if fmt == "table" else _dumps(rows)
            except (TypeError, ValueError) as error:
                rejected.append(Rejection(op.run, path, f"not JSON: {error}"))
                continue
            uploads.append((text, path))
            entry = {"path": path, "type": "table"}
            if fmt == "table" and entry not in logged:
                logged.append(entry)
        tag = None
        if logged != self._logged_tables.get(op.run, []):
            tag = json.dumps(logged)
        self._upload_texts(run_id, uploads, logged_tag=tag)
        if tag is not None:
            self._logged_tables[op.run] = logged
        self._terminate(run_id, op.status, op.end_time_ms or None)
        self._tables.pop(op.run, None)
        self._merged.pop(op.run, None)
        self._closed.add(op.run)

    def _upload_texts(
        self, run_id: str, uploads: list[tuple[str, str]], *, logged_tag: str | None = None
    ) -> None:
        """Write each ``(text, path)`` as an artifact of the run, and the tables' tag.

        The files (and ``mlflow.loggedArtifacts``, when ``logged_tag`` is given) are
        independent, so over HTTP they go up side by side: the run end, which the eval
        waits for, then costs one round trip for all of a run's documents and tables
        instead of one each. The first failure is raised after all were tried (a retry
        writes them all again; an upload replaces the file).
        """
        calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            (self._log_text, (run_id, text, path)) for text, path in uploads
        ]
        if logged_tag is not None:  # first: it must not wait for a free upload thread
            calls.insert(0, (self._call, ("set_tag", run_id, LOGGED_ARTIFACTS_TAG, logged_tag)))
        if len(calls) < 2 or not self._remote:
            for fn, args in calls:
                fn(*args)
            return
        workers = min(len(calls), parallel_requests()[1])  # within MLflow's HTTP pool
        with ThreadPoolExecutor(workers, thread_name_prefix="inspect-mlflow-upload") as pool:
            futures = [pool.submit(fn, *args) for fn, args in calls]
        for future in futures:
            future.result()

    def _log_text(self, run_id: str, text: str, path: str) -> None:
        """One artifact file, written through the run's artifact repository.

        The repository is built from the artifact URI the run was created (or found)
        with, as MLflow's client would build it after asking the server for the run: one
        round trip less, on the run end the eval waits for. Runs whose URI this sink
        has not seen, and Databricks (whose URIs carry a profile), go through the client.
        """
        self._check_not_cancelled()
        repo = self._artifact_repo(run_id)
        if repo is None:
            self._call("log_text", run_id, text, path)
            return
        self._count("log_text")
        folder, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="inspect-mlflow-") as tmp:
            local = os.path.join(tmp, name)
            with open(local, "w", encoding="utf-8") as handle:
                handle.write(text)
            repo.log_artifact(local, folder or None)

    def _artifact_repo(self, run_id: str) -> Any:
        uri = self._artifact_uris.get(run_id)
        if uri is None or self.tracking_uri.startswith("databricks"):
            return None
        repo = self._artifact_repos.get(run_id)
        if repo is None:
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            repo = get_artifact_repository(uri, tracking_uri=self.tracking_uri)
            self._artifact_repos[run_id] = repo
        return repo

    def _existing_rows(self, run_id: str, path: str, fmt: str) -> list[Any]:
        """The rows of a table or record file a run already has (none when absent)."""
        content = self._download_json(run_id, path)
        if fmt == "table":
            if not isinstance(content, dict):
                return []
            columns, data = content.get("columns"), content.get("data")
            if not isinstance(columns, list) or not isinstance(data, list):
                return []
            return [dict(zip(columns, row, strict=False)) for row in data if isinstance(row, list)]
        return list(content) if isinstance(content, list) else []

    def _download_json(self, run_id: str, path: str) -> Any:
        """Parse a JSON artifact of a run; None when the run has no such file.

        Lists the parent folder first, so a missing file is an answer and not an error
        (stores differ in what they raise for one); a failing call still raises.
        """
        folder = path.rpartition("/")[0] or None
        listed = self._call("list_artifacts", run_id, folder)
        if not any(entry.path == path and not entry.is_dir for entry in listed):
            return None
        with tempfile.TemporaryDirectory(prefix="inspect-mlflow-") as tmp:
            local = self._call("download_artifacts", run_id, path, tmp)
            try:
                with open(local, encoding="utf-8") as handle:
                    return json.load(handle)
            except ValueError:
                return None

    # -- tags, params, metrics -------------------------------------------------------

    def _log_data(
        self,
        run: str,
        run_id: str,
        group: Sequence[SetTags | LogParams | LogMetrics],
        rejected: list[Rejection],
    ) -> None:
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        metrics: list[_Entry] = []
        for op in group:
            if isinstance(op, SetTags):
                tags.update({str(k): str(v) for k, v in op.tags.items()})
            elif isinstance(op, LogParams):
                for key, value in op.params.items():
                    value = str(value)
                    if key in params and params[key] != value:
                        rejected.append(
                            Rejection(
                                run, key, "param logged twice with different values in one batch"
                            )
                        )
                        continue
                    params[key] = value
            else:
                for m in op.metrics:
                    try:
                        value = float(m.value)
                    except (TypeError, ValueError):
                        rejected.append(Rejection(run, m.key, f"not a number: {m.value!r}"))
                        continue
                    dataset = m.dataset_name if m.dataset_digest is not None else None
                    metric = Metric(
                        m.key,
                        value,
                        int(m.timestamp_ms),
                        int(m.step),
                        model_id=self._models.resolve(m.model, run_id) if m.model else None,
                        dataset_name=dataset,
                        dataset_digest=m.dataset_digest if dataset is not None else None,
                    )
                    metrics.append(_Entry(m.key, metric, len(m.key) + 32 + _ENTRY_OVERHEAD))
        param_entries = [_entry(k, Param(k, v)) for k, v in params.items()]
        tag_entries = [_entry(k, RunTag(k, v)) for k, v in tags.items()]
        for request in _pack(param_entries, tag_entries, metrics):
            self._log_isolated(run, run_id, request, rejected)

    def _log_isolated(
        self, run: str, run_id: str, entries: list[_Entry], rejected: list[Rejection]
    ) -> None:
        """Send one request; if MLflow refuses it, bisect until the bad values are found."""
        try:
            self._call(
                "log_batch",
                run_id,
                metrics=[e.entity for e in entries if isinstance(e.entity, Metric)],
                params=[e.entity for e in entries if isinstance(e.entity, Param)],
                tags=[e.entity for e in entries if isinstance(e.entity, RunTag)],
                synchronous=True,
            )
        except Exception as error:
            if classify(error)[0]:
                raise
            if _is_run_level(error):
                raise _StepFailed(error) from error
            if len(entries) == 1:
                rejected.append(Rejection(run, entries[0].key, _reason(error)))
                return
            middle = len(entries) // 2
            self._log_isolated(run, run_id, entries[:middle], rejected)
            self._log_isolated(run, run_id, entries[middle:], rejected)

    # -- traces ----------------------------------------------------------------------

    def _log_traces(self, step: _Step, ops: list[Operation]) -> None:
        """Hand the step's traces (with their run ids) to the trace sender.

        The sender reports the traces that did not land (``failed`` items) and whether
        that was transient; only those are retried or failed, the rest landed.
        """
        self._check_not_cancelled()
        sender = self._traces()
        if sender is None:
            self._count("traces_skipped", len(step.indices))
            return
        items: list[tuple[LogTrace, str]] = []
        missing: set[int] = set()
        where: dict[int, int] = {}
        for index in step.indices:
            op = ops[index]
            assert isinstance(op, LogTrace)
            run_id = self._run_ids.get(op.run)
            if run_id is None:
                missing.add(index)
            else:
                if op.model is not None:  # links the trace to the model's LoggedModel
                    model_id = self._models.resolve(op.model, run_id)
                    op = replace(op, metadata={**op.metadata, MODEL_ID_METADATA: model_id})
                items.append((op, run_id))
                where[id(op)] = index
        unknown = Refused("traces name a run that was never created", "unknown_run")
        if items:
            self._count("traces", len(items))
            try:
                sender.send(items)
            except Exception as error:
                failed_items = getattr(error, "failed", None)
                if failed_items is None:
                    raise  # nothing known to have landed: the whole step
                bad = {where[id(op)] for op, _ in failed_items if id(op) in where}
                if getattr(error, "transient", False) is True:
                    raise _StepFailed(error, failed=missing, pending=bad) from error
                raise _StepFailed(error, failed=missing | bad) from error
        if missing:
            raise _StepFailed(unknown, failed=missing)

    def _traces(self) -> Any:
        if self._trace_sender is None and not self._traces_unavailable:
            try:
                from inspect_mlflow._writer.traces import TraceSender
            except ModuleNotFoundError as error:
                if error.name != _TRACES_MODULE:
                    raise
                self._traces_unavailable = True
                logger.warning("inspect-mlflow: trace support is not installed; traces skipped")
                return None
            assert self._experiment_id is not None
            self._trace_sender = TraceSender(
                self.tracking_uri, self._experiment_id, **self.trace_options
            )
        return self._trace_sender


def _entry(key: str, entity: Param | RunTag) -> _Entry:
    return _Entry(
        key, entity, len(json.dumps(key)) + len(json.dumps(entity.value)) + _ENTRY_OVERHEAD
    )


def _chunks(entries: list[_Entry], limit: int) -> Iterator[list[_Entry]]:
    chunk: list[_Entry] = []
    size = 0
    for entry in entries:
        if chunk and (len(chunk) >= limit or size + entry.size > MAX_REQUEST_CHARS):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry.size
    if chunk:
        yield chunk


def _pack(params: list[_Entry], tags: list[_Entry], metrics: list[_Entry]) -> list[list[_Entry]]:
    """Split entries into ``log_batch`` requests within MLflow's per-request limits.

    Params and tags are paired chunk by chunk (as MLflow's own client does), and metrics
    fill the room left in those requests before new ones are started.
    """
    requests_: list[list[_Entry]] = []
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


def open_local_store(tracking_uri: str) -> None:
    """Build MLflow's store for a local database now, against the current directory.

    MLflow resolves a local store's default artifact root (``./mlruns``) against the
    working directory when it first builds the store for a URI, and reuses that store.
    Inspect changes directory while it sets up tasks loaded from files; a store first
    built then (by the writer thread) would put the run's artifacts in the task's
    directory. Call this where the user's directory is current, off the event loop
    (it may create the database). Remote stores are left alone; a failure is left for
    the writer to meet and report.
    """
    if not tracking_uri.startswith("sqlite:"):
        return
    try:
        prepare_local_store(tracking_uri)
    except Exception as error:
        logger.debug("inspect-mlflow: could not open %s yet: %r", tracking_uri, error)
