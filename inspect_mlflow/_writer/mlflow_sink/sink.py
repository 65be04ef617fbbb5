"""The sink that delivers a batch of write operations to MLflow, step by step.

A batch is planned first (``planning.plan``), then each step runs in order: runs open
(``runs``), tags, params and metrics of a run go as ``log_batch`` requests (bad values
found by bisection, the rest lands), rows are held until their run closes (``tables``),
models and datasets are linked, and traces go to the trace lane (``trace_lane``). A step
that fails transiently stops the batch: it and everything after it is pending; a step
MLflow refuses fails alone.

Threading: one instance is driven by one thread (the writer's); it keeps per-run state
(logical key -> MLflow run id, accumulated rows) without locks. The trace lane only reads
run ids of runs that already exist; call counts are kept under a lock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelInput,
    Metric,
    Param,
    RunTag,
)

from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogArtifact,
    LogInputs,
    LogMetrics,
    LogParams,
    OpenRun,
    Operation,
    SetTags,
)
from inspect_mlflow._writer.logged_models import LoggedModels
from inspect_mlflow._writer.mlflow_sink import reads
from inspect_mlflow._writer.mlflow_sink.calls import MlflowCalls
from inspect_mlflow._writer.mlflow_sink.errors import (
    StepFailed,
    classify,
    is_run_level,
    reason,
    retry_later,
)
from inspect_mlflow._writer.mlflow_sink.planning import (
    Entry,
    Outcome,
    Step,
    early_traces,
    entry,
    metric_entry,
    pack,
    plan,
)
from inspect_mlflow._writer.mlflow_sink.runs import RUN_NAME_TAG, RunRegistry
from inspect_mlflow._writer.mlflow_sink.tables import Tables, documents
from inspect_mlflow._writer.mlflow_sink.trace_lane import TraceLane, join
from inspect_mlflow._writer.sink import Rejection, SinkError

__all__ = ["DATA_CONTEXT_TAG", "MlflowSink"]

logger = logging.getLogger(__name__)

DATA_CONTEXT_TAG = "mlflow.data.context"
"""Input tag saying what a dataset was used for (``eval``)."""


class MlflowSink:
    """Delivers operations to one MLflow experiment through an explicit client.

    Network work happens only in :meth:`send` (on the writer thread) and in the
    read-only queries; building the sink does none, so it is safe to create on the
    event loop.
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
        self._calls = MlflowCalls(tracking_uri)
        self.calls: Counter[str] = self._calls.counts
        """MLflow client calls made, by method name (for tests and diagnostics)."""
        # Every collaborator calls MLflow through self._call, the one place to watch.
        self._runs = RunRegistry(
            self._call,
            self._calls,
            experiment_name,
            resume=resume,
            artifact_location=artifact_location,
        )
        self._tables = Tables(self._call, self._calls, self._runs)
        self._models = LoggedModels(self._call, lambda: self._runs.experiment_id)
        """Model identity -> LoggedModel id (one lookup or creation per model)."""
        self._lane = TraceLane(self._calls, self._runs, self._models, self.trace_options)
        self.spooled_runs: set[str] = set()
        """Runs whose close went to the spool with the rows held for them (set by the
        spool's owner): :meth:`close` does not warn about their rows."""

    # -- public ----------------------------------------------------------------------

    @property
    def experiment_id(self) -> str | None:
        """The experiment id once resolved by the first send."""
        return self._runs.experiment_id

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (no MLflow call goes out any more)."""
        return self._calls.cancelled

    def run_id(self, run: str) -> str | None:
        """The MLflow run id of a logical run key, if this sink created or found it."""
        return self._runs.run_ids.get(run)

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
        experiment_id = self._existing_experiment()
        return {} if experiment_id is None else reads.find_runs(self._call, experiment_id, runs)

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, int, float]]:
        """Stored points of one metric of a run, as ``(step, timestamp ms, value)``.

        For ``inspect-mlflow replay``, which skips points already stored; like
        :meth:`find_runs` it only reads, on a separate sink instance.
        """
        return reads.metric_points(self._call, run_id, key)

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
        experiment_id = self._existing_experiment()
        if experiment_id is None:
            return None
        return reads.read_run_state(self._call, experiment_id, run)

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
            self._runs.ensure_experiment()
        except Exception as error:
            transient, kind = classify(error)
            raise SinkError(
                f"cannot resolve MLflow experiment {self.experiment_name!r}: {reason(error)}",
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
        early = early_traces(steps) if self._calls.remote else set()
        background: list[Future[Outcome]] = [
            self._lane.executor().submit(self._settle, steps[i], ops, []) for i in sorted(early)
        ]
        for position, step in enumerate(steps):
            if position in early:
                continue
            if step.kind == "trace" and self._calls.remote:
                background.append(self._lane.executor().submit(self._settle, step, ops, []))
                continue
            refused, retry, error = self._settle(step, ops, rejected)
            failed |= refused
            if error is None:
                continue
            if not retry:
                first_error = first_error or error
                continue
            later = {
                i
                for number, step_ in enumerate(steps[position + 1 :], position + 1)
                if number not in early
                for i in step_.indices
            }
            failed_late, pending_late, _ = join(background)
            failed |= failed_late
            raise retry_later(error, ops, retry | later | pending_late, failed, rejected)
        failed_late, pending_late, error = join(background)
        failed |= failed_late
        if pending_late:
            assert error is not None
            raise retry_later(error, ops, pending_late, failed, rejected)
        first_error = first_error or error
        if failed or rejected:
            kind = classify(first_error)[1] if first_error else "rejected"
            message = reason(first_error) if first_error else f"{len(rejected)} value(s) refused"
            raise SinkError(
                f"MLflow refused part of a batch ({kind}): {message}",
                transient=False,
                kind=kind,
                failed=[ops[i] for i in sorted(failed)],
                rejected=rejected,
            ) from first_error

    def cancel(self) -> None:
        """Make no further MLflow call: each later one raises (any thread may call this).

        For a writer that abandons this sink while one of its calls blocks (a server that
        died mid-request): when that call returns, nothing more is sent from here.
        """
        self._calls.cancel()

    def close(self) -> None:
        """Forget per-run state; rows of runs never closed are dropped with a warning."""
        unclosed = [
            run
            for run, tables in self._tables.rows.items()
            if tables and run not in self.spooled_runs
        ]
        if unclosed:
            logger.warning(
                "inspect-mlflow: runs closed the sink with unwritten tables: %s", unclosed
            )
        self._lane.close()
        self._tables.rows.clear()

    # -- steps -----------------------------------------------------------------------

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """One counted MLflow client call (raises once the sink is cancelled)."""
        return self._calls(name, *args, **kwargs)

    def _existing_experiment(self) -> str | None:
        """The experiment id for the read-only queries: found, never created."""
        if self._runs.experiment_id is None:
            self._runs.experiment_id = reads.active_experiment_id(self._call, self.experiment_name)
        return self._runs.experiment_id

    def _settle(self, step: Step, ops: list[Operation], rejected: list[Rejection]) -> Outcome:
        """Run one step: (indices refused for good, indices to retry, the error or None)."""
        try:
            self._run_step(step, ops, rejected)
        except StepFailed as stop:
            refused = set(step.indices) if stop.failed is None else stop.failed
            return refused, stop.pending, stop.error
        except Exception as caught:
            if classify(caught)[0]:
                return set(), set(step.indices), caught
            return set(step.indices), set(), caught
        return set(), set(), None

    def _run_step(self, step: Step, ops: list[Operation], rejected: list[Rejection]) -> None:
        """Run one step; raises :class:`StepFailed` or the MLflow error if it did not land."""
        if step.kind == "data":
            assert step.run is not None
            run_id = self._runs.require(step.run)
            group = [ops[i] for i in step.indices]
            self._log_data(step.run, run_id, group, rejected)  # type: ignore[arg-type]
            return
        if step.kind == "trace":
            self._lane.log(step, ops)
            return
        op = ops[step.indices[-1]]  # a CloseRun step starts with the documents it carries
        if isinstance(op, OpenRun):
            self._runs.open(op, rejected)
        elif isinstance(op, AppendRows):
            self._tables.append(op)
        elif isinstance(op, LogArtifact):
            run_id = self._runs.require(op.run)
            self._tables.upload(run_id, documents([op], rejected))
        elif isinstance(op, LogInputs):
            self._log_inputs(op)
        elif isinstance(op, CloseRun):
            held = [ops[i] for i in step.indices[:-1]]
            self._close_run(op, documents(held, rejected), rejected)

    def _log_inputs(self, op: LogInputs) -> None:
        """The run's models (found or created) and datasets, in one request."""
        run_id = self._runs.require(op.run)
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

    def _close_run(
        self, op: CloseRun, docs: list[tuple[str, str]], rejected: list[Rejection]
    ) -> None:
        """Write the run's documents and tables, then end it."""
        run_id = self._runs.require(op.run)
        self._tables.write(op.run, run_id, docs, rejected)
        self._terminate(run_id, op.status, op.end_time_ms or None)
        self._tables.forget(op.run)
        self._runs.closed.add(op.run)

    def _terminate(self, run_id: str, status: str, end_time: int | None) -> None:
        self._runs.terminate(run_id, status, end_time)

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
        metrics: list[Entry] = []
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
                    metrics.append(metric_entry(m.key, metric))
        param_entries = [entry(k, Param(k, v)) for k, v in params.items()]
        tag_entries = [entry(k, RunTag(k, v)) for k, v in tags.items()]
        for request in pack(param_entries, tag_entries, metrics):
            self._log_isolated(run, run_id, request, rejected)
        if RUN_NAME_TAG in tags:
            self._runs.renamed(run_id, tags[RUN_NAME_TAG])

    def _log_isolated(
        self, run: str, run_id: str, entries: list[Entry], rejected: list[Rejection]
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
            if is_run_level(error):
                raise StepFailed(error) from error
            if len(entries) == 1:
                rejected.append(Rejection(run, entries[0].key, reason(error)))
                return
            middle = len(entries) // 2
            self._log_isolated(run, run_id, entries[:middle], rejected)
            self._log_isolated(run, run_id, entries[middle:], rejected)
