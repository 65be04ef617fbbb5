"""The session's serial worker: callbacks only queue, one thread runs the jobs in order.

The hook's callbacks run on the eval's event loop; the worker is what keeps the engine and
the writer off it, so submitting must not run a job, jobs must run in submission order on
the worker's thread, a full queue must keep the order, and a failing job must not stop
the ones after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from inspect_mlflow._delivery.worker import SerialWorker


def test_worker_runs_jobs_in_order_off_the_submitting_thread() -> None:
    seen: list[tuple[int, str]] = []
    gate = threading.Event()

    def job(n: int) -> None:
        gate.wait(5)
        seen.append((n, threading.current_thread().name))

    worker = SerialWorker(job, name="test-worker")
    for n in range(50):
        worker.submit(n)
    assert seen == []  # submit only queues: every job is still held at the gate
    gate.set()
    assert worker.drain(5)
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-worker"}
    worker.stop(1)
    worker.submit(50)  # after stop: runs on the caller's thread, still in order
    assert seen[-1] == (50, threading.current_thread().name)


def test_a_full_worker_queue_runs_the_job_inline_after_the_earlier_ones() -> None:
    seen: list[int] = []
    release = threading.Event()

    def job(n: int) -> None:
        if n == 0:
            release.wait(5)
        seen.append(n)

    worker = SerialWorker(job, name="test-worker-full", max_pending=2)
    worker.submit(0)  # taken by the thread, blocked
    time.sleep(0.05)
    worker.submit(1)
    worker.submit(2)  # the queue holds 2 now
    threading.Timer(0.1, release.set).start()
    worker.submit(3)  # full: waits for 0, 1, 2, then runs here
    assert seen == [0, 1, 2, 3]
    worker.stop(1)


def test_a_failing_job_is_logged_and_the_worker_goes_on(caplog: Any) -> None:
    seen: list[int] = []

    def job(n: int) -> None:
        if n == 1:
            raise RuntimeError("boom")
        seen.append(n)

    worker = SerialWorker(job, name="test-worker-errors")
    for n in range(3):
        worker.submit(n)
    assert worker.drain(5) and seen == [0, 2]
    assert "boom" in caplog.text
    worker.stop(1)
