"""The trace lane: a batch's ``LogTrace`` steps go to the trace sender, beside its runs.

Traces only refer to runs that exist (a trace step comes after the ``OpenRun`` of its
runs) and nothing waits for them but the end of the batch, so over HTTP they are sent on
a thread of their own while the batch's other steps go on: at the end of a run, its
tables, artifacts and closing no longer queue behind the last interval's traces. The
sender reports the traces that did not land; only those are retried or failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from inspect_mlflow._operations import LogTrace, Operation
from inspect_mlflow._writer.logged_models import MODEL_ID_METADATA, LoggedModels
from inspect_mlflow._writer.mlflow_sink.calls import MlflowCalls
from inspect_mlflow._writer.mlflow_sink.errors import Refused, StepFailed
from inspect_mlflow._writer.mlflow_sink.planning import Outcome, Step
from inspect_mlflow._writer.mlflow_sink.runs import RunRegistry

__all__ = ["TRACE_SENDER_MODULE", "TraceLane", "join"]

logger = logging.getLogger(__name__)

TRACE_SENDER_MODULE = "inspect_mlflow._writer.mlflow_sink.trace_send"
"""Imported on the first trace: without it (trace support not installed) traces are
skipped with one warning."""


class TraceLane:
    """Hands trace steps to the trace sender (built on first use) with their run ids."""

    def __init__(
        self,
        calls: MlflowCalls,
        runs: RunRegistry,
        models: LoggedModels,
        trace_options: Mapping[str, Any],
    ) -> None:
        self._calls = calls
        self._runs = runs
        self._models = models
        self._options = dict(trace_options)
        self._sender: Any = None
        self._unavailable = False
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0

    def executor(self) -> ThreadPoolExecutor:
        """One thread that sends a batch's traces while its other steps go on.

        One thread, so trace steps stay in order among themselves; a forked child gets
        one of its own.
        """
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="inspect-mlflow-trace-lane")
            self._executor_pid = os.getpid()
        return self._executor

    def log(self, step: Step, ops: list[Operation]) -> None:
        """Hand the step's traces (with their run ids) to the trace sender.

        The sender reports the traces that did not land (``failed`` items) and whether
        that was transient; only those are retried or failed, the rest landed.
        """
        self._calls.check_not_cancelled()
        sender = self._trace_sender()
        if sender is None:
            self._calls.count("traces_skipped", len(step.indices))
            return
        items: list[tuple[LogTrace, str]] = []
        missing: set[int] = set()
        where: dict[int, int] = {}
        for index in step.indices:
            op = ops[index]
            assert isinstance(op, LogTrace)
            run_id = self._runs.run_ids.get(op.run)
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
            self._calls.count("traces", len(items))
            try:
                sender.send(items)
            except Exception as error:
                failed_items = getattr(error, "failed", None)
                if failed_items is None:
                    raise  # nothing known to have landed: the whole step
                bad = {where[id(op)] for op, _ in failed_items if id(op) in where}
                if getattr(error, "transient", False) is True:
                    raise StepFailed(error, failed=missing, pending=bad) from error
                raise StepFailed(error, failed=missing | bad) from error
        if missing:
            raise StepFailed(unknown, failed=missing)

    def _trace_sender(self) -> Any:
        if self._sender is None and not self._unavailable:
            try:
                from inspect_mlflow._writer.mlflow_sink.trace_send import TraceSender
            except ModuleNotFoundError as error:
                if error.name != TRACE_SENDER_MODULE:
                    raise
                self._unavailable = True
                logger.warning("inspect-mlflow: trace support is not installed; traces skipped")
                return None
            assert self._runs.experiment_id is not None
            self._sender = TraceSender(
                self._calls.tracking_uri, self._runs.experiment_id, **self._options
            )
        return self._sender

    def close(self) -> None:
        """Close the sender and stop the lane's thread (a later send starts new ones)."""
        close = getattr(self._sender, "close", None)
        if callable(close):
            close()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


def join(background: list[Future[Outcome]]) -> Outcome:
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
