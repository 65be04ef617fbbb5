"""Time functions of the mapping language: durations, nanoseconds, local text, extremes.

Inspect gives times as ISO-8601 text (with or without fractions and offsets); MLflow
wants epoch milliseconds or nanoseconds. These functions take either form, a time
without an offset being UTC.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import jmespath
from jmespath.functions import Functions, signature

from inspect_mlflow._mapping.functions_base import FunctionValueError, is_number

__all__ = ["EXAMPLES", "TimeFunctions"]

_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _parse_time(function_name: str, value: Any) -> datetime | Decimal:
    """An ISO-8601 string as an aware datetime (naive means UTC), or epoch seconds."""
    if is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise FunctionValueError(function_name, f"time is not finite: {value!r}")
        return Decimal(str(value))
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: pad or cut to 6.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FunctionValueError(
            function_name, f"not an ISO-8601 time or epoch seconds: {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def _epoch_seconds(moment: datetime | Decimal) -> Decimal:
    """Exact seconds since the epoch (Decimal keeps nanosecond precision)."""
    if isinstance(moment, Decimal):
        return moment
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros) / Decimal(1_000_000)


def _extreme_time(name: str, times: list[Any] | None, pick: Any) -> Any:
    """The element of ``times`` at the extreme instant chosen by ``pick`` (nulls skipped)."""
    known = [t for t in times or () if t is not None]
    if not known:
        return None
    return pick(known, key=lambda t: _epoch_seconds(_parse_time(name, t)))


class TimeFunctions(Functions):
    """``seconds_between``, ``epoch_ns``, ``format_time``, ``latest``, ``earliest``."""

    @signature({"types": ["string", "number", "null"]}, {"types": ["string", "number", "null"]})
    def _func_seconds_between(self, start: Any, end: Any) -> float | None:
        """Seconds from ``start`` to ``end`` (ISO-8601 strings or epoch seconds).

        Null when either is null; a time without an offset is taken as UTC.

        >>> jmespath.search(
        ...     "seconds_between(a, b)",
        ...     {"a": "2024-01-01T00:00:00Z", "b": "2024-01-01T00:01:30.5+00:00"},
        ...     EXAMPLES,
        ... )
        90.5
        """
        if start is None or end is None:
            return None
        first = _epoch_seconds(_parse_time("seconds_between", start))
        last = _epoch_seconds(_parse_time("seconds_between", end))
        return float(last - first)

    @signature({"types": ["string", "number", "null"]})
    def _func_epoch_ns(self, time: Any) -> int | None:
        """An ISO-8601 string or epoch seconds as integer nanoseconds since the epoch.

        >>> jmespath.search("epoch_ns(@)", "1970-01-01T00:00:01.5Z", EXAMPLES)
        1500000000
        >>> jmespath.search("epoch_ns(@)", 1700000000.123456, EXAMPLES)
        1700000000123456000
        """
        if time is None:
            return None
        return int(_epoch_seconds(_parse_time("epoch_ns", time)) * 1_000_000_000)

    @signature({"types": ["string", "number", "null"]}, {"types": ["string"]})
    def _func_format_time(self, time: Any, layout: str) -> str | None:
        """A time as text in the local time zone (``strftime`` codes); null stays null.

        Local to the process that evaluates it, the eval's own machine when live (``TZ``
        sets it), so a run named at 16:33 reads as the clock its user saw; Inspect's
        times are UTC.

        >>> jmespath.search("format_time(@, '%Y')", "2024-06-15T12:00:00Z", EXAMPLES)
        '2024'
        """
        if time is None:
            return None
        moment = _parse_time("format_time", time)
        if isinstance(moment, Decimal):
            moment = datetime.fromtimestamp(float(moment), timezone.utc)
        return moment.astimezone().strftime(layout)

    @signature({"types": ["array", "null"]})
    def _func_latest(self, times: list[Any] | None) -> Any:
        """The latest of ISO-8601 times or epoch seconds, as given; nulls are ignored.

        Times of different precision compare by their instant (``...:51+00:00`` is
        before ``...:51.06+00:00``); null when there is none.

        >>> jmespath.search("latest(@)", ["2024-01-01T00:00:51+00:00", None,
        ...     "2024-01-01T00:00:51.062Z"], EXAMPLES)
        '2024-01-01T00:00:51.062Z'
        """
        return _extreme_time("latest", times, max)

    @signature({"types": ["array", "null"]})
    def _func_earliest(self, times: list[Any] | None) -> Any:
        """The earliest of ISO-8601 times or epoch seconds, as given; nulls are ignored.

        >>> jmespath.search("earliest(@)", ["2024-01-01T00:00:02Z", "2024-01-01T00:00:01Z"],
        ...     EXAMPLES)
        '2024-01-01T00:00:01Z'
        """
        return _extreme_time("earliest", times, min)


EXAMPLES = jmespath.Options(custom_functions=TimeFunctions())
"""Options with only this module's functions: what its examples run with."""
