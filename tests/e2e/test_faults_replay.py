"""Replay against a real store (a sqlite file): a send abandoned mid-call, a replay that
dies half-way, a file in an odd order, operations MLflow refuses for good.

These are the cases where "exactly once" is hard: part of a batch landed before the spool
was written, or part of the file before the replay stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from faults_support import assert_landed_exactly, runs_by_key

from inspect_mlflow._commands.cli import main
from inspect_mlflow._commands.replay import order_for_replay, replay_file
from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    FeedbackData,
    LogArtifact,
    LogMetrics,
    LogParams,
    LogTrace,
    Metric,
    OpenRun,
    Operation,
    SetTags,
    SpanData,
)
from inspect_mlflow._writer.mlflow_sink import MlflowSink
from inspect_mlflow._writer.spool import SpoolWriter, list_spool_files, read_progress, read_spool
from inspect_mlflow._writer.undelivered import Undelivered
from inspect_mlflow._writer.writer import BackgroundWriter

T0 = 1_700_000_000_000


def eval_ops(run_id: str = "r1", samples: int = 6) -> list[Operation]:
    """What an eval's writes look like: two runs, params, step metrics, rows, traces."""
    parent, task = f"eval:{run_id}", f"task:{run_id}"
    ops: list[Operation] = [
        OpenRun(run=parent, kind="eval", name=run_id, parent=None, start_time_ms=T0),
        OpenRun(run=task, kind="task", name=f"t-{run_id}", parent=parent, start_time_ms=T0),
        LogParams(task, {"model": "mockllm/model", "samples": str(samples)}),
        SetTags(task, {"phase": "running"}),
    ]
    for i in range(samples):
        ops += [
            LogMetrics(
                task, (Metric("sample/score", i % 2, i, T0 + i), Metric("calls", i, i, T0 + i))
            ),
            AppendRows(task, "samples.json", ({"id": i, "score": i % 2},)),
            LogTrace(
                run=task,
                trace_key=f"{run_id}-sample-{i}",
                name=f"sample {i}",
                start_time_ns=(T0 + i) * 1_000_000,
                end_time_ns=(T0 + i + 1) * 1_000_000,
                inputs={"q": i},
                outputs={"a": i},
                spans=(
                    SpanData(
                        span_id="g",
                        parent_id=None,
                        name="generate",
                        span_type="LLM",
                        start_time_ns=(T0 + i) * 1_000_000,
                        end_time_ns=(T0 + i) * 1_000_000 + 500,
                    ),
                ),
                feedback=(FeedbackData(name="match", value=float(i % 2)),),
            ),
        ]
    ops += [
        LogMetrics(task, (Metric("accuracy", 0.5, 0, T0 + 99),)),
        LogArtifact(task, "summary.json", {"samples": samples}),
        SetTags(task, {"phase": "done"}),
        CloseRun(task, "FINISHED", T0 + 100),
        CloseRun(parent, "FINISHED", T0 + 101),
    ]
    return ops


def spool_of(directory: Path, ops: Sequence[Operation], uri: str, experiment: str) -> Path:
    writer = SpoolWriter(directory, tracking_uri=uri, experiment_name=experiment)
    writer.append(list(ops))
    writer.close()
    assert writer.path is not None
    return writer.path


class BlockingSink(MlflowSink):
    """A real sink whose n-th ``log_batch`` blocks until released: a server that stopped
    answering in the middle of a request, which comes through later."""

    def __init__(self, *args: Any, block_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_at = block_at
        self.entered = threading.Event()
        self.release = threading.Event()
        self.after_cancel: list[str] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "log_batch" and self.calls["log_batch"] + 1 == self.block_at:
            self.entered.set()
            self.release.wait(30)
            return super()._call(name, *args, **kwargs)  # lands, though abandoned
        cancelled = self.cancelled
        result = super()._call(name, *args, **kwargs)
        if cancelled:
            self.after_cancel.append(name)  # a call that went out after the cancel
        return result


def test_an_abandoned_call_that_lands_late_is_not_duplicated_by_the_replay(sqlite_store, tmp_path):
    ops = eval_ops()
    sink = BlockingSink(
        sqlite_store.tracking_uri,
        sqlite_store.experiment_name,
        artifact_location=sqlite_store.artifact_location,
        block_at=2,
    )
    spool = SpoolWriter(
        tmp_path / "spool",
        tracking_uri=sqlite_store.tracking_uri,
        experiment_name=sqlite_store.experiment_name,
    )
    undelivered = Undelivered(spool, closed_runs=sink.spooled_runs)
    writer = BackgroundWriter(
        sink,
        schedule_delay=0.01,
        max_batch_size=8,
        on_failure=undelivered.on_failure,
        on_sent=undelivered.on_sent,
    )
    undelivered.track(ops)
    writer.emit(ops)
    assert sink.entered.wait(10), "the second log_batch blocks"
    started = time.monotonic()
    assert writer.shutdown(0.5) is False
    assert time.monotonic() - started < 2
    path = spool.path
    assert path is not None

    # While the blocked call may still land, a replay must not touch the file.
    result = replay_file(path)
    assert result.status == "locked"

    sink.release.set()  # the call comes through after all: its points land live
    assert writer.wait_closed(10)
    assert sink.after_cancel == [], "no call after the abandon"
    spool.close()  # the session does this once the writer thread has ended

    result = replay_file(path)
    assert result.status == "delivered", result
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, ops)


class Killed(BaseException):
    """A replay process dying mid-way (not an Exception: nothing catches it)."""


def test_a_replay_that_dies_half_way_resumes_without_duplicates(
    sqlite_store, tmp_path, monkeypatch
):
    ops = eval_ops(samples=10)
    path = spool_of(tmp_path, ops, sqlite_store.tracking_uri, sqlite_store.experiment_name)
    sends = {"n": 0}
    original = MlflowSink.send

    def dying_send(self: MlflowSink, batch: Sequence[Operation]) -> None:
        sends["n"] += 1
        if sends["n"] == 4:
            raise Killed()
        original(self, batch)

    monkeypatch.setattr(MlflowSink, "send", dying_send)
    with pytest.raises(Killed):
        replay_file(path, batch_size=5)
    progress = read_progress(path)
    assert progress["next"] > 0, "progress was recorded before the death"
    monkeypatch.setattr(MlflowSink, "send", original)
    result = replay_file(path, batch_size=5)
    assert result.status == "delivered"
    assert not path.exists() and read_progress(path) == {}
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, ops)


def test_replay_puts_creations_first_and_closes_last(sqlite_store, tmp_path):
    ops = eval_ops()
    # What two threads appending to one file can produce: a close before its rows, data
    # before the run exists, a child before its parent.
    scrambled = ops[::-1]
    ordered = order_for_replay(scrambled)
    assert [type(op).__name__ for op in ordered[:2]] == ["OpenRun", "OpenRun"]
    assert ordered[0].run == "eval:r1", "the parent first"
    assert all(isinstance(op, CloseRun) for op in ordered[-2:])
    path = spool_of(tmp_path, scrambled, sqlite_store.tracking_uri, sqlite_store.experiment_name)
    assert replay_file(path).status == "delivered"
    # Tags: the scrambled file set "running" last; everything else must match exactly.
    landed = [op for op in ops if not isinstance(op, SetTags)]
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, landed)


def test_runs_created_live_are_continued_not_duplicated(sqlite_store, tmp_path):
    ops = eval_ops()
    live, spooled = ops[:10], ops[10:]  # the runs and the first samples landed live
    sink = sqlite_store.sink()
    sink.send(live)
    path = spool_of(tmp_path, spooled, sqlite_store.tracking_uri, sqlite_store.experiment_name)
    assert replay_file(path).status == "delivered"
    # The rows the live sink held in memory were not written (no close): only the
    # spooled ones make the table. The session spools held rows with the close; here
    # the rows of the live part are simply not expected.
    expected = [op for op in ops if not (isinstance(op, AppendRows) and op in live)]
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, expected)


def test_refused_operations_stay_in_the_file_and_the_rest_lands(sqlite_store, tmp_path, capsys):
    ops = eval_ops()
    orphan = LogParams("task:never-created", {"p": "1"})
    path = spool_of(
        tmp_path, [*ops, orphan], sqlite_store.tracking_uri, sqlite_store.experiment_name
    )
    assert main(["replay", "--spool-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 kept" in out and "task:never-created" in out
    assert [op for op in read_spool(path).ops] == [orphan]
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, ops)
    # A second replay tries the kept operation again, and changes nothing else.
    assert main(["replay", "--spool-dir", str(tmp_path)]) == 1
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, ops)
    runs = runs_by_key(sqlite_store.client(), sqlite_store.experiment_name)
    assert sorted(runs) == ["eval:r1", "task:r1"]


def test_tracking_uri_override_and_a_spool_dir_that_is_a_file(sqlite_store, tmp_path, capsys):
    ops = eval_ops()[:4]
    spool_of(tmp_path / "s", ops, "http://127.0.0.1:1", sqlite_store.experiment_name)
    code = main(
        ["replay", "--spool-dir", str(tmp_path / "s"), "--tracking-uri", sqlite_store.tracking_uri]
    )
    assert code == 0
    assert list_spool_files(tmp_path / "s") == []
    (tmp_path / "f").write_text("x")
    assert main(["replay", "--spool-dir", str(tmp_path / "f")]) == 2
    assert "not a directory" in capsys.readouterr().err


class SlowSink(MlflowSink):
    """A real sink behind a slow link: every send takes a while."""

    def send(self, ops: Sequence[Operation]) -> None:
        time.sleep(0.05)
        super().send(ops)


def test_a_server_slower_than_the_eval_spills_to_the_spool_with_bounded_memory(
    sqlite_store, tmp_path
):
    ops = eval_ops("slow", samples=60)
    sink = SlowSink(
        sqlite_store.tracking_uri,
        sqlite_store.experiment_name,
        artifact_location=sqlite_store.artifact_location,
    )
    spool = SpoolWriter(
        tmp_path,
        tracking_uri=sqlite_store.tracking_uri,
        experiment_name=sqlite_store.experiment_name,
    )
    holder: dict[str, BackgroundWriter] = {}
    undelivered = Undelivered(
        spool, on_gone=lambda: holder["writer"].divert(), closed_runs=sink.spooled_runs
    )
    writer = holder["writer"] = BackgroundWriter(
        sink,
        max_queue_size=20,
        max_batch_size=5,
        schedule_delay=0.01,
        on_failure=undelivered.on_failure,
        on_sent=undelivered.on_sent,
    )
    peak = 0
    for i in range(0, len(ops), 3):  # the eval: faster than the sink
        undelivered.track(ops[i : i + 3])
        writer.emit(ops[i : i + 3])
        peak = max(
            peak, writer.stats["emitted"] - writer.stats["ops_sent"] - writer.stats["ops_failed"]
        )
    assert writer.flush(30)
    writer.shutdown(10)
    spool.close()
    assert peak <= 20 + 5, "never more than the queue (and one batch in flight) in memory"
    assert writer.stats["overflow"] > 0 and undelivered.gone
    assert undelivered.spooled > len(ops) // 2, "the excess went to the spool"
    assert sink.calls["log_batch"] > 0, "what fitted was delivered live"
    assert replay_file(spool.path).status == "delivered"
    assert_landed_exactly(sqlite_store.tracking_uri, sqlite_store.experiment_name, ops)
