"""What happens to writes the background writer could not deliver: they go to the spool.

A session plugs :class:`Undelivered` into its writer (``on_failure`` and ``on_sent``) and
shows it every operation it emits (:meth:`Undelivered.track`). It:

- appends undelivered operations to the session's spool file (fsynced, mode 0600);
- keeps a table's rows with their run: rows are only written when their run closes, so
  the sink holds delivered rows in memory until then. When a run's close goes to the
  spool, the rows the sink was holding for it go too (they would be lost otherwise);
- asks for a *divert* (everything else goes to the spool, in order) on a failure that
  says the backend is gone or too slow: a full queue, retries exhausted, a deadline;
- warns once per kind of refusal that retrying will not fix (permission denied, an
  experiment deleted), and produces the one run-end message: how much was spooled,
  where, and the command that delivers it.

Threading: ``track`` runs on the event loop; ``on_failure`` on the writer thread or the
caller's; ``on_sent`` on the writer thread. One lock guards the state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from inspect_mlflow._operations import AppendRows, CloseRun, Operation
from inspect_mlflow._writer.spool import SpoolError, SpoolWriter

logger = logging.getLogger(__name__)

__all__ = ["Undelivered"]

_GONE_KINDS = frozenset({"queue_full", "deadline", "diverted", "writer_closed"})
"""Failure kinds that mean "the backend cannot keep up", whatever the error class."""


def _backend_gone(error: BaseException) -> bool:
    kind = getattr(error, "kind", None)
    if kind in _GONE_KINDS:
        return True
    if getattr(error, "transient", False) is True:
        return True
    return isinstance(error, (ConnectionError, TimeoutError))


class Undelivered:
    """Spools what the writer cannot deliver and reports it once per run."""

    def __init__(
        self,
        spool: SpoolWriter,
        *,
        on_gone: Callable[[], None] | None = None,
        closed_runs: set[str] | None = None,
    ) -> None:
        """Wire the spool.

        Args:
            spool: The session's spool file (created on the first write).
            on_gone: Called (once) when a failure says the backend is gone or too slow;
                the session diverts its writer there.
            closed_runs: Filled with the runs whose close was spooled (the sink's
                ``spooled_runs``, so it does not warn about rows that went along).
        """
        self.spool = spool
        self._on_gone = on_gone
        self.closed_runs = closed_runs if closed_runs is not None else set()
        self._lock = threading.Lock()
        self._rows: dict[str, dict[int, AppendRows]] = {}
        # Rows a spooled close took along while they were still queued in the writer:
        # when the writer hands them on as well, they are in the spool already.
        self._carried: dict[int, AppendRows] = {}
        self._gone = False
        self._warned: set[str] = set()
        self._reported = 0
        self.lost = 0
        """Operations that could not even be spooled (the spool failed)."""
        self.kinds: dict[str, int] = {}
        """Spooled operations by kind of failure."""

    @property
    def spooled(self) -> int:
        """Operations written to the spool so far."""
        return self.spool.count

    @property
    def gone(self) -> bool:
        """True once a failure said the backend is gone (the writer was diverted)."""
        return self._gone

    # -- writer callbacks -------------------------------------------------------------

    def track(self, ops: Sequence[Operation]) -> None:
        """See operations before they are queued (remembers table rows by run)."""
        rows = [op for op in ops if isinstance(op, AppendRows)]
        if not rows:
            return
        with self._lock:
            for op in rows:
                self._rows.setdefault(op.run, {})[id(op)] = op

    def on_sent(self, ops: Sequence[Operation]) -> None:
        """A run whose close landed no longer needs its rows kept."""
        closes = [op.run for op in ops if isinstance(op, CloseRun)]
        with self._lock:
            for run in closes:
                self._rows.pop(run, None)
            if self._carried:
                for op in ops:
                    self._carried.pop(id(op), None)

    def on_failure(self, ops: list[Operation], error: BaseException) -> None:
        """Spool ``ops`` (with the held rows of any run they close)."""
        kind = getattr(error, "kind", None)
        kind = kind if isinstance(kind, str) else type(error).__name__
        with self._lock:
            out: list[Operation] = []
            for op in ops:
                if isinstance(op, AppendRows):
                    if self._carried.pop(id(op), None) is not None:
                        continue  # a spooled close took it along already
                    self._rows.get(op.run, {}).pop(id(op), None)
                elif isinstance(op, CloseRun):
                    held = self._rows.pop(op.run, {})
                    out.extend(held.values())
                    self._carried.update(held)
                    self.closed_runs.add(op.run)
                out.append(op)
            gone = _backend_gone(error)
            first_gone = gone and not self._gone
            self._gone = self._gone or gone
            warn = not gone and kind not in self._warned
            self._warned.add(kind)
        try:
            self.spool.append(out)
        except SpoolError as spool_error:
            with self._lock:
                self.lost += len(out)
                first = "spool" not in self._warned
                self._warned.add("spool")
            if first:
                logger.error(
                    "inspect-mlflow: %d write operation(s) could not be delivered (%s) nor "
                    "saved: %s",
                    len(out),
                    kind,
                    spool_error,
                )
        else:
            with self._lock:
                self.kinds[kind] = self.kinds.get(kind, 0) + len(out)
            if warn:
                logger.warning(
                    "inspect-mlflow: MLflow refused %d write operation(s) (%s): %s; they are "
                    "kept in %s for `inspect-mlflow replay`",
                    len(out),
                    kind,
                    str(error)[:300],
                    self.spool.path,
                )
        if first_gone and self._on_gone is not None:
            self._on_gone()

    # -- reporting --------------------------------------------------------------------

    def message(self, tracking_uri: str, default_dir: bool) -> str | None:
        """The run-end message for what was spooled since the last one (None: nothing).

        Args:
            tracking_uri: Where the writes were meant to go (without credentials).
            default_dir: Whether the spool is in the default directory (then the replay
                command needs no ``--spool-dir``).
        """
        total = self.spool.count
        new = total - self._reported
        self._reported = total
        parts: list[str] = []
        if new > 0:
            path = self.spool.path
            directory = "" if default_dir else f" --spool-dir {_quote(self.spool.directory)}"
            parts.append(
                f"{new} write operation(s) could not be delivered to {tracking_uri} and were "
                f"saved to {path}. Deliver them with: inspect-mlflow replay{directory}"
            )
        if self.lost:
            parts.append(f"{self.lost} write operation(s) could not be saved and are lost")
        return "; ".join(parts) or None


def _quote(path: Path) -> str:
    text = str(path)
    return f"'{text}'" if any(c in text for c in " \t'\"$") else text
