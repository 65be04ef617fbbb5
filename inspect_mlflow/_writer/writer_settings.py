"""The background writer's settings, checked once, and the retry delay they give.

Why a module of its own: every number here bounds what the writer holds or how long it
waits, so each is checked when the writer is built (a wrong one fails there, with its
name in the message, rather than as a stalled delivery later).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

__all__ = ["WriterSettings"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {bound} (seconds), got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """Sizes and delays of a :class:`~inspect_mlflow._writer.writer.BackgroundWriter`.

    Raises:
        ValueError: A setting is out of range; the message names it.
    """

    max_queue_size: int
    max_batch_size: int
    schedule_delay: float
    retry_timeout: float
    backoff: float
    max_backoff: float

    def __post_init__(self) -> None:
        queue = _positive_int("max_queue_size", self.max_queue_size)
        batch = _positive_int("max_batch_size", self.max_batch_size)
        if batch > queue:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) must not exceed "
                f"max_queue_size ({self.max_queue_size})"
            )
        seconds = {
            "schedule_delay": _seconds("schedule_delay", self.schedule_delay),
            "retry_timeout": _seconds("retry_timeout", self.retry_timeout, allow_zero=True),
            "backoff": _seconds("backoff", self.backoff),
            "max_backoff": _seconds("max_backoff", self.max_backoff),
        }
        if seconds["max_backoff"] < seconds["backoff"]:
            raise ValueError(
                f"max_backoff ({self.max_backoff}) must be >= backoff ({self.backoff})"
            )
        for name, value in seconds.items():
            object.__setattr__(self, name, value)

    def retry_delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds before retry ``attempt`` (0 first): doubling, with jitter, capped.

        A failure with a ``retry_after`` (a server that did not answer its health check)
        caps the delay: asking again is cheap, and the server may be back any moment.
        """
        delay = min(self.max_backoff, self.backoff * (2**attempt))
        delay *= random.uniform(0.5, 1.0)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool):
            delay = min(delay, max(0.0, float(retry_after)))
        return delay
