"""A serial worker thread: the hook's event-loop callbacks only enqueue, this thread evaluates.

Why: evaluating the mapping at ``sample_end`` (table rows, a trace with a span per event)
takes milliseconds; done in the hook callback, it holds Inspect's event loop that long
and every other sample waits. Here the callback appends the payload to a deque (about a
microsecond) and one named daemon thread runs the jobs one at a time, in the order they
came, so the engine still sees lifecycle points in hook order.

The queue is bounded: past ``max_pending`` jobs (a worker that cannot keep up), ``submit``
runs the job on the caller's thread instead, which slows the eval down rather than
letting memory grow without limit.

Threading: ``submit``, ``drain`` and ``stop`` may be called from any thread; the job
function runs on the worker thread (or on the submitting thread when the queue is full,
or after ``stop``), never on two threads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from inspect_mlflow._writer.forking import reinit_after_fork

logger = logging.getLogger(__name__)


class SerialWorker:
    """Runs ``job(*args)`` for each :meth:`submit`, in order, on one daemon thread.

    Args:
        job: Called with the arguments of each ``submit``; exceptions are logged (the
            job should count its own failures), never raised into the submitter.
        name: Name of the thread (shows in thread dumps).
        max_pending: Jobs that may wait at once before ``submit`` runs them inline.
    """

    def __init__(self, job: Callable[..., None], *, name: str, max_pending: int = 10_000) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._job = job
        self._name = name
        self._max_pending = max_pending
        self._init_state()
        reinit_after_fork(self._init_state)

    def _init_state(self) -> None:
        """Create the lock, queue and thread (again, in a forked child)."""
        self._cond = threading.Condition()
        self._run_lock = threading.Lock()  # one job at a time, whichever thread runs it
        self._jobs: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._submitted = 0
        self._done = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def submit(self, *args: Any) -> None:
        """Queue one job; never waits, unless the queue is full (then runs it here)."""
        self.call(self._job, *args)

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue ``fn(*args)`` among the jobs, in order (same rules as :meth:`submit`)."""
        with self._cond:
            if not self._stopped and len(self._jobs) < self._max_pending:
                self._jobs.append((fn, args))
                self._submitted += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()
                self._cond.notify()
                return
        # Full (or stopped): wait for the jobs before it, then run it here, in order.
        self.drain(None)
        self._run(fn, args)

    def drain(self, timeout: float | None) -> bool:
        """Wait until every job submitted before this call has run.

        Returns:
            True when they all ran within ``timeout`` seconds (None: no limit).
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            target = self._submitted
            while self._done < target:
                if threading.current_thread() is self._thread:
                    return False  # a job draining its own worker would wait forever
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def stop(self, timeout: float) -> bool:
        """Run what is queued (within ``timeout``), then end the thread; idempotent.

        Later :meth:`submit` calls run their job on the caller's thread.
        """
        drained = self.drain(timeout)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        return drained

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopped:
                    self._cond.wait()
                if not self._jobs:
                    return
                fn, args = self._jobs.popleft()
            self._run(fn, args)
            with self._cond:
                self._done += 1
                self._cond.notify_all()

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        with self._run_lock:
            try:
                fn(*args)
            except Exception:
                logger.exception("inspect-mlflow: %s job failed", self._name)
