"""The background writer: one thread that owns the sink and all of its I/O.

Callers (the hook, on Inspect's event loop) only :meth:`BackgroundWriter.emit`
operations: that appends to a deque under a short lock and never waits on the network.
One named daemon thread wakes every ``schedule_delay`` seconds, or as soon as a full
batch waits, takes everything queued and hands it to the sink in order, in batches of
at most ``max_batch_size`` operations.

**The delivery contract** (``docs/reliability.md``; tested against a real server that is
SIGKILLed and restarted at every stage of an eval):

- *While the eval runs*, an outage of any length never sends later writes to the spool.
  They wait in memory (at most ``max_queue_size``; only the excess is handed on) while
  the batch at the head is retried. The session passes a ``retry_timeout`` longer than
  any eval, so no per-batch deadline expires mid-run.
- *A down server is probed cheaply* and delivery resumes within about two seconds of
  it answering again: a failure that says how soon a retry is worth it
  (``SinkError.retry_after``: the sink's health check found nothing listening) caps the
  backoff at that; other transient failures (HTTP 5xx, 429) back off exponentially, with
  jitter, up to ``max_backoff``. MLflow's own retries inside one call, which sleep for
  minutes whatever the server does, are switched off where the process is ours (see
  ``reachability.py``).
- *At the run end* the caller flushes with its flush timeout: the writer keeps
  retrying while the server answers, and only what is still undelivered when
  :meth:`BackgroundWriter.shutdown`'s deadline passes goes to ``on_failure`` (the
  spool), which tells the user where.

What the sink cannot deliver is never dropped silently:

- transient failures (connection refused, timeout, HTTP 5xx or 429) are retried as
  above, for at most ``retry_timeout`` seconds per batch and never past the deadline of
  :meth:`BackgroundWriter.shutdown`;
- single values the backend refuses reach ``on_rejected(run, key, reason)`` while the
  rest of their batch lands;
- operations that cannot be delivered reach ``on_failure(ops, error)`` as plain
  operations. The default keeps them in :attr:`BackgroundWriter.failed`; this is the
  seam where a spool file plugs in.

Two ways out when the backend is gone, so the evaluation never waits on it:

- :meth:`BackgroundWriter.divert` stops sending: what is queued, what is being retried
  and everything emitted later goes to ``on_failure`` (the spool) instead;
- a send that blocks past the :meth:`BackgroundWriter.shutdown` deadline (MLflow's HTTP
  client retries inside one call for minutes) is *abandoned*: its operations go to
  ``on_failure`` from the caller's thread, the sink is told to make no further call
  (``sink.cancel()`` when it has one), and whatever the blocked thread does afterwards
  is neither sent on nor reported again. The one request in flight may still land
  later; a replay of the spooled copy is idempotent, so that costs no duplicate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence

from inspect_mlflow._operations import Operation
from inspect_mlflow._writer.forking import reinit_after_fork
from inspect_mlflow._writer.outcomes import (
    STATS,
    DeadlinePassed,
    Diverted,
    FailureCallback,
    KeptProblems,
    QueueFull,
    RejectedCallback,
    SentCallback,
    WriterClosed,
    is_transient,
)
from inspect_mlflow._writer.sink import Rejection, Sink, SinkError
from inspect_mlflow._writer.writer_settings import WriterSettings

logger = logging.getLogger(__name__)

THREAD_NAME = "inspect-mlflow-writer"


class BackgroundWriter:
    """Batches operations and delivers them to a sink from one background thread.

    The writer is the only user of its sink: ``sink.send`` and ``sink.close`` run on the
    writer thread only. ``emit``, ``flush``, ``shutdown`` and the read-only accessors may
    be called from any thread.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_queue_size: int = 100_000,
        max_batch_size: int = 1000,
        schedule_delay: float = 0.5,
        retry_timeout: float = 30.0,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        on_failure: FailureCallback | None = None,
        on_rejected: RejectedCallback | None = None,
        on_sent: SentCallback | None = None,
        thread_name: str = THREAD_NAME,
    ) -> None:
        """Validate the settings and start the writer thread.

        Args:
            sink: Where operations go; owned by the writer from now on.
            max_queue_size: Operations that may wait at once; beyond it, ``emit`` hands
                the excess to ``on_failure`` (bounded memory, nothing silent).
            max_batch_size: Operations per ``sink.send`` call (<= ``max_queue_size``).
            schedule_delay: Seconds between two deliveries when no full batch waits.
            retry_timeout: Seconds a batch may keep failing transiently before it is
                handed to ``on_failure``.
            backoff: First retry delay in seconds; doubles per attempt, with jitter.
            max_backoff: Upper bound of one retry delay in seconds.
            on_failure: Called with operations that will not be delivered and the error;
                default: warn once per kind of error and keep them in :attr:`failed`.
            on_rejected: Called with ``(run, key, reason)`` for each value the backend
                refused; default: warn once per key and keep it in :attr:`rejected`.
            on_sent: Called with the operations of each send that landed (for a spool
                that keeps what a later failure would need); default: nothing.
            thread_name: Name of the writer thread (shows in thread dumps).

        Raises:
            ValueError: A setting is out of range; the message names it.
        """
        self._settings = WriterSettings(
            max_queue_size, max_batch_size, schedule_delay, retry_timeout, backoff, max_backoff
        )
        self._sink = sink
        self._kept = KeptProblems(logger)
        self._on_failure = on_failure or self._kept.keep_failed
        self._on_rejected = on_rejected or self._kept.keep_rejected
        self._on_sent = on_sent
        self._thread_name = thread_name
        self._stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self._init_state()
        self._thread.start()
        reinit_after_fork(self._at_fork_reinit)

    def _init_state(self) -> None:
        """Create the lock, events, queue and thread (again, in a forked child)."""
        self._lock = threading.Lock()
        self._settled_cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._close_deadline = math.inf
        self._queue: deque[Operation] = deque()
        self._interrupt = threading.Event()  # ends a backoff sleep: shutdown or divert
        self._diverted = False
        self._abandoned = False
        self._inflight: list[Operation] = []  # handed to the sink, not yet settled
        self._taken: list[Operation] = []  # taken from the queue for later chunks
        self._emitted = 0
        self._settled = 0
        self._sink_closed = False
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)

    def _at_fork_reinit(self) -> None:
        """Give a forked child its own lock and thread; the parent delivers its own ops."""
        was_closing = self._closing.is_set()
        was_diverted = self._diverted
        self._init_state()
        self._diverted = was_diverted
        if was_closing:
            self._closing.set()
            self._sink_closed = True
        else:
            self._thread.start()

    # -- producer side (any thread) -------------------------------------------------

    def emit(self, ops: Sequence[Operation]) -> None:
        """Queue operations for delivery; never blocks on I/O.

        Operations that do not fit in the queue, or arrive after shutdown, go straight
        to ``on_failure`` on the calling thread.
        """
        if not ops:
            return
        refused: list[Operation] = []
        error: Exception | None = None
        with self._lock:
            if self._closing.is_set():
                refused, error = list(ops), WriterClosed("the writer was shut down")
            elif self._diverted:
                refused, error = list(ops), Diverted("the writer sends nothing more")
            else:
                room = self._settings.max_queue_size - len(self._queue)
                accepted = ops[:room] if len(ops) > room else ops
                self._queue.extend(accepted)
                self._emitted += len(accepted)
                self._stats["emitted"] += len(accepted)
                if len(self._queue) >= self._settings.max_batch_size:
                    self._wake.set()
                if len(accepted) < len(ops):
                    refused = list(ops[len(accepted) :])
                    self._stats["overflow"] += len(refused)
                    error = QueueFull(
                        f"writer queue full ({self._settings.max_queue_size} operations waiting)"
                    )
        if refused and error is not None:
            self._fail(refused, error)

    def hurry(self) -> None:
        """Send what is queued now rather than at the next interval; returns at once.

        For a moment when nothing more is coming soon (a task's last sample ended): the
        batch then overlaps what the eval does next instead of waiting for its tick.
        """
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until everything emitted before this call was sent or handed to ``on_failure``.

        Args:
            timeout: Seconds to wait at most.

        Returns:
            True when all of it was settled within ``timeout``.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = self._emitted
            if self._settled >= target:
                return True
            if threading.current_thread() is self._thread:
                return False  # a callback flushing from the writer thread would deadlock
            self._wake.set()
            while self._settled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._settled_cond.wait(remaining)
            return True

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Deliver what is queued, stop the thread and close the sink; idempotent.

        Later ``emit`` calls go to ``on_failure``. Retries stop at the deadline; what is
        still queued when the deadline passes goes to ``on_failure`` as well.

        Args:
            timeout: Seconds for the whole shutdown (delivery included).

        Returns:
            True when the thread finished within ``timeout`` (everything was sent or
            handed to ``on_failure``).
        """
        with self._lock:
            if not self._closing.is_set():
                self._close_deadline = time.monotonic() + max(0.0, timeout)
                self._closing.set()
                self._interrupt.set()
        self._wake.set()
        if threading.current_thread() is self._thread:
            return False
        if self._thread.ident is not None:
            self._thread.join(max(0.0, timeout))
        if not self._thread.is_alive():
            return True
        with self._lock:
            # The thread is blocked in a send: abandon it. What it holds and what is
            # queued go to on_failure from here, in emission order.
            left = list(self._inflight) + list(self._taken) + list(self._queue)
            self._queue.clear()
            self._inflight, self._taken = [], []
            self._abandoned = True
            self._settled += len(left)
            self._settled_cond.notify_all()
        cancel = getattr(self._sink, "cancel", None)
        if callable(cancel):
            try:
                cancel()
            except Exception:
                logger.warning("inspect-mlflow: cancelling the sink failed", exc_info=True)
        if left:
            self._fail(left, DeadlinePassed("shutdown timed out before these were sent"))
        return False

    def divert(self) -> None:
        """Stop sending; everything not yet delivered goes to ``on_failure`` instead.

        What is queued or waiting for a retry is handed on by the writer thread, in
        order; later ``emit`` calls hand theirs on at once, on the caller's thread. For a
        backend that is gone (a run end that could not deliver in time, a full queue):
        the spool takes the rest. A send already in progress finishes, or is abandoned by
        :meth:`shutdown`.
        """
        with self._lock:
            self._diverted = True
            self._interrupt.set()
        self._wake.set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait for the writer thread to end (after :meth:`shutdown`); True when it has."""
        if self._thread.ident is None or threading.current_thread() is self._thread:
            return not self._thread.is_alive()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- read side (any thread) ------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters named in :data:`STATS`."""
        with self._lock:
            return dict(self._stats)

    @property
    def emitted_count(self) -> int:
        """Operations accepted by :meth:`emit` so far (they are settled in this order)."""
        with self._lock:
            return self._emitted

    @property
    def settled_count(self) -> int:
        """How many of the accepted operations, oldest first, were sent or handed on.

        With :attr:`emitted_count` read after an emit, tells when everything up to that
        emit is settled (the delivery process confirms points to the eval's this way).
        """
        with self._lock:
            return self._settled

    @property
    def failed(self) -> list[Operation]:
        """Operations kept by the default ``on_failure``, oldest first (a copy)."""
        return self._kept.failed

    @property
    def rejected(self) -> list[Rejection]:
        """Values kept by the default ``on_rejected`` (a copy)."""
        return self._kept.rejected

    def take_failed(self) -> list[Operation]:
        """Remove and return the kept undelivered operations (for a spool or a replay)."""
        return self._kept.take_failed()

    def problem_summary(self, *, undelivered: bool = True) -> list[str]:
        """One line per kind of problem, for the summary logged at run end.

        Args:
            undelivered: Include the count of operations handed to ``on_failure`` (leave
                it out when the ``on_failure`` callback reports them itself, as the spool
                does).
        """
        return self._kept.summary(self.stats, undelivered=undelivered)

    # -- writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if not self._closing.is_set():
                    self._wake.wait(self._settings.schedule_delay)
                self._wake.clear()
                with self._lock:
                    batch = list(self._queue)
                    self._queue.clear()
                    self._taken = batch
                for start in range(0, len(batch), self._settings.max_batch_size):
                    chunk = batch[start : start + self._settings.max_batch_size]
                    with self._lock:
                        if self._abandoned:
                            return
                        self._taken = batch[start + len(chunk) :]
                        self._inflight = chunk
                    try:
                        if self._diverted:
                            self._fail(chunk, Diverted("the writer sends nothing more"))
                        else:
                            self._deliver(chunk)
                    except Exception as error:  # never let the thread die
                        logger.exception("inspect-mlflow: writer error")
                        self._fail(chunk, error)
                    with self._lock:
                        self._inflight = []
                        if not self._abandoned:
                            self._settled += len(chunk)
                        self._settled_cond.notify_all()
                if self._closing.is_set():
                    with self._lock:
                        if not self._queue:
                            break
        finally:
            self._close_sink()

    def _close_sink(self) -> None:
        if self._sink_closed:
            return
        self._sink_closed = True
        try:
            self._sink.close()
        except Exception:
            logger.warning("inspect-mlflow: closing the sink failed", exc_info=True)

    def _deliver(self, ops: list[Operation]) -> None:
        """Send one batch, retrying transient failures; settle everything in it."""
        pending = ops
        last_error: BaseException | None = None
        attempt = 0
        first_failure: float | None = None
        while pending:
            if self._abandoned:
                return
            if self._diverted:
                self._fail(pending, Diverted("the writer sends nothing more"))
                return
            if self._closing.is_set() and time.monotonic() >= self._close_deadline:
                self._fail(pending, DeadlinePassed("shutdown deadline passed before sending"))
                return
            with self._lock:
                self._inflight = list(pending)
            try:
                self._sink.send(pending)
            except SinkError as error:
                partial = bool(error.pending or error.failed)
                self._count(
                    ops_sent=self._delivered_count(pending, error),
                    send_errors=int(partial),
                    batches_sent=int(not partial),
                )
                for rejection in error.rejected:
                    self._reject(rejection)
                self._sent(pending, error)
                if error.failed:
                    self._fail(list(error.failed), error)
                if not error.pending:
                    return
                if not error.transient:
                    self._fail(list(error.pending), error)
                    return
                pending, last_error = list(error.pending), error
            except Exception as error:
                self._count(send_errors=1)
                if not is_transient(error):
                    self._fail(pending, error)
                    return
                last_error = error
            else:
                self._count(batches_sent=1, ops_sent=len(pending))
                self._sent(pending)
                return
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            if not self._wait_before_retry(attempt, first_failure, last_error):
                self._fail(pending, last_error or RuntimeError("delivery failed"))
                return
            attempt += 1
            self._count(retries=1)

    def _sent(self, ops: list[Operation], error: SinkError | None = None) -> None:
        """Tell ``on_sent`` what landed of ``ops`` (all of it unless ``error`` says not)."""
        if self._on_sent is None or self._abandoned:
            return
        if error is not None:
            left = {id(op) for op in (*error.pending, *error.failed)}
            ops = [op for op in ops if id(op) not in left]
        if not ops:
            return
        try:
            self._on_sent(ops)
        except Exception:
            logger.exception("inspect-mlflow: on_sent callback raised")

    @staticmethod
    def _delivered_count(sent: list[Operation], error: SinkError) -> int:
        return max(0, len(sent) - len(error.pending) - len(error.failed))

    def _wait_before_retry(
        self, attempt: int, first_failure: float, error: BaseException | None = None
    ) -> bool:
        """Sleep the backoff delay; False when the retry would land past a deadline."""
        delay = self._settings.retry_delay(attempt, error)
        retry_at = time.monotonic() + delay
        deadline = first_failure + self._settings.retry_timeout
        if self._closing.is_set():
            deadline = min(deadline, self._close_deadline)
        if retry_at > deadline:
            return False
        if self._interrupt.wait(delay):
            if self._diverted:
                return True  # the next attempt hands the batch to on_failure at once
            # Shutdown was requested (now or before): its deadline is fixed from here on.
            if retry_at > self._close_deadline:
                return False
            remaining = retry_at - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        return True

    # -- error path ------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._stats[name] += delta

    def _fail(self, ops: list[Operation], error: BaseException) -> None:
        if self._abandoned and threading.current_thread() is self._thread:
            return  # the abandoned thread: shutdown already handed these on
        self._count(ops_failed=len(ops))
        try:
            self._on_failure(ops, error)
        except Exception:
            logger.exception("inspect-mlflow: on_failure callback raised")

    def _reject(self, rejection: Rejection) -> None:
        if self._abandoned:
            return
        self._count(rejected=1)
        try:
            self._on_rejected(rejection.run, rejection.key, rejection.reason)
        except Exception:
            logger.exception("inspect-mlflow: on_rejected callback raised")
