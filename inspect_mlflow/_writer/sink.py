"""The seam between the background writer and a storage backend.

A :class:`Sink` receives batches of plain operations, in order, from exactly one thread
(the writer's). It either delivers the whole batch or raises :class:`SinkError`, which
says what was delivered, what may be retried and what can never land. The writer needs
nothing else to batch, retry, isolate bad values and (later) spool what is left.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from inspect_mlflow._operations import Operation


@dataclass(frozen=True, slots=True)
class Rejection:
    """One value a backend refused for good (the rest of its batch landed)."""

    run: str
    """Logical key of the run the value was meant for."""
    key: str
    """Param, tag or metric key, or artifact path."""
    reason: str
    """The backend's message, for the run-end summary."""


class SinkError(Exception):
    """A batch was not (entirely) delivered.

    The three tuples partition what did not land; everything else in the batch did.
    ``transient`` is true when the stop was caused by an error worth retrying
    (connection refused, timeout, HTTP 5xx or 429) and ``pending`` holds the operations
    to send again, in their original order.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        kind: str = "error",
        pending: Sequence[Operation] = (),
        failed: Sequence[Operation] = (),
        rejected: Sequence[Rejection] = (),
        retry_after: float | None = None,
    ) -> None:
        """Describe a partly delivered batch.

        Args:
            message: What went wrong, for logs.
            transient: True when retrying ``pending`` later may succeed.
            kind: A short, stable name of the failure (an MLflow error code, an exception
                class name); the writer warns once per kind.
            pending: Operations not delivered that may be sent again, in order.
            failed: Operations that can never be delivered by this sink as they are.
            rejected: Single values refused by the backend while the rest of their
                operation landed.
            retry_after: Seconds after which a retry is worth it at the latest (a probe
                of a server that did not answer: asking again is cheap); None lets the
                writer's backoff decide.
        """
        super().__init__(message)
        self.transient = transient
        self.kind = kind
        self.pending: tuple[Operation, ...] = tuple(pending)
        self.failed: tuple[Operation, ...] = tuple(failed)
        self.rejected: tuple[Rejection, ...] = tuple(rejected)
        self.retry_after = retry_after


class Sink(Protocol):
    """Where the background writer delivers operations.

    Both methods are called only from the writer's thread, one call at a time, so an
    implementation needs no locking of its own. ``send`` may take as long as the backend
    needs; the writer never calls it on the event loop.
    """

    def send(self, ops: Sequence[Operation]) -> None:
        """Deliver ``ops`` in order, or raise :class:`SinkError` (or any exception).

        An exception other than :class:`SinkError` means nothing in ``ops`` is known to
        have landed; it counts as transient when it is a :class:`ConnectionError` or
        :class:`TimeoutError` or has a true ``transient`` attribute.
        """
        ...

    def close(self) -> None:
        """Release connections and per-run state; called once, after the last send."""
        ...


class MemorySink:
    """A sink that keeps what it receives, for tests of the writer and the engine.

    Unlike the writer's own state it may be read from any thread: a lock guards it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: list[Operation] = []
        self._batches: list[tuple[Operation, ...]] = []
        self.closed = False

    def send(self, ops: Sequence[Operation]) -> None:
        """Record one batch."""
        batch = tuple(ops)
        with self._lock:
            self._batches.append(batch)
            self._ops.extend(batch)

    def close(self) -> None:
        """Mark the sink closed (sending afterwards still records, for inspection)."""
        self.closed = True

    @property
    def ops(self) -> list[Operation]:
        """Every operation received, in delivery order (a copy)."""
        with self._lock:
            return list(self._ops)

    @property
    def batches(self) -> list[tuple[Operation, ...]]:
        """The batches as received (a copy)."""
        with self._lock:
            return list(self._batches)
