"""What an MLflow failure means for delivery: worth a retry, or refused for good.

The sink and the trace sender judge errors with the same :func:`classify`, so a trace
and a run's tags that fail the same way get the same verdict (retried, or handed on as
failed). The exceptions here are the sink's own ways of saying that a step, or the
whole sink, stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import requests
from mlflow.exceptions import MlflowException

from inspect_mlflow._operations import Operation
from inspect_mlflow._writer.sink import Rejection, SinkError

__all__ = [
    "Refused",
    "SinkCancelled",
    "StepFailed",
    "classify",
    "is_run_level",
    "reason",
    "retry_later",
]

TRANSIENT_CODES = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
    }
)
"""MLflow error codes worth retrying (HTTP 5xx and 429, connection failures)."""

RUN_LEVEL_CODES = frozenset(
    {"RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"}
)
"""Error codes that concern the whole run or the caller, not one value of a batch."""


def classify(error: BaseException) -> tuple[bool, str]:
    """Say whether an error from an MLflow call is transient, and name its kind.

    Connection failures and timeouts reach us as :class:`MlflowException` with the
    ``requests`` error as cause or context, or as the ``requests`` error itself.

    Returns:
        ``(transient, kind)``; ``kind`` is an MLflow error code or an exception name.
    """
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)) or isinstance(
            seen, (ConnectionError, TimeoutError)
        ):
            return True, type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, MlflowException):
        # The REST client maps HTTP statuses to these codes (429 -> RESOURCE_EXHAUSTED,
        # 503 -> TEMPORARILY_UNAVAILABLE, 504 -> DEADLINE_EXCEEDED, other 5xx and 408 ->
        # INTERNAL_ERROR), so the code alone decides.
        code = str(error.error_code)
        return code in TRANSIENT_CODES, code
    kind = getattr(error, "kind", None)
    return False, kind if isinstance(kind, str) else type(error).__name__


def reason(error: BaseException) -> str:
    """The error's message for a report (MLflow's own text), at most 500 characters."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text)[:500]


def is_run_level(error: BaseException) -> bool:
    """Whether MLflow refused a request for its run (gone, not active, not allowed)."""
    if not isinstance(error, MlflowException):
        return False
    return error.error_code in RUN_LEVEL_CODES or "must be in the 'active' state" in str(
        error.message
    )


class StepFailed(Exception):
    """A step of a batch's plan did not (entirely) land.

    ``failed`` are indices of operations refused for good (None: the whole step);
    ``pending`` are indices to send again after the transient ``error``.
    """

    def __init__(
        self,
        error: BaseException,
        failed: Iterable[int] | None = None,
        pending: Iterable[int] = (),
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.failed = None if failed is None else set(failed)
        self.pending = set(pending)


class SinkCancelled(ConnectionAbortedError):
    """The sink was cancelled (its writer gave up on it): no further MLflow call is made.

    A connection error on purpose: what was not sent is pending, not refused (the writer
    that cancelled the sink has handed it to the spool).
    """

    kind = "cancelled"


class Refused(Exception):
    """A permanent problem the sink finds itself, before asking MLflow."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def retry_later(
    error: BaseException,
    ops: Sequence[Operation],
    pending: set[int],
    failed: set[int],
    rejected: list[Rejection],
) -> SinkError:
    """The error for a batch stopped by a transient failure: what to send again, what not."""
    kind = classify(error)[1]
    raised = SinkError(
        f"MLflow call failed ({kind}): {reason(error)}",
        transient=True,
        kind=kind,
        pending=[ops[i] for i in sorted(pending - failed)],
        failed=[ops[i] for i in sorted(failed)],
        rejected=rejected,
    )
    raised.__cause__ = error
    return raised
