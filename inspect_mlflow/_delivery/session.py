"""One logging session: settings, compiled mapping, engine and writer for a tracking target.

The hook owns at most one session at a time. A session lives from the first lifecycle
point after the settings were parsed until the run that used it ends with no run left
open; the next run parses the environment again and starts a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import inspect_mlflow._delivery.autolog as _autolog
from inspect_mlflow._config import Settings
from inspect_mlflow._delivery.pipeline import Pipeline
from inspect_mlflow._delivery.secrets import ScrubFilter
from inspect_mlflow._delivery.worker import SerialWorker
from inspect_mlflow._engine.contexts import context
from inspect_mlflow._mapping.model import CompiledMapping
from inspect_mlflow._notice import notice
from inspect_mlflow._operations import OpenRun, Operation
from inspect_mlflow._writer.writer import BackgroundWriter

if TYPE_CHECKING:
    from inspect_mlflow._writer.mlflow_sink import MlflowSink

logger = logging.getLogger(__name__)

RETRY_WHILE_RUNNING = 7 * 24 * 3600.0
"""Seconds a batch may keep failing transiently while the eval runs: in effect forever.
Memory stays bounded by the queue size (beyond it writes go to the spool), and at run
end the flush timeout decides, not this."""

SCHEDULE_DELAY = 1.0
"""Seconds between two deliveries of the writer while the eval runs. Each delivery costs
a few requests per run (one ``log_batch`` of everything the interval gathered, one span
upload for its traces), so requests grow with the eval's duration, not with its samples;
the run end does not wait for it (a flush wakes the writer at once)."""


def say_resume_failed(point: str, why: str) -> None:
    """The state of a run to continue could not be read: it continues, counting from zero."""
    logger.warning(
        "inspect-mlflow: could not read the state of a run to continue at %s "
        "(its counters restart at zero): %s",
        point,
        why,
    )


class AutologOwner:
    """Provider autolog for one session: always in the eval's process (it patches SDKs there)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._autologged: list[str] | None = None
        self._routing: _autolog.Routing | None = None

    def start_autolog(self) -> None:
        """Switch provider autolog on once per session, when the settings ask for it.

        Its traces must land in the hook's experiment, not in MLflow's ``Default``: when
        they cannot be routed there (the store is unreachable), autolog is switched off
        again for this run.
        """
        if self._autologged is not None:
            return
        enabled = self.settings.autolog_enabled
        self._autologged = _autolog.enable(self.settings.autolog_providers) if enabled else []
        if not self._autologged:
            return
        assert self.settings.tracking_uri is not None
        try:
            self._routing = _autolog.Routing(
                self.settings.tracking_uri, self.settings.experiment_name
            )
        except Exception as err:
            logger.warning(
                "inspect-mlflow: provider autolog is off for this run (its traces could "
                "not be sent to experiment %r): %r",
                self.settings.experiment_name,
                err,
            )
            _autolog.disable(self._autologged)
            self._autologged = []

    def stop_autolog(self) -> None:
        """Switch off what :meth:`start_autolog` switched on; link and restore its routing."""
        if self._autologged:
            _autolog.disable(self._autologged)
        self._autologged = None
        routing, self._routing = self._routing, None
        if routing is not None:
            try:
                routing.close()
            except Exception as err:
                logger.warning("inspect-mlflow: ending provider autolog failed: %r", err)


class Session(AutologOwner):
    """Turns lifecycle points into operations and hands them to the background writer.

    ``handle`` runs on Inspect's event loop (and, for eval-set points, on short-lived
    loops of other threads): it only queues the point. The session's worker thread
    evaluates the mapping in hook order (see :mod:`inspect_mlflow._delivery.worker`) and hands the
    writes to the background writer, so a callback waits neither on the network nor on
    the evaluation.
    """

    def __init__(
        self, settings: Settings, mapping: CompiledMapping, *, resume_runs: bool = False
    ) -> None:
        """Start the session.

        ``resume_runs``: find each run by its key before creating it (taking over from a
        delivery process that died: its runs exist already).
        """
        super().__init__(settings)
        self.mapping = mapping
        self.points = mapping.points()
        self._resume_runs = resume_runs
        self._lock = threading.Lock()
        # The one chain of every path (see _delivery.pipeline): engine -> scrub -> track
        # undelivered -> writer; its end is connected once the writer exists (_start_spool).
        self.pipeline = Pipeline(
            mapping,
            None,
            settings.secrets,
            lock=self._lock,
            log_artifacts=settings.log_artifacts,
            traces=settings.traces,
        )
        self.engine = self.pipeline.engine
        self._documents = 0
        self._progress: deque[tuple[int, int]] = deque()
        """(documents evaluated, writer operations accepted after them), oldest first."""
        self._confirmed = 0
        self.document_ops = 0
        """Operations emitted for documents evaluated in full (see handle_document)."""
        assert settings.tracking_uri is not None
        self.resume_points = self.engine.resume_points
        """Points that may continue a run closed in an earlier process (see :meth:`prepare`)."""
        self._reader: MlflowSink | None = None
        self.errors = 0
        self._worker = SerialWorker(self._run_job, name="inspect-mlflow-engine")
        self._connect_error: Exception | None = None
        self.writer: BackgroundWriter | None = None
        """Built on the worker thread when the session connects (MLflow's import is slow)."""
        # The first job, before any point: importing MLflow takes seconds, which the
        # event loop (this runs in the first hook callback) must not wait for.
        self._worker.call(self._connect)

    def _connect(self) -> None:
        """Build the sink, the spool and the writer (worker thread; imports MLflow)."""
        try:
            from inspect_mlflow._writer.mlflow_sink import MlflowSink

            settings = self.settings
            assert settings.tracking_uri is not None
            trace_options = {
                "max_spans_per_trace": settings.trace_max_spans,
                "max_attribute_chars": settings.trace_max_text,
            }
            self.sink = MlflowSink(
                settings.tracking_uri,
                settings.experiment_name,
                trace_options=trace_options,
                resume=self._resume_runs,
            )
            self._start_spool(settings, trace_options)
        except Exception as err:
            self._connect_error = err
            logger.warning("inspect-mlflow: cannot log this run: %r", err)

    def _start_spool(self, settings: Settings, trace_options: dict[str, Any]) -> None:
        """Wire the writer to the spool, the reachability check and the secret scrubber."""
        from inspect_mlflow._writer.reachability import ProbingSink, Reachability
        from inspect_mlflow._writer.spool import SpoolWriter, default_spool_dir, public_uri
        from inspect_mlflow._writer.undelivered import Undelivered

        assert settings.tracking_uri is not None
        self.public_uri = public_uri(settings.tracking_uri)
        self.spool = SpoolWriter(
            settings.spool_dir or default_spool_dir(),
            tracking_uri=settings.tracking_uri,
            experiment_name=settings.experiment_name,
            trace_options=trace_options,
        )
        self.undelivered = Undelivered(
            self.spool, on_gone=self._divert, closed_runs=self.sink.spooled_runs
        )
        self.writer = BackgroundWriter(
            ProbingSink(self.sink, Reachability(settings.tracking_uri)),
            max_queue_size=settings.max_queue_size,
            max_batch_size=min(1000, settings.max_queue_size),
            retry_timeout=RETRY_WHILE_RUNNING,
            schedule_delay=SCHEDULE_DELAY,
            on_failure=self.undelivered.on_failure,
            on_sent=self.undelivered.on_sent,
        )
        self.pipeline.connect(self.writer.emit, track=self.undelivered.track)
        self.scrubber = self.pipeline.scrubber
        self._scrub_filter = ScrubFilter(self.scrubber)
        self._scrubbed_loggers = self._scrub_filter.attach() if self.scrubber else []
        self._gave_up = False

    def _divert(self) -> None:
        """The server is gone or too slow: everything not yet delivered goes to the spool."""
        self.writer.divert()

    def prepare(self, point: str, data: Any, **ids: Any) -> None:
        """Read what runs this point continues were left with (before :meth:`handle`).

        A resumable run that ended in an earlier process keeps counting from where it
        stopped: its saved counters and series are read from MLflow (a few requests per
        such run, only for points in :attr:`resume_points`) and handed to the engine.
        Blocks on the network: the hook calls it in a worker thread, with a deadline.
        """
        if point not in self.resume_points:
            return
        self.prepare_document(point, context(point, data, **ids))

    def prepare_document(self, point: str, ctx: Mapping[str, Any]) -> None:
        """:meth:`prepare` for a context document built elsewhere (the eval's process)."""
        if point not in self.resume_points:
            return
        with self._lock:
            keys = self.engine.pending_resumes(point, ctx)
        if keys:
            # The worker may not have evaluated the earlier points yet (and so not know
            # a run this point continues): ask again once it has. No keys now means none
            # later either (the engine only learns runs), so a plain eval never waits.
            self._worker.drain(self.settings.flush_timeout)
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

    def handle(self, point: str, data: Any, *, stamp: float | None = None, **ids: Any) -> None:
        """Queue one lifecycle point for evaluation; returns at once.

        ``ids`` are identities the hook adds to the context (for example ``task_id``).
        The payload is read later, on the worker thread: Inspect hands the hook finished
        objects (a sample at ``sample_end``, a log header at ``task_end``). ``stamp``: the
        time the point happened, when the hook hands it over later (seconds since the
        epoch); None: now.
        """
        if point in self.points:
            self._worker.submit(point, data, ids, stamp)

    def hurry(self) -> None:
        """Deliver what the points queued so far write now, not at the next interval.

        In order with the points: the writer is woken once the engine has evaluated
        every point queued before this call.
        """
        self._worker.call(self._wake_writer)

    def _wake_writer(self) -> None:
        if self.writer is not None:
            self.writer.hurry()

    def handle_document(
        self,
        point: str,
        ctx: Mapping[str, Any],
        stamp: float | None = None,
        keep: tuple[type[Operation], ...] | None = None,
    ) -> None:
        """:meth:`handle` for a context document built elsewhere (the eval's process).

        Args:
            point: The lifecycle point.
            ctx: Its context document.
            stamp: The point's time (seconds since the epoch) for its timestamps, so that
                evaluating it again elsewhere gives the same metric points.
            keep: Emit only operations of these types (rebuilding the state of a run
                whose other writes already landed); None: all.
        """
        if point in self.points:
            self._worker.submit(point, ctx, None, stamp, keep)

    def points_confirmed(self) -> int:
        """How many documents, oldest first, have all their writes delivered or spooled."""
        if self.writer is None:
            return 0
        settled = self.writer.settled_count
        with self._lock:
            while self._progress and self._progress[0][1] <= settled:
                self._confirmed = self._progress.popleft()[0]
            return self._confirmed

    def run_ids(self, keys: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
        """(experiment id, run id) of runs that exist in MLflow, by logical key.

        For the link in the eval's log (see ``eval_metadata``): a run is in once the
        writer has created or found it (never one that went to the spool). ``keys``:
        the runs asked about (the event loop asks so: no wait on the engine's lock);
        None: every open run.
        """
        sink = getattr(self, "sink", None)
        experiment_id = sink.experiment_id if sink is not None else None
        if sink is None or experiment_id is None:
            return {}
        if keys is None:
            with self._lock:
                keys = self.engine.open_runs()
        return {key: (experiment_id, run) for key in keys if (run := sink.run_id(key))}

    def _run_job(
        self,
        point: str,
        data: Any,
        ids: dict[str, Any] | None,
        stamp: float | None = None,
        keep: tuple[type[Operation], ...] | None = None,
    ) -> None:
        if self._connect_error is not None:
            return  # said once by _connect; nothing could be delivered
        try:
            if ids is None:
                self._apply(point, data, stamp, keep)
            else:
                self._evaluate(point, data, stamp, **ids)
        except Exception as err:  # never break the eval; count and tell once
            self.errors += 1
            if self.errors == 1:
                logger.warning("inspect-mlflow: error at %s: %r", point, err)
        finally:
            if ids is None and self.writer is not None:
                emitted = self.writer.emitted_count
                with self._lock:
                    self._documents += 1
                    self._progress.append((self._documents, emitted))

    def _evaluate(self, point: str, data: Any, stamp: float | None = None, **ids: Any) -> None:
        """Evaluate the mapping for one lifecycle point and enqueue the writes (worker)."""
        if point in self.points:
            self._apply(point, context(point, data, **ids), stamp, counted=False)

    def _apply(
        self,
        point: str,
        ctx: Mapping[str, Any],
        stamp: float | None = None,
        keep: tuple[type[Operation], ...] | None = None,
        counted: bool = True,
    ) -> None:
        ops = self.pipeline.feed(point, ctx, at=stamp, keep=keep)
        if keep is None and stamp is not None and counted:
            self.document_ops += len(ops)
        self._opened(ops)

    def _opened(self, ops: list[Operation]) -> None:
        """Wake the writer when ``ops`` (just emitted) open a run."""
        if any(isinstance(op, OpenRun) for op in ops):
            # Now, not at the next delivery: the eval's log links to the run by its id,
            # known once the run exists (see run_ids). Wakes the writer, waits for nothing.
            self.writer.flush(0)

    def close_open_runs(self, status: str) -> None:
        """Queue the closing of every run still open, after the points queued before it.

        For an eval whose process ended without its run end (killed, crashed): its runs
        end with ``status`` instead of staying RUNNING forever.
        """
        self._worker.call(self._close_open_runs, status)

    def _close_open_runs(self, status: str) -> None:
        if self._connect_error is not None:
            return
        ops = self.pipeline.close_all(status)
        if ops:
            logger.warning(
                "inspect-mlflow: the eval's process ended before its runs did; "
                "%d run(s) closed as %s",
                len(ops),
                status,
            )

    def has_open_runs(self) -> bool:
        """True while any run of this session is still open."""
        with self._lock:
            return bool(self.engine.open_runs())

    def finish(self, timeout: float) -> bool:
        """Deliver everything within ``timeout`` seconds, spool the rest, report once.

        The wait is bounded whatever the server does: when the flush does not complete,
        the writer is diverted (queued writes go to the spool) and shut down with a short
        grace; a send that still blocks then is abandoned and its batch spooled too.
        Later writes of this session (runs still open) go to the spool as well, so their
        order is kept. Runs off the event loop (the hook calls it in a worker thread).
        """
        began = time.monotonic()
        self._worker.drain(timeout)  # evaluate the points still queued
        timeout = max(0.0, timeout - (time.monotonic() - began))
        if self._connect_error is not None or self.writer is None:
            return False
        grace = min(1.0, timeout / 4)
        delivered = self._gave_up is False and self.writer.flush(timeout - grace)
        if not delivered and not self._gave_up:
            self._gave_up = True
            self.writer.divert()
            self.writer.shutdown(grace)
        self.report(delivered)
        return delivered

    def close(self, timeout: float) -> None:
        """Stop the writer thread after a last flush; release the spool when it has ended.

        A writer thread still blocked in an abandoned call keeps the spool file locked
        (so a replay cannot race the call) until it ends; a daemon thread waits for that.
        """
        self._worker.stop(timeout)
        if self._connect_error is not None or self.writer is None:
            return
        self.writer.shutdown(0.0 if self._gave_up else timeout)
        if self.writer.wait_closed(0):
            self._release()
        else:
            threading.Thread(
                target=self._release_when_closed, name="inspect-mlflow-spool-release", daemon=True
            ).start()

    def _release_when_closed(self) -> None:
        self.writer.wait_closed(None)
        self._release()

    def _release(self) -> None:
        self.spool.close()
        self._scrub_filter.detach(self._scrubbed_loggers)

    def report(self, delivered: bool) -> None:
        """Log one summary of values that could not be logged and writes not delivered."""
        lines = self.engine.problem_summary()
        lines.extend(self.writer.problem_summary(undelivered=False))
        if lines:
            logger.warning("inspect-mlflow: %s", "; ".join(lines))
        spooled = self.undelivered.message(
            self.public_uri, default_dir=self.settings.spool_dir is None
        )
        if spooled:
            why = (
                f" within {self.settings.flush_timeout:g}s (INSPECT_MLFLOW_FLUSH_TIMEOUT)"
                if not delivered
                else ""
            )
            # A notice: it must reach the terminal with display="none" too.
            notice("inspect-mlflow: MLflow did not take every write%s: %s", why, spooled)
