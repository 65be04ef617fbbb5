"""Turning expression results into what MLflow accepts: text, metric numbers, JSON, redaction.

The engine calls these on every value it writes, so each is a small pure function that
never raises on odd input: a value MLflow cannot take comes back as a :class:`Rejected`
with a reason the engine counts and reports.

Credentials: a mapping may log a whole object (an eval log header, a config) that holds
secrets passed as task or model arguments. Any key whose last segment looks like a
credential has its value replaced by ``***`` wherever it occurs, so a secret never
reaches the tracking server in clear, whatever the mapping says.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspect_mlflow._engine.views import to_json
from inspect_mlflow._keys import MAX_TAG_CHARS, finite, to_text, truncate_text

__all__ = [
    "MAX_CELL_CHARS",
    "MAX_PARAM_CHARS",
    "MAX_RECORD_CHARS",
    "MAX_TAG_CHARS",
    "REDACTED",
    "Rejected",
    "cell_value",
    "compact_json",
    "cut_strings",
    "expr_text",
    "fit_json",
    "is_credential_key",
    "json_value",
    "metric_value",
    "redact",
    "step_value",
    "text_value",
]

REDACTED = "***"
"""What a credential's value is replaced by."""

MAX_PARAM_CHARS = 6000
"""MLflow's limit on a param value."""

MAX_CELL_CHARS = 4000
"""Longest table cell kept whole: a longer string, or the long strings inside a longer
object or list, are cut with a marker so the cell's JSON stays near this size."""

MAX_RECORD_CHARS = 50_000
"""Size a record (one object of ``sample_results/...json``) is fitted to: its longest
strings are cut to one length so its JSON text stays near this (a thousand samples with
200 KB answers would otherwise make a file of hundreds of MB). The whole text is in
Inspect's own log."""

_CREDENTIAL_WORDS = (
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "credentials",
    "authorization",
)
"""Endings (after dropping ``_``, ``-`` and spaces) of a key naming a credential.

They also cover ``api_key``, ``access_token``, ``auth_token``, ``client_secret``,
``openai_api_key``, ``hf_token``. Plural ``tokens`` (``max_tokens``, ``total_tokens``)
is a count, not a credential, and does not match.
"""

_SEGMENT_SPLIT = re.compile(r"[./:]")
_SEPARATORS = re.compile(r"[-_ ]")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A value that cannot be written where the mapping put it, and why."""

    reason: str


def is_credential_key(key: Any) -> bool:
    """Tell whether a param/tag key, column or object key names a credential.

    Only the last segment counts (``task_arg.api_key`` is one, ``token_usage/x`` is not).

    Args:
        key: The key (non-text keys are never credentials).

    Returns:
        True when the value must be redacted.

    >>> [is_credential_key(k) for k in ("task_arg.api_key", "Token", "max_tokens", "model")]
    [True, True, False, False]
    """
    if not isinstance(key, str) or not key:
        return False
    return _names_credential(key)


@functools.lru_cache(maxsize=4096)
def _names_credential(key: str) -> bool:
    # Asked for every key of every row and object the mapping writes; the keys repeat.
    last = _SEGMENT_SPLIT.split(key)[-1]
    folded = _SEPARATORS.sub("", last).lower()
    return folded.endswith(_CREDENTIAL_WORDS)


def _rewrite(value: Any, change: Callable[[Any, Any], Any]) -> Any:
    """Apply ``change(key, item)`` to every value at any depth, top-down.

    ``key`` is the dict key the item sits under (None in a list or at the top). Where
    ``change`` returns the item itself, containers are walked into. Containers are copied
    only where something changed, so the common case allocates nothing.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return change(None, value)
    pairs = value.items() if kind is dict else enumerate(value)
    out: Any = None
    for key, item in pairs:
        new = change(key if kind is dict else None, item)
        if new is item and type(item) in (dict, list):
            new = _rewrite(item, change)
        if new is not item:
            if out is None:
                out = dict(value) if kind is dict else list(value)
            out[key] = new
    return value if out is None else out


def _hide_credential(key: Any, item: Any) -> Any:
    return REDACTED if key is not None and item is not None and is_credential_key(key) else item


def redact(value: Any) -> Any:
    """Replace the value of every credential-named key, at any depth, by ``***``.

    Null values stay null (nothing to hide).

    Args:
        value: A plain JSON value (not mutated).

    Returns:
        The value with credentials hidden.
    """
    return _rewrite(value, _hide_credential)


def json_value(value: Any) -> Any:
    """Plain, strict JSON with credentials hidden: for rows, records, artifacts, traces.

    Args:
        value: An expression result (may hold lazy views).

    Returns:
        dict/list/str/int/float/bool/None only; NaN and infinities as null.
    """
    # Most cells are plain scalars: answer them without the three walks below.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    return redact(finite(to_json(value)))


MIN_NESTED_CHARS = 200
"""Shortest a string inside an object or list is cut to when fitting it to a limit."""


def cut_strings(value: Any, limit: int) -> Any:
    """Every string longer than ``limit``, at any depth, cut with the marker.

    Args:
        value: A plain JSON value (not mutated; copied only where something is cut).
        limit: Longest string kept whole (marker included when cut).

    >>> cut_strings({"a": ["x" * 30, "short"]}, 20)
    {'a': ['xxxxxx...[truncated]', 'short']}
    """

    def cut(key: Any, item: Any) -> Any:
        return truncate_text(item, limit) if type(item) is str and len(item) > limit else item

    return _rewrite(value, cut)


def _strings(value: Any, into: list[int]) -> list[int]:
    """Lengths of the string values (not keys) in a plain JSON value."""
    kind = type(value)
    if kind is str:
        into.append(len(value))
    elif kind is dict:
        for item in value.values():
            _strings(item, into)
    elif kind is list:
        for item in value:
            _strings(item, into)
    return into


def fit_json(value: Any, limit: int) -> Any:
    """The value with its longest strings cut so that its JSON text is about ``limit``.

    Why: a table cell holding an object (a sample's scores, its metadata) is as large as
    the strings inside it: one 200 KB answer made a 400 KB cell. Cutting only a string
    cell left those whole. Here the longest strings at any depth are cut to one common
    length, the longest that brings the JSON text within ``limit``, so the object keeps
    its shape and its short values. A string is never cut below
    :data:`MIN_NESTED_CHARS`, so an object of very many short strings may stay over.

    Args:
        value: A plain JSON value (not mutated).
        limit: Target length of the JSON text (a bare string is cut to ``limit``).

    >>> fit = fit_json({"answer": "x" * 5000, "value": 1}, 1000)
    >>> len(json.dumps(fit)) <= 1000, fit["value"], fit["answer"].endswith("[truncated]")
    (True, 1, True)
    """
    kind = type(value)
    if kind is str:
        return truncate_text(value, limit) if len(value) > limit else value
    if kind is not dict and kind is not list:
        return value
    size = len(json.dumps(value, ensure_ascii=False, default=str))
    if size <= limit:
        return value
    lengths = _strings(value, [])
    low, high = MIN_NESTED_CHARS, max(lengths, default=0)
    if high <= low:
        return value
    over = size - limit
    while low < high:  # the longest common length that saves enough characters
        middle = (low + high + 1) // 2
        if sum(n - middle for n in lengths if n > middle) >= over:
            low = middle
        else:
            high = middle - 1
    fitted = cut_strings(value, low)
    while low > MIN_NESTED_CHARS and len(json.dumps(fitted, ensure_ascii=False)) > limit:
        low = max(MIN_NESTED_CHARS, low // 2)  # escapes made the text longer than counted
        fitted = cut_strings(value, low)
    return fitted


def text_value(value: Any, limit: int) -> str | None:
    """A param or tag value as text, or None when there is nothing to write.

    Strings stay as they are; numbers keep their form (``0.2`` is ``"0.2"``, ``5`` is
    ``"5"``); other JSON values become compact JSON text (credentials inside hidden).
    Null, ``""``, ``[]`` and ``{}`` give None. Text longer than ``limit`` is cut with a
    visible marker.

    Args:
        value: An expression result.
        limit: MLflow's length limit for this kind of value.

    Returns:
        The text to write, or None.
    """
    plain = json_value(value)
    if plain is None or plain == "" or plain == [] or plain == {}:
        return None
    return truncate_text(to_text(plain), limit)


def expr_text(value: Any) -> str | None:
    """An expression result as text (JSON text for non-strings); null stays None.

    For names and identities (run names, keys, model and dataset names): not cut and
    not redacted, unlike :func:`text_value`.
    """
    if value is None:
        return None
    return to_text(to_json(value))


def cell_value(value: Any) -> Any:
    """A table cell: plain JSON, long strings cut with a marker, inside objects too."""
    kind = type(value)
    if kind is str:
        return truncate_text(value, MAX_CELL_CHARS) if len(value) > MAX_CELL_CHARS else value
    if kind is dict or kind is list:
        return fit_json(value, MAX_CELL_CHARS)
    return value


def compact_json(value: Any) -> str:
    """JSON text MLflow's UI can parse: non-finite numbers become null."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return compact_json(finite(value))


def metric_value(value: Any) -> float | Rejected | None:
    """A metric value as float: numbers and booleans only; None means "write nothing".

    Args:
        value: An expression result.

    Returns:
        The float, None for null, or :class:`Rejected` for text, objects, NaN, infinity.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return Rejected(f"metric value too large: {value!r}")
        if not math.isfinite(number):
            return Rejected(f"metric value is not finite: {value!r}")
        return number
    plain = to_json(value)
    shown = truncate_text(json.dumps(plain, ensure_ascii=False, default=str), 80)
    return Rejected(f"metric value must be a number or boolean, got {_json_type(plain)} {shown}")


def _json_type(value: Any) -> str:
    """JSON's name for the type of a plain value."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def step_value(value: Any) -> int | Rejected:
    """A metric step as int; null means the default step 0.

    Args:
        value: The result of a rule's ``step`` expression.

    Returns:
        The step, or :class:`Rejected` when it is not a whole number.
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        return Rejected(f"step must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return Rejected(f"step must be an integer, got {to_text(to_json(value))[:80]}")
