"""``inspect-mlflow replay``: deliver spooled write operations to MLflow, exactly once.

Each spool file (oldest first) is replayed through the same :class:`MlflowSink` the
hook uses, with ``resume=True``, so that:

- a run is looked up by its logical key (the ``inspect_mlflow.run_key`` tag) before it
  is created: a run that reached the server earlier is continued, one that never did is
  created now, and running replay twice creates nothing twice;
- metric points already stored (same key, step, timestamp and value) are skipped, so a
  point that landed before the spool was written, or in an earlier replay that stopped
  half-way, is not duplicated; params, tags, artifacts and traces are idempotent by
  themselves (same values, same paths, deterministic trace ids).

Order: run creations first (parents before children), then the data in file order, then
run closes, which write the runs' tables. A file is written by one process but possibly
from two threads, so this order, not the line order, is what guarantees that a run
exists before it is written to and that a table has all its rows when it is written.

Progress is recorded beside the file after each batch (temp file + ``os.replace``), so a
replay that dies resumes where it stopped. What was delivered is removed: a fully
delivered file is deleted; one with operations MLflow refused for good is rewritten with
just those (and reported), for a later replay after the cause is fixed.

A file still locked by the process that writes it (an eval still running, or a writer
thread still waiting on a server) is skipped and reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspect_mlflow._operations import (
    AppendRows,
    CloseRun,
    LogArtifact,
    LogMetrics,
    LogParams,
    LogTrace,
    Metric,
    OpenRun,
    Operation,
    SetTags,
)
from inspect_mlflow._writer.spool import (
    SpoolError,
    SpoolFile,
    list_spool_files,
    locked,
    read_progress,
    read_spool,
    remove_spool,
    replay_lock,
    rewrite_spool,
    write_progress,
)

__all__ = ["FileResult", "order_for_replay", "replay", "replay_file"]

BATCH_SIZE = 500
"""Operations per send (and per progress record)."""

TRANSIENT_ATTEMPTS = 4
"""Sends of one batch before a replay gives up on a server that keeps failing."""

_STOPPING_KINDS = frozenset(
    {
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "CUSTOMER_UNAUTHORIZED",
        "experiment_deleted",
    }
)
"""Refusals that concern every operation of the file: stop and keep the rest."""

Printer = Callable[[str], None]


@dataclass
class FileResult:
    """What a replay did with one spool file."""

    path: Path
    status: str
    """``delivered`` (file removed), ``partial`` (some operations kept), ``locked``,
    ``unreachable``, ``invalid`` or ``failed``."""
    delivered: int = 0
    left: int = 0
    """Operations still in the file afterwards."""
    message: str = ""
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """``(run, key, reason)`` of values MLflow refused (reported, not kept)."""


# -- order -----------------------------------------------------------------------------


def order_for_replay(ops: Sequence[Operation]) -> list[Operation]:
    """Run creations first (parents first), then the rest in file order, then closes.

    A repeated ``OpenRun`` of one run keeps its first occurrence.
    """
    opens: dict[str, OpenRun] = {}
    middle: list[Operation] = []
    closes: list[Operation] = []
    for op in ops:
        if isinstance(op, OpenRun):
            opens.setdefault(op.run, op)
        elif isinstance(op, CloseRun):
            closes.append(op)
        else:
            middle.append(op)
    ordered: list[Operation] = []
    placed: set[str] = set()

    def place(run: str, trail: frozenset[str]) -> None:
        if run in placed or run in trail or run not in opens:
            return
        parent = opens[run].parent
        if parent is not None:
            place(parent, trail | {run})
        placed.add(run)
        ordered.append(opens[run])

    for run in opens:
        place(run, frozenset())
    return ordered + middle + closes


def _runs_referenced(ops: Iterable[Operation]) -> set[str]:
    runs: set[str] = set()
    for op in ops:
        runs.add(op.run)
        if isinstance(op, OpenRun) and op.parent is not None:
            runs.add(op.parent)
    return runs


# -- what is there already ---------------------------------------------------------------


class _Existing:
    """Runs and metric points already in MLflow, read once per file before sending.

    Reads through a separate MLflow sink (this module does not talk to MLflow itself).
    """

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        from inspect_mlflow._writer.mlflow_sink import MlflowSink

        self.reader = MlflowSink(tracking_uri, experiment_name)
        self.run_ids: dict[str, str] = {}
        self.points: dict[tuple[str, str], set[tuple[int, int, str]]] = {}

    def load(self, ops: Sequence[Operation]) -> None:
        found = self.reader.find_runs(sorted(_runs_referenced(ops)))
        self.run_ids = {run: existing.info.run_id for run, existing in found.items()}
        keys = {
            (op.run, m.key)
            for op in ops
            if isinstance(op, LogMetrics) and op.run in self.run_ids
            for m in op.metrics
        }
        for run, key in sorted(keys):
            self.points[(run, key)] = {
                (step, timestamp, _value_key(value))
                for step, timestamp, value in self.reader.metric_points(self.run_ids[run], key)
            }

    def new_points(self, op: LogMetrics) -> LogMetrics | None:
        """``op`` without the points MLflow has already; None when none is left."""
        kept: list[Metric] = []
        for m in op.metrics:
            seen = self.points.get((op.run, m.key))
            if seen is None:
                kept.append(m)
                continue
            point = (int(m.step), int(m.timestamp_ms), _value_key(m.value))
            if point not in seen:
                seen.add(point)
                kept.append(m)
        if not kept:
            return None
        return op if len(kept) == len(op.metrics) else LogMetrics(op.run, tuple(kept))


def _value_key(value: Any) -> str:
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return repr(value)


# -- replay ------------------------------------------------------------------------------


def _describe(op: Operation) -> str:
    if isinstance(op, (OpenRun, CloseRun, SetTags, LogParams, LogMetrics)):
        return f"{type(op).__name__}({op.run})"
    if isinstance(op, (AppendRows, LogArtifact)):
        return f"{type(op).__name__}({op.run}, {op.path})"
    if isinstance(op, LogTrace):
        return f"LogTrace({op.run}, {op.trace_key})"
    return type(op).__name__


def replay_file(
    path: Path,
    *,
    tracking_uri: str | None = None,
    batch_size: int = BATCH_SIZE,
    backoff: float = 1.0,
) -> FileResult:
    """Deliver one spool file; see the module docstring for the guarantees.

    Args:
        path: The spool file.
        tracking_uri: Deliver here instead of the URI recorded in the file.
        batch_size: Operations per send and per progress record.
        backoff: First wait in seconds before resending a batch after a transient error.

    Returns:
        What happened; the file is removed, rewritten or left alone accordingly.
    """
    with locked(path) as free:
        if not free:
            return FileResult(
                path,
                "locked",
                message="still being written by a running process; replay it when that "
                "process has ended",
            )
        try:
            spool = read_spool(path)
        except SpoolError as error:
            return FileResult(path, "invalid", message=str(error))
        return _replay_spool(spool, tracking_uri, batch_size, backoff)


def _replay_spool(
    spool: SpoolFile, tracking_uri: str | None, batch_size: int, backoff: float
) -> FileResult:
    from inspect_mlflow._delivery.pipeline import Pipeline, environment_secrets
    from inspect_mlflow._writer.mlflow_sink import MlflowSink
    from inspect_mlflow._writer.reachability import Reachability
    from inspect_mlflow._writer.sink import SinkError

    uri = tracking_uri or spool.tracking_uri
    if not uri or not spool.experiment_name:
        return FileResult(spool.path, "invalid", message="the file names no tracking URI")
    # Spooled operations enter the live path's chain after its engine: scrubbed, since a
    # file spooled by an older version, or written while another credential was set, must
    # not deliver the credentials of this environment; delivered to a list sent below in
    # batches that resume where an earlier replay stopped.
    scrubbed: list[Operation] = []
    Pipeline(None, scrubbed.extend, environment_secrets(uri)).emit(list(spool.ops))
    ops = order_for_replay(scrubbed)
    progress = read_progress(spool.path)
    start = progress.get("next", 0) if isinstance(progress.get("next"), int) else 0
    start = max(0, min(start, len(ops)))
    failed: set[int] = {i for i in progress.get("failed", []) if isinstance(i, int) and i < start}

    probe = Reachability(uri)
    try:
        probe.check()
        existing = _Existing(uri, spool.experiment_name)
        existing.load(ops[start:])
    except Exception as error:
        return FileResult(
            spool.path, "unreachable", left=len(ops), message=f"{uri}: {_short(error)}"
        )

    # Runs written to but not created by what is left to send (created live, or by
    # the part of an earlier replay that stopped): adopt them by key, never create.
    opened = {op.run for op in ops[start:] if isinstance(op, OpenRun)}
    adopt: list[Operation] = [
        OpenRun(run=run, kind=run.partition(":")[0], name=None, parent=None)
        for run in sorted(existing.run_ids)
        if run not in opened
    ]
    sink = MlflowSink(
        uri,
        spool.experiment_name,
        resume=True,
        trace_options=spool.header.get("trace_options") or None,
    )
    result = FileResult(spool.path, "delivered")
    rows_from: dict[str, int] = {}  # run -> first index of rows not yet written by a close
    position = start
    try:
        if adopt:
            sink.send(adopt)
        while position < len(ops):
            end = min(len(ops), position + batch_size)
            batch_ops: list[Operation] = []
            index_of: dict[int, int] = {}
            for i in range(position, end):
                op = ops[i]
                if isinstance(op, LogMetrics):
                    trimmed = existing.new_points(op)
                    if trimmed is None:
                        continue
                    op = trimmed
                if isinstance(op, AppendRows):
                    rows_from.setdefault(op.run, i)
                index_of[id(op)] = i
                batch_ops.append(op)
            stop = _send(sink, probe, batch_ops, index_of, failed, result, backoff, SinkError)
            if stop is not None:
                result.status = "unreachable" if stop[0] else "failed"
                result.message = stop[1]
                result.delivered += (
                    stop[2] - position - len([i for i in failed if position <= i < stop[2]])
                )
                position = stop[2]
                failed = {i for i in failed if i < position}  # sent again next time
                break
            for i in range(position, end):
                op = ops[i]
                if isinstance(op, CloseRun) and i not in failed:
                    rows_from.pop(op.run, None)
            result.delivered += end - position - len([i for i in failed if position <= i < end])
            position = end
            safe = min([position, *rows_from.values()])
            write_progress(spool.path, {"next": safe, "failed": sorted(failed)})
    finally:
        sink.close()
        probe.close()
    left = [ops[i] for i in sorted(failed)] + list(ops[position:])
    result.left = len(left)
    if not left:
        remove_spool(spool.path)
        result.status = "delivered"
    else:
        rewrite_spool(spool, left)
        remove_spool_progress(spool.path)
        if result.status == "delivered":
            result.status = "partial"
            result.message = f"{len(failed)} operation(s) refused: " + ", ".join(
                _describe(ops[i]) for i in sorted(failed)[:5]
            )
    return result


def remove_spool_progress(path: Path) -> None:
    """Forget the progress of a file that was just rewritten (its indexes changed)."""
    from inspect_mlflow._writer.spool import PROGRESS_SUFFIX

    progress = path.with_name(path.name + PROGRESS_SUFFIX)
    try:
        progress.unlink()
    except FileNotFoundError:
        pass


def _send(
    sink: Any,
    probe: Any,
    batch: list[Operation],
    index_of: dict[int, int],
    failed: set[int],
    result: FileResult,
    backoff: float,
    sink_error: type,
) -> tuple[bool, str, int] | None:
    """Send one batch with a few retries; None when done, else (transient, why, resume at)."""
    pending = batch
    delay = backoff
    for attempt in range(TRANSIENT_ATTEMPTS):
        if not pending:
            return None
        try:
            probe.check()
            sink.send(pending)
            return None
        except sink_error as error:
            result.rejected.extend((r.run, r.key, r.reason) for r in error.rejected)
            failed.update(index_of[id(op)] for op in error.failed)
            kind = getattr(error, "kind", "")
            if error.failed and kind in _STOPPING_KINDS:
                first = min(index_of[id(op)] for op in error.failed)
                failed.difference_update(i for i in list(failed) if i >= first)
                return False, f"MLflow refused the writes ({kind}): {error}", first
            if not error.pending:
                return None
            pending = list(error.pending)
            last = f"{kind}: {error}"
        except Exception as error:
            last = _short(error)
        if attempt + 1 < TRANSIENT_ATTEMPTS:
            time.sleep(delay)
            delay *= 2
    return True, last, min(index_of[id(op)] for op in pending)


def _short(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text).splitlines()[0][:300]


def replay(
    directory: Path,
    *,
    tracking_uri: str | None = None,
    out: Printer = print,
    batch_size: int = BATCH_SIZE,
) -> list[FileResult]:
    """Replay every spool file of ``directory``, oldest first, printing one line each.

    Raises:
        SpoolError: Another replay of the same directory is running.
    """
    from inspect_mlflow._delivery.pipeline import Pipeline, environment_secrets

    files = list_spool_files(directory)
    if not files:
        out(f"nothing to replay in {directory}")
        return []
    pipeline = Pipeline(None, None, environment_secrets(tracking_uri))

    def say(line: str) -> None:  # an error or a refused value may quote a credential
        out(pipeline.scrubber.text(line))

    results: list[FileResult] = []
    with replay_lock(directory) as free, pipeline.scrubbing_logs():
        if not free:
            raise SpoolError(f"another replay of {directory} is running")
        for path in files:
            result = replay_file(path, tracking_uri=tracking_uri, batch_size=batch_size)
            results.append(result)
            say(_line(result))
            for run, key, reason in result.rejected[:20]:
                say(f"  rejected: {key!r} on {run}: {reason}")
            if len(result.rejected) > 20:
                say(f"  ... and {len(result.rejected) - 20} more rejected value(s)")
    return results


def _line(result: FileResult) -> str:
    name = result.path.name
    if result.status == "delivered":
        return f"{name}: delivered {result.delivered} operation(s); file removed"
    if result.status == "partial":
        return (
            f"{name}: delivered {result.delivered} operation(s); {result.left} kept "
            f"({result.message})"
        )
    if result.status == "locked":
        return f"{name}: skipped, {result.message}"
    return f"{name}: {result.status}: {result.message}; {result.left} operation(s) kept"
