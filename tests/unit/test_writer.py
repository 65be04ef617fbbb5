"""Unit tests of the background writer with an in-memory sink and small fake sinks."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import pytest

from inspect_mlflow._operations import Operation, SetTags
from inspect_mlflow._writer.sink import MemorySink, Rejection, SinkError
from inspect_mlflow._writer.writer import (
    THREAD_NAME,
    BackgroundWriter,
    QueueFull,
    WriterClosed,
)


def ops(n: int, start: int = 0, run: str = "task:a") -> list[Operation]:
    return [SetTags(run=run, tags={"i": str(i)}) for i in range(start, start + n)]


def index(op: Operation) -> int:
    assert isinstance(op, SetTags)
    return int(op.tags["i"])


class GatedSink(MemorySink):
    """Blocks in send until ``gate`` is set; ``entered`` tells that a send started."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def send(self, batch: Sequence[Operation]) -> None:
        self.entered.set()
        self.gate.wait(30)
        super().send(batch)


class FlakySink(MemorySink):
    """Raises the given errors on the first calls, then records."""

    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__()
        self.errors = list(errors)
        self.calls = 0

    def send(self, batch: Sequence[Operation]) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        super().send(batch)


class Recorder:
    def __init__(self) -> None:
        self.failures: list[tuple[list[Operation], BaseException]] = []
        self.rejections: list[tuple[str, str, str]] = []

    def on_failure(self, failed: list[Operation], error: BaseException) -> None:
        self.failures.append((failed, error))

    def on_rejected(self, run: str, key: str, reason: str) -> None:
        self.rejections.append((run, key, reason))

    @property
    def failed_ops(self) -> list[Operation]:
        return [op for failed, _ in self.failures for op in failed]


@pytest.fixture
def writers() -> list[BackgroundWriter]:
    made: list[BackgroundWriter] = []
    yield made
    for writer in made:
        writer.shutdown(2)


def make(writers: list[BackgroundWriter], sink, **kwargs) -> BackgroundWriter:
    kwargs.setdefault("schedule_delay", 0.05)
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("max_backoff", 0.05)
    writer = BackgroundWriter(sink, **kwargs)
    writers.append(writer)
    return writer


# -- ordering and batching --------------------------------------------------------------


def test_delivers_everything_in_order_in_batches_of_at_most_max_batch_size(writers):
    sink = MemorySink()
    writer = make(writers, sink, max_batch_size=100, schedule_delay=5)
    for start in range(0, 2500, 250):
        writer.emit(ops(250, start))
    assert writer.flush(10)
    assert [index(op) for op in sink.ops] == list(range(2500))
    assert all(len(batch) <= 100 for batch in sink.batches)
    assert writer.stats["ops_sent"] == 2500
    assert writer.stats["batches_sent"] == len(sink.batches)


def test_takes_everything_queued_into_one_batch_when_it_fits(writers):
    sink = GatedSink()
    writer = make(writers, sink, max_batch_size=1000, schedule_delay=0.01)
    writer.emit(ops(1))
    assert sink.entered.wait(5)
    for start in range(1, 301, 30):  # queued while the first send is blocked
        writer.emit(ops(30, start))
    sink.gate.set()
    assert writer.flush(5)
    assert [len(b) for b in sink.batches] == [1, 300]


def test_a_full_batch_wakes_the_thread_before_the_schedule_delay(writers):
    sink = MemorySink()
    writer = make(writers, sink, max_batch_size=10, schedule_delay=60)
    writer.emit(ops(10))
    deadline = time.monotonic() + 5
    while not sink.ops and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sink.ops) == 10


def test_hurry_sends_a_partial_batch_without_waiting_for_the_schedule_delay(writers):
    # A task's last sample ended: what is queued goes now, not at the next interval.
    sink = MemorySink()
    writer = make(writers, sink, max_batch_size=1000, schedule_delay=60)
    writer.emit(ops(3))
    time.sleep(0.1)
    assert sink.ops == []  # the interval has not passed: nothing sent yet
    writer.hurry()
    deadline = time.monotonic() + 5
    while len(sink.ops) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [index(op) for op in sink.ops] == [0, 1, 2]


def test_a_partial_batch_is_sent_after_the_schedule_delay_without_flush(writers):
    sink = MemorySink()
    writer = make(writers, sink, max_batch_size=1000, schedule_delay=0.05)
    writer.emit(ops(3))
    deadline = time.monotonic() + 5
    while len(sink.ops) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [index(op) for op in sink.ops] == [0, 1, 2]


# -- emit never blocks, flush semantics ---------------------------------------------------


def test_emit_returns_while_the_sink_is_blocked(writers):
    sink = GatedSink()
    writer = make(writers, sink, max_batch_size=100)
    writer.emit(ops(1))
    assert sink.entered.wait(5)
    started = time.monotonic()
    for start in range(1, 10_001, 100):
        writer.emit(ops(100, start))
    elapsed = time.monotonic() - started
    # Every emit returned although the sink has not finished even its first call.
    assert not sink.gate.is_set() and sink.ops == []
    assert elapsed < 5
    sink.gate.set()
    assert writer.flush(10)
    assert [index(op) for op in sink.ops] == list(range(10_001))


def test_flush_returns_true_only_after_delivery(writers):
    sink = GatedSink()
    writer = make(writers, sink)
    writer.emit(ops(5))
    assert writer.flush(0.2) is False
    assert sink.ops == []
    sink.gate.set()
    assert writer.flush(5) is True
    assert len(sink.ops) == 5


def test_flush_times_out_with_a_hanging_sink(writers):
    sink = GatedSink()
    writer = make(writers, sink)
    writer.emit(ops(1))
    started = time.monotonic()
    assert writer.flush(0.3) is False
    assert 0.25 <= time.monotonic() - started < 2
    sink.gate.set()


def test_flush_with_nothing_emitted_is_immediate(writers):
    writer = make(writers, MemorySink())
    started = time.monotonic()
    assert writer.flush(5)
    assert time.monotonic() - started < 0.5


def test_flush_waits_only_for_what_was_emitted_before_it(writers):
    sink = GatedSink()
    writer = make(writers, sink, max_batch_size=10)
    writer.emit(ops(1))
    assert sink.entered.wait(5)
    sink.gate.set()
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == [0]


# -- retries and the error path -----------------------------------------------------------


def test_transient_errors_are_retried_until_success(writers):
    sink = FlakySink([ConnectionError("refused"), TimeoutError("slow")])
    rec = Recorder()
    writer = make(writers, sink, on_failure=rec.on_failure)
    writer.emit(ops(4))
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == [0, 1, 2, 3]
    assert sink.calls == 3
    assert writer.stats["retries"] == 2
    assert writer.stats["send_errors"] == 2
    assert rec.failures == []


def test_a_transient_sink_error_resends_only_what_is_pending(writers):
    class HalfSink(MemorySink):
        def __init__(self) -> None:
            super().__init__()
            self.failed_once = False

        def send(self, batch: Sequence[Operation]) -> None:
            if not self.failed_once:
                self.failed_once = True
                super().send(batch[:2])
                raise SinkError("503", transient=True, pending=batch[2:])
            super().send(batch)

    sink = HalfSink()
    writer = make(writers, sink)
    writer.emit(ops(5))
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == [0, 1, 2, 3, 4]
    assert writer.stats["ops_sent"] == 5
    assert writer.stats["retries"] == 1


def test_permanent_failure_goes_to_on_failure_and_flush_still_completes(writers):
    error = ValueError("bad request")
    sink = FlakySink([error])
    rec = Recorder()
    writer = make(writers, sink, on_failure=rec.on_failure)
    writer.emit(ops(3))
    assert writer.flush(5)
    assert sink.calls == 1  # not retried
    assert rec.failures == [(ops(3), error)]
    assert writer.stats["ops_failed"] == 3
    writer.emit(ops(1, 3))  # the writer keeps working afterwards
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == [3]


def test_persisting_transient_failure_is_handed_over_after_retry_timeout(writers):
    sink = FlakySink([ConnectionError("down")] * 1000)
    rec = Recorder()
    writer = make(writers, sink, on_failure=rec.on_failure, retry_timeout=0.3)
    writer.emit(ops(2))
    started = time.monotonic()
    assert writer.flush(5)
    assert 0.1 < time.monotonic() - started < 3
    assert rec.failed_ops == ops(2)
    assert isinstance(rec.failures[0][1], ConnectionError)
    assert writer.stats["retries"] >= 2


def test_sink_error_parts_reach_the_right_callbacks(writers):
    batch = ops(4)

    class PartialSink(MemorySink):
        def send(self, sent: Sequence[Operation]) -> None:
            super().send([sent[0], sent[3]])
            raise SinkError(
                "refused",
                transient=False,
                kind="INVALID_PARAMETER_VALUE",
                failed=[sent[1], sent[2]],
                rejected=[Rejection("task:a", "lr", "param changed")],
            )

    rec = Recorder()
    writer = make(writers, PartialSink(), on_failure=rec.on_failure, on_rejected=rec.on_rejected)
    writer.emit(batch)
    assert writer.flush(5)
    assert rec.rejections == [("task:a", "lr", "param changed")]
    assert rec.failed_ops == [batch[1], batch[2]]
    assert writer.stats["rejected"] == 1
    assert writer.stats["ops_sent"] == 2


def test_rejections_alone_do_not_count_as_failed_sends(writers):
    class RejectingSink(MemorySink):
        def send(self, sent: Sequence[Operation]) -> None:
            super().send(sent)
            raise SinkError(
                "one value refused",
                transient=False,
                rejected=[Rejection("task:a", "k", "too long")],
            )

    writer = make(writers, RejectingSink())
    writer.emit(ops(2))
    assert writer.flush(5)
    assert writer.stats["batches_sent"] == 1 and writer.stats["send_errors"] == 0
    assert writer.stats["ops_failed"] == 0
    assert writer.rejected == [Rejection("task:a", "k", "too long")]
    assert any("k (too long)" in line for line in writer.problem_summary())


def test_default_on_failure_keeps_ops_and_warns_once_per_kind(writers, caplog):
    sink = FlakySink([ValueError("a"), ValueError("b"), KeyError("c")])
    writer = make(writers, sink)
    with caplog.at_level(logging.WARNING, logger="inspect_mlflow._writer.writer"):
        for start in range(3):
            writer.emit(ops(1, start))
            assert writer.flush(5)
    assert writer.failed == ops(3)
    warnings = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warnings) == 2  # ValueError once, KeyError once
    assert writer.problem_summary() == ["3 write operation(s) could not be delivered"]
    assert writer.take_failed() == ops(3)
    assert writer.failed == []


def test_a_raising_callback_does_not_kill_the_thread(writers):
    def boom(failed, error):
        raise RuntimeError("callback bug")

    sink = FlakySink([ValueError("x")])
    writer = make(writers, sink, on_failure=boom)
    writer.emit(ops(1))
    assert writer.flush(5)
    writer.emit(ops(1, 1))
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == [1]


def test_full_queue_overflow_goes_to_on_failure(writers):
    sink = GatedSink()
    rec = Recorder()
    writer = make(writers, sink, max_queue_size=10, max_batch_size=5, on_failure=rec.on_failure)
    writer.emit(ops(1))
    assert sink.entered.wait(5)
    writer.emit(ops(12, 1))  # 10 fit, 2 overflow
    assert rec.failed_ops == ops(2, 11)
    assert isinstance(rec.failures[0][1], QueueFull)
    assert writer.stats["overflow"] == 2
    sink.gate.set()
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == list(range(11))


# -- shutdown -------------------------------------------------------------------------------


def test_shutdown_delivers_closes_once_and_refuses_later_emits():
    sink = MemorySink()
    rec = Recorder()
    writer = BackgroundWriter(sink, schedule_delay=30, on_failure=rec.on_failure)
    writer.emit(ops(3))
    assert writer.shutdown(5) is True
    assert [index(op) for op in sink.ops] == [0, 1, 2]
    assert sink.closed
    assert writer.shutdown(5) is True  # idempotent
    writer.emit(ops(1, 3))
    assert rec.failed_ops == ops(1, 3)
    assert isinstance(rec.failures[0][1], WriterClosed)
    assert not writer._thread.is_alive()


def test_shutdown_with_a_hanging_sink_returns_false_and_hands_over_the_queue():
    sink = GatedSink()
    rec = Recorder()
    writer = BackgroundWriter(sink, schedule_delay=0.01, on_failure=rec.on_failure)
    writer.emit(ops(1))
    assert sink.entered.wait(5)
    writer.emit(ops(2, 1))
    started = time.monotonic()
    assert writer.shutdown(0.3) is False
    assert time.monotonic() - started < 2
    # The abandoned call's batch and the queue behind it, in emission order.
    assert rec.failed_ops == ops(3)
    sink.gate.set()
    assert writer.wait_closed(5)
    assert rec.failed_ops == ops(3), "the abandoned thread reports nothing again"


def test_shutdown_deadline_cuts_retries_short():
    sink = FlakySink([ConnectionError("down")] * 10_000)
    rec = Recorder()
    writer = BackgroundWriter(
        sink,
        schedule_delay=0.01,
        retry_timeout=60,
        backoff=0.05,
        max_backoff=0.2,
        on_failure=rec.on_failure,
    )
    writer.emit(ops(2))
    time.sleep(0.1)
    started = time.monotonic()
    assert writer.shutdown(0.5) is True
    assert time.monotonic() - started < 2
    assert rec.failed_ops == ops(2)


def test_the_writer_thread_is_a_named_daemon(writers):
    writer = make(writers, MemorySink())
    threads = [t for t in threading.enumerate() if t.name == THREAD_NAME]
    assert threads and all(t.daemon for t in threads)
    assert writer.shutdown(2)


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"max_batch_size": True}, "max_batch_size"),
        ({"max_queue_size": 10, "max_batch_size": 11}, "max_batch_size"),
        ({"schedule_delay": 0}, "schedule_delay"),
        ({"schedule_delay": float("nan")}, "schedule_delay"),
        ({"retry_timeout": -1}, "retry_timeout"),
        ({"backoff": 1.0, "max_backoff": 0.5}, "max_backoff"),
    ],
)
def test_invalid_settings_are_rejected_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BackgroundWriter(MemorySink(), **kwargs)


# -- fork ----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_working_writer_of_its_own(writers):
    sink = MemorySink()
    writer = make(writers, sink)
    writer.emit(ops(2))
    assert writer.flush(5)
    pid = os.fork()
    if pid == 0:  # child: only ops emitted here must be delivered here
        code = 1
        try:
            writer.emit(ops(1, 100))
            delivered = writer.flush(5)
            child_ops = [index(op) for op in sink.ops]
            code = 0 if delivered and child_ops == [0, 1, 100] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer.emit(ops(1, 3))
    assert writer.flush(5)
    assert [index(op) for op in sink.ops] == [0, 1, 3]
