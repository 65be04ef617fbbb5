"""One logging session: settings, compiled mapping, engine and writer for a tracking target.

The hook owns at most one session at a time. A session lives from the first lifecycle
point after the settings were parsed until the run that used it ends with no run left
open; the next run parses the environment again and starts a fresh one.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from inspect_mlflow import _autolog
from inspect_mlflow._config import Settings
from inspect_mlflow._mapping.model import CompiledMapping
from inspect_mlflow._runtime.engine import Engine
from inspect_mlflow._runtime.operations import LogTrace, Operation
from inspect_mlflow._runtime.views import context
from inspect_mlflow._writer.writer import BackgroundWriter

if TYPE_CHECKING:
    from inspect_mlflow._writer.mlflow_sink import MlflowSink

logger = logging.getLogger(__name__)


class Session:
    """Turns lifecycle points into operations and hands them to the background writer.

    ``handle`` runs on Inspect's event loop (and, for eval-set points, on short-lived
    loops of other threads): it evaluates the mapping under a lock and only enqueues, so
    it never waits on the network.
    """

    def __init__(self, settings: Settings, mapping: CompiledMapping) -> None:
        from inspect_mlflow._writer.mlflow_sink import MlflowSink

        self.settings = settings
        self.mapping = mapping
        self.points = mapping.points()
        self.engine = Engine(mapping, log_artifacts=settings.log_artifacts)
        self._lock = threading.Lock()
        assert settings.tracking_uri is not None
        self.sink = MlflowSink(
            settings.tracking_uri,
            settings.experiment_name,
            trace_options={
                "max_spans_per_trace": settings.trace_max_spans,
                "max_attribute_chars": settings.trace_max_text,
            },
        )
        self.writer = BackgroundWriter(self.sink)
        self.resume_points = self.engine.resume_points
        """Points that may continue a run closed in an earlier process (see :meth:`prepare`)."""
        self._reader: MlflowSink | None = None
        self._autologged: list[str] | None = None
        self.errors = 0

    def start_autolog(self) -> None:
        """Switch provider autolog on once per session, when the settings ask for it."""
        if self._autologged is None:
            enabled = self.settings.autolog_enabled
            self._autologged = _autolog.enable(self.settings.autolog_providers) if enabled else []

    def stop_autolog(self) -> None:
        """Switch off what :meth:`start_autolog` switched on."""
        if self._autologged:
            _autolog.disable(self._autologged)
        self._autologged = None

    def prepare(self, point: str, data: Any, **ids: Any) -> None:
        """Read what runs this point continues were left with (before :meth:`handle`).

        A resumable run that ended in an earlier process keeps counting from where it
        stopped: its saved counters and series are read from MLflow (a few requests per
        such run, only for points in :attr:`resume_points`) and handed to the engine.
        Blocks on the network: the hook calls it in a worker thread, with a deadline.
        """
        if point not in self.resume_points:
            return
        ctx = context(point, data, **ids)
        with self._lock:
            keys = self.engine.pending_resumes(point, ctx)
        if not keys:
            return
        if self._reader is None:
            from inspect_mlflow._writer.mlflow_sink import MlflowSink

            assert self.settings.tracking_uri is not None
            self._reader = MlflowSink(self.settings.tracking_uri, self.settings.experiment_name)
        for key in keys:
            state = self._reader.read_run_state(key)
            with self._lock:
                self.engine.restore(key, state)

    def handle(self, point: str, data: Any, **ids: Any) -> None:
        """Evaluate the mapping for one lifecycle point and enqueue the writes.

        ``ids`` are identities the hook adds to the context (for example ``task_id``).
        """
        if point not in self.points:
            return
        ctx = context(point, data, **ids)
        with self._lock:
            ops: list[Operation] = self.engine.handle(point, ctx)
        if not self.settings.traces:
            ops = [op for op in ops if not isinstance(op, LogTrace)]
        if ops:
            self.writer.emit(ops)

    def has_open_runs(self) -> bool:
        """True while any run of this session is still open."""
        with self._lock:
            return bool(self.engine.open_runs())

    def finish(self, timeout: float) -> bool:
        """Deliver everything (bounded by ``timeout`` seconds) and report what went wrong.

        Runs off the event loop (the hook calls it in a worker thread).
        """
        delivered = self.writer.flush(timeout)
        self.report(delivered)
        return delivered

    def close(self, timeout: float) -> None:
        """Stop the writer thread after a last flush."""
        self.writer.shutdown(timeout)

    def report(self, delivered: bool) -> None:
        """Log one summary of values that could not be logged and writes not delivered."""
        lines = self.engine.problem_summary()
        lines.extend(self.writer.problem_summary())
        if not delivered:
            lines.append(
                f"some writes were not delivered to {self.settings.tracking_uri} within "
                f"{self.settings.flush_timeout:g}s (INSPECT_MLFLOW_FLUSH_TIMEOUT)"
            )
        if lines:
            logger.warning("inspect-mlflow: %s", "; ".join(lines))
