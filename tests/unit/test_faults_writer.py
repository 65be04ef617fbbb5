"""The writer's ways out when the backend is gone, and the spool glue behind them.

Small fake sinks stand in for a server that hangs or refuses (the real-server versions
are in test_faults_e2e.py); the spool is a real file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest

from inspect_mlflow._operations import AppendRows, CloseRun, Operation, SetTags
from inspect_mlflow._writer.sink import MemorySink, SinkError
from inspect_mlflow._writer.spool import SpoolWriter, read_spool
from inspect_mlflow._writer.undelivered import Undelivered
from inspect_mlflow._writer.writer import BackgroundWriter, Diverted, QueueFull


def tags(n: int, start: int = 0, run: str = "task:a") -> list[Operation]:
    return [SetTags(run=run, tags={"i": str(i)}) for i in range(start, start + n)]


def numbers(ops: Sequence[Operation]) -> list[int]:
    return [int(op.tags["i"]) for op in ops if isinstance(op, SetTags)]


class HangingSink(MemorySink):
    """Blocks in its first send until released (a server that died mid-request)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.cancelled = False
        self.sends_after_cancel = 0

    def send(self, batch: Sequence[Operation]) -> None:
        if self.cancelled:
            self.sends_after_cancel += 1
        self.entered.set()
        self.release.wait(30)
        super().send(batch)

    def cancel(self) -> None:
        self.cancelled = True


class DownSink(MemorySink):
    """Every send fails transiently (connection refused)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def send(self, batch: Sequence[Operation]) -> None:
        self.attempts += 1
        raise ConnectionRefusedError("connection refused")


class Collect:
    def __init__(self) -> None:
        self.failed: list[tuple[list[Operation], BaseException]] = []
        self.lock = threading.Lock()

    def __call__(self, ops: list[Operation], error: BaseException) -> None:
        with self.lock:
            self.failed.append((list(ops), error))

    @property
    def ops(self) -> list[Operation]:
        return [op for ops, _ in self.failed for op in ops]


def test_shutdown_abandons_a_hanging_send_on_time_and_hands_over_its_batch():
    sink = HangingSink()
    failed = Collect()
    writer = BackgroundWriter(sink, schedule_delay=0.01, on_failure=failed)
    writer.emit(tags(3))
    assert sink.entered.wait(5)
    writer.emit(tags(2, 3))
    started = time.monotonic()
    assert writer.shutdown(0.3) is False
    assert time.monotonic() - started < 1.5, "the caller is not held by the hanging call"
    assert numbers(failed.ops) == [0, 1, 2, 3, 4], "in-flight first, then the queue"
    assert sink.cancelled, "the sink is told to make no further call"
    assert not writer.wait_closed(0.05)
    sink.release.set()
    assert writer.wait_closed(5)
    assert numbers(failed.ops) == [0, 1, 2, 3, 4], "nothing reported twice"
    assert sink.sends_after_cancel == 0


def test_emits_after_an_abandoned_shutdown_go_to_on_failure():
    sink = HangingSink()
    failed = Collect()
    writer = BackgroundWriter(sink, schedule_delay=0.01, on_failure=failed)
    writer.emit(tags(1))
    assert sink.entered.wait(5)
    writer.shutdown(0.1)
    writer.emit(tags(1, 1))
    assert numbers(failed.ops) == [0, 1]
    sink.release.set()
    assert writer.wait_closed(5)


def test_divert_ends_a_backoff_at_once_and_spools_in_order():
    sink = DownSink()
    failed = Collect()
    writer = BackgroundWriter(
        sink,
        schedule_delay=0.01,
        retry_timeout=3600,
        backoff=5,
        max_backoff=8,
        on_failure=failed,
    )
    writer.emit(tags(3))
    deadline = time.monotonic() + 5
    while sink.attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.emit(tags(2, 3))
    started = time.monotonic()
    writer.divert()
    assert writer.flush(2), "a 5 s backoff does not hold a diverted writer"
    assert time.monotonic() - started < 1.5
    assert numbers(failed.ops) == [0, 1, 2, 3, 4]
    assert all(isinstance(e, Diverted) for _, e in failed.failed)
    writer.emit(tags(1, 5))
    assert numbers(failed.ops)[-1] == 5, "later emits go straight to on_failure"
    assert sink.attempts == 1
    assert writer.shutdown(2)


def test_on_sent_reports_what_landed_even_from_a_partly_failed_batch():
    a, b, c = tags(3)

    class Partial(MemorySink):
        def send(self, batch: Sequence[Operation]) -> None:
            if len(batch) == 3:
                raise SinkError("b refused", transient=False, failed=[batch[1]])
            super().send(batch)

    landed: list[Operation] = []
    writer = BackgroundWriter(
        Partial(), schedule_delay=0.01, on_sent=landed.extend, on_failure=lambda o, e: None
    )
    writer.emit([a, b, c])
    assert writer.flush(5)
    assert landed == [a, c]
    writer.shutdown(2)


# -- the spool glue ----------------------------------------------------------------------


def test_undelivered_spools_with_the_rows_a_failed_close_needs(tmp_path):
    spool = SpoolWriter(tmp_path, tracking_uri="http://x", experiment_name="e")
    undelivered = Undelivered(spool)
    rows1 = AppendRows("task:a", "samples.json", ({"id": 1},))
    rows2 = AppendRows("task:a", "samples.json", ({"id": 2},))
    other = AppendRows("task:b", "samples.json", ({"id": 9},))
    close = CloseRun("task:a", "FINISHED", 5)
    undelivered.track([rows1, rows2, other])
    # rows1 landed in the sink's memory; rows2 failed before; then the close failed.
    undelivered.on_failure([rows2], SinkError("x", transient=False, kind="K"))
    undelivered.on_failure([close], SinkError("y", transient=False, kind="K"))
    ops = read_spool(spool.path).ops
    assert ops == [rows2, rows1, close], "each row once, all before the close"
    undelivered.on_sent([CloseRun("task:b", "FINISHED", 5)])
    undelivered.on_failure([CloseRun("task:b", "FINISHED", 5)], SinkError("z", transient=False))
    assert other not in read_spool(spool.path).ops, "a landed close took its rows along"
    spool.close()


@pytest.mark.parametrize(
    "error, gone",
    [
        (QueueFull("full"), True),
        (ConnectionRefusedError("refused"), True),
        (SinkError("503", transient=True, kind="TEMPORARILY_UNAVAILABLE"), True),
        (SinkError("denied", transient=False, kind="PERMISSION_DENIED"), False),
    ],
)
def test_only_a_gone_backend_diverts(tmp_path, error, gone):
    calls: list[int] = []
    spool = SpoolWriter(tmp_path, tracking_uri="http://x", experiment_name="e")
    undelivered = Undelivered(spool, on_gone=lambda: calls.append(1))
    undelivered.on_failure(tags(1), error)
    undelivered.on_failure(tags(1, 1), error)
    assert calls == ([1] if gone else []), "asked once at most"
    assert undelivered.spooled == 2
    spool.close()


def test_a_refusal_warns_once_and_the_run_end_message_names_the_command(tmp_path, caplog):
    spool = SpoolWriter(tmp_path / "my spool", tracking_uri="http://x", experiment_name="e")
    undelivered = Undelivered(spool)
    denied = SinkError("no access", transient=False, kind="PERMISSION_DENIED")
    with caplog.at_level(logging.WARNING, logger="inspect_mlflow"):
        undelivered.on_failure(tags(2), denied)
        undelivered.on_failure(tags(3, 2), denied)
    warnings = [r for r in caplog.records if "PERMISSION_DENIED" in r.getMessage()]
    assert len(warnings) == 1
    message = undelivered.message("http://x", default_dir=False)
    assert message is not None
    assert "5 write operation(s)" in message and str(spool.path) in message
    assert f"inspect-mlflow replay --spool-dir '{tmp_path / 'my spool'}'" in message
    assert undelivered.message("http://x", default_dir=False) is None, "said once"
    undelivered.on_failure(tags(1, 9), denied)
    assert "1 write operation(s)" in (undelivered.message("http://x", default_dir=True) or "")
    spool.close()


def test_a_spool_that_cannot_be_written_counts_the_loss_loudly(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    undelivered = Undelivered(
        SpoolWriter(blocker / "spool", tracking_uri="http://x", experiment_name="e")
    )
    with caplog.at_level(logging.ERROR, logger="inspect_mlflow"):
        undelivered.on_failure(tags(4), ConnectionRefusedError("refused"))
    assert undelivered.lost == 4
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert "4 write operation(s) could not be saved" in (
        undelivered.message("http://x", default_dir=True) or ""
    )


def test_rows_a_spooled_close_took_along_are_not_spooled_again(tmp_path):
    # A diverted writer: the close is spooled at once by emit (the caller's thread) while
    # the writer thread still holds queued rows of that run and spools them after.
    spool = SpoolWriter(tmp_path, tracking_uri="http://x", experiment_name="e")
    undelivered = Undelivered(spool)
    landed = AppendRows("task:a", "samples.json", ({"id": 1},))
    queued = AppendRows("task:a", "samples.json", ({"id": 2},))
    close = CloseRun("task:a", "FINISHED", 5)
    undelivered.track([landed, queued])
    undelivered.on_sent([landed])
    undelivered.on_failure([close], Diverted("x"))
    undelivered.on_failure([queued], Diverted("x"))
    assert read_spool(spool.path).ops == [landed, queued, close]
    spool.close()
