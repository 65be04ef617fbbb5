"""What becomes of the operations the writer accepts: counted, and if not delivered, handed on.

Every operation the background writer accepts is either sent or handed on, never dropped
silently (:data:`STATS` counts which): to ``on_failure`` with the reason (one of the
exceptions here, or the sink's error), and a single refused value to ``on_rejected``.
:class:`KeptProblems` is what the writer does by default: keep them, warn once per kind,
and sum them up at run end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from inspect_mlflow._operations import Operation
from inspect_mlflow._writer.sink import Rejection, SinkError

__all__ = [
    "STATS",
    "DeadlinePassed",
    "Diverted",
    "FailureCallback",
    "KeptProblems",
    "QueueFull",
    "RejectedCallback",
    "SentCallback",
    "WriterClosed",
    "is_transient",
    "kind_of",
]

STATS = (
    "emitted",  # operations accepted into the queue
    "batches_sent",  # sink.send calls that delivered their whole batch
    "ops_sent",  # operations delivered
    "send_errors",  # sink.send calls that raised
    "retries",  # sends repeated after a transient failure
    "ops_failed",  # operations handed to on_failure
    "rejected",  # single values refused by the backend (reported to on_rejected)
    "overflow",  # operations refused by emit because the queue was full
)
"""Names of the counters in :attr:`BackgroundWriter.stats`."""

FailureCallback = Callable[[list[Operation], BaseException], None]
"""``on_failure(ops, error)``: ``ops`` will not be delivered; called on the writer thread
(or on the caller's thread for a full queue or a closed writer)."""

RejectedCallback = Callable[[str, str, str], None]
"""``on_rejected(run, key, reason)``: one value was refused; called on the writer thread."""

SentCallback = Callable[[list[Operation]], None]
"""``on_sent(ops)``: these operations landed; called on the writer thread."""


class WriterClosed(Exception):
    """Operations were emitted after :meth:`BackgroundWriter.shutdown`."""

    kind = "writer_closed"


class QueueFull(Exception):
    """Operations did not fit in the writer's queue (``max_queue_size``)."""

    kind = "queue_full"


class DeadlinePassed(Exception):
    """The shutdown deadline passed before the operations could be sent."""

    kind = "deadline"


class Diverted(Exception):
    """The writer was told to stop sending (:meth:`BackgroundWriter.divert`)."""

    kind = "diverted"


def is_transient(error: BaseException) -> bool:
    """Whether a plain exception from a sink is worth retrying."""
    if isinstance(error, SinkError):
        return error.transient
    if getattr(error, "transient", False) is True:
        return True
    return isinstance(error, (ConnectionError, TimeoutError))


def kind_of(error: BaseException) -> str:
    """The short name of a failure: its ``kind`` when it has one, else its class name."""
    kind = getattr(error, "kind", None)
    return kind if isinstance(kind, str) else type(error).__name__


class KeptProblems:
    """The default ``on_failure`` and ``on_rejected``: keep what did not land, warn once.

    Any thread may call it; a lock guards what it keeps.
    """

    def __init__(self, logger: logging.Logger) -> None:
        """Keep nothing yet; warnings go to ``logger`` (the writer's)."""
        self._logger = logger
        self._lock = threading.Lock()
        self._failed: list[Operation] = []
        self._rejected: list[Rejection] = []
        self._warned: set[str] = set()

    def keep_failed(self, ops: list[Operation], error: BaseException) -> None:
        """Keep undelivered operations; warn the first time this kind of error is seen."""
        kind = kind_of(error)
        with self._lock:
            self._failed.extend(ops)
            first = kind not in self._warned
            self._warned.add(kind)
        if first:
            self._logger.warning(
                "inspect-mlflow: %d write operation(s) not delivered (%s): %s",
                len(ops),
                kind,
                error,
            )

    def keep_rejected(self, run: str, key: str, reason: str) -> None:
        """Keep a refused value; warn the first time this key is refused."""
        with self._lock:
            self._rejected.append(Rejection(run, key, reason))
            first = f"rejected:{key}" not in self._warned
            self._warned.add(f"rejected:{key}")
        if first:
            self._logger.warning("inspect-mlflow: %r on run %s was rejected: %s", key, run, reason)

    @property
    def failed(self) -> list[Operation]:
        """Operations kept, oldest first (a copy)."""
        with self._lock:
            return list(self._failed)

    @property
    def rejected(self) -> list[Rejection]:
        """Values kept (a copy)."""
        with self._lock:
            return list(self._rejected)

    def take_failed(self) -> list[Operation]:
        """Remove and return the kept operations."""
        with self._lock:
            taken, self._failed = self._failed, []
            return taken

    def summary(self, stats: Mapping[str, int], *, undelivered: bool) -> list[str]:
        """One line per kind of problem, from the writer's counters and the kept values."""
        rejected = self.rejected
        lines: list[str] = []
        if undelivered and stats["ops_failed"]:
            lines.append(f"{stats['ops_failed']} write operation(s) could not be delivered")
        if stats["rejected"]:
            by_key: dict[str, list[Rejection]] = {}
            for r in rejected:
                by_key.setdefault(r.key, []).append(r)
            shown = ", ".join(
                f"{key}{f' x{len(rs)}' if len(rs) > 1 else ''} ({rs[0].reason[:80]})"
                for key, rs in list(by_key.items())[:5]
            )
            more = f" and {len(by_key) - 5} more key(s)" if len(by_key) > 5 else ""
            lines.append(f"{stats['rejected']} value(s) rejected by the backend: {shown}{more}")
        return lines
