"""Extra JMESPath functions of the mapping language.

JMESPath lacks a few things a mapping needs: key/value entries of an object, string
formatting, score-to-number, percentiles, time differences, JSON text, truncation and
MLflow-safe keys. They live here, in one :class:`MappingFunctions` class whose
``_func_<name>`` methods each carry a ``@signature`` (checked by ``jmespath`` when called)
and a docstring with a doctest example.

Rules every function follows:

- Booleans are never numbers (JMESPath checks type names, and so do we), except that
  ``to_number`` maps them to 1/0 as documented.
- Arguments may be lazy view objects (dict/list subclasses with a ``materialize()``
  method, built by the runtime so hot points do not serialise whole payloads);
  :meth:`MappingFunctions.call_function` turns them into plain JSON before type checks.
- Runtime misuse raises a :class:`jmespath.exceptions.JMESPathError`, which the engine
  reports against the rule.

The compiler checks names and argument counts of every call at load time against
:data:`FUNCTION_TABLE`, which is built from this class, so the two never disagree.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import jmespath
from jmespath import exceptions
from jmespath.functions import Functions, signature

from inspect_mlflow._keys import safe_key as _safe_key
from inspect_mlflow._keys import to_text, truncate_text

__all__ = [
    "FUNCTION_TABLE",
    "OPTIONS",
    "Arity",
    "FunctionValueError",
    "MappingFunctions",
]


class FunctionValueError(exceptions.JMESPathError):
    """A function got a value of the right type that it still cannot use."""

    def __init__(self, function_name: str, message: str) -> None:
        super().__init__(f"In function {function_name}(): {message}")
        self.function_name = function_name


_SHALLOW_FUNCTIONS = frozenset(
    {
        "length",
        "reverse",
        "slice",
        "compact",
        "coalesce",
        "not_null",
        "to_array",
        "type",
        "map",
        "sort_by",
        "max_by",
        "min_by",
        "index_by",
        "group_by",
        "get",
    }
)
"""Functions that never look inside the elements of their arguments.

For these only a top-level view is materialised; views nested in a plain list (what a
projection such as ``events[?x]`` returns) are passed through, so ``length(...)`` of a
filtered event list does not copy every event.
"""

_SCORE_WORDS: dict[str, float | int] = {
    "c": 1,
    "correct": 1,
    "i": 0,
    "incorrect": 0,
    "p": 0.5,
    "partial": 0.5,
}


def _materialize(value: Any, deep: bool) -> Any:
    """Replace view objects by plain JSON; copy a container only when it held a view."""
    materialize = getattr(value, "materialize", None)
    if materialize is not None and callable(materialize):
        return materialize()
    if not deep:
        return value
    if type(value) is list:
        items = [_materialize(item, True) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
        return value
    if type(value) is dict:
        pairs = {key: _materialize(item, True) for key, item in value.items()}
        if any(pairs[key] is not value[key] for key in value):
            return pairs
        return value
    return value


def _is_number(value: Any) -> bool:
    """JMESPath's notion of a number: int or float, never bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")


def _parse_time(function_name: str, value: Any) -> datetime | Decimal:
    """An ISO-8601 string as an aware datetime (naive means UTC), or epoch seconds."""
    if _is_number(value):
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


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _epoch_seconds(moment: datetime | Decimal) -> Decimal:
    """Exact seconds since the epoch (Decimal keeps nanosecond precision)."""
    if isinstance(moment, Decimal):
        return moment
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros) / Decimal(1_000_000)


def _as_int(function_name: str, what: str, value: Any) -> int | None:
    """An index argument as int: null stays null, integral floats are accepted."""
    if value is None:
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise FunctionValueError(function_name, f"{what} must be an integer, got {value!r}")
        return int(value)
    return value


class MappingFunctions(Functions):
    """JMESPath's built-in functions plus the mapping language's extra ones.

    One instance is shared by every compiled expression (through :data:`OPTIONS`); it
    holds no state, so it is safe to use from any thread.
    """

    def call_function(self, function_name: str, resolved_args: list[Any]) -> Any:
        """Materialise view arguments, then dispatch as JMESPath does.

        JMESPath checks argument types by Python type *name*, so a dict subclass would
        fail an ``object`` check; plain JSON passes. Functions that look into elements
        also get nested views materialised.

        Args:
            function_name: The called function.
            resolved_args: The evaluated arguments (owned by the caller; not mutated).

        Returns:
            The function's result.
        """
        deep = function_name not in _SHALLOW_FUNCTIONS
        args = [_materialize(arg, deep) for arg in resolved_args]
        return super().call_function(function_name, args)

    @signature({"types": ["object", "null"]})
    def _func_items(self, obj: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Key/value entries of an object, in its order; ``[]`` for null.

        >>> jmespath.search("items(@)", {"a": 1, "b": 2}, OPTIONS)
        [{'key': 'a', 'value': 1}, {'key': 'b', 'value': 2}]
        >>> jmespath.search("items(missing)", {}, OPTIONS)
        []
        """
        if obj is None:
            return []
        return [{"key": key, "value": value} for key, value in obj.items()]

    @signature({"types": ["array", "null"]})
    def _func_from_items(self, entries: list[Any] | None) -> dict[str, Any] | None:
        """An object from ``[{key, value}, ...]`` or ``[[key, value], ...]`` entries.

        Non-string keys are written as text; a later entry wins over an earlier one.

        >>> jmespath.search("from_items(@)", [["a", 1], {"key": "b", "value": 2}], OPTIONS)
        {'a': 1, 'b': 2}
        """
        if entries is None:
            return None
        out: dict[str, Any] = {}
        for entry in entries:
            if isinstance(entry, Mapping) and "key" in entry:
                key, value = entry["key"], entry.get("value")
            elif isinstance(entry, list) and len(entry) == 2:
                key, value = entry
            else:
                raise FunctionValueError(
                    "from_items", f"expected {{key, value}} or [key, value], got {entry!r}"
                )
            out[to_text(key)] = value
        return out

    @signature({"types": ["string"]}, {"types": [], "variadic": True})
    def _func_format(self, template: str, *values: Any) -> str:
        """Fill ``{}`` placeholders in order with the values as text (``{{``/``}}`` escape).

        >>> jmespath.search("format('{}#{}', id, epoch)", {"id": "s1", "epoch": 2}, OPTIONS)
        's1#2'
        """
        out: list[str] = []
        used = 0
        i = 0
        while i < len(template):
            pair = template[i : i + 2]
            if pair in ("{{", "}}"):
                out.append(pair[0])
                i += 2
            elif pair == "{}":
                if used >= len(values):
                    raise FunctionValueError(
                        "format", f"template has more {{}} than the {len(values)} values given"
                    )
                out.append(to_text(values[used]))
                used += 1
                i += 2
            else:
                out.append(template[i])
                i += 1
        if used != len(values):
            raise FunctionValueError(
                "format", f"{len(values)} values given for {used} {{}} placeholders"
            )
        return "".join(out)

    @signature(
        {"types": ["string", "array", "null"]},
        {"types": ["number", "null"]},
        {"types": ["number", "null"]},
    )
    def _func_slice(self, subject: Any, start: Any, end: Any) -> Any:
        """Python-style slice of a string or array (negative indexes count from the end).

        ``start`` or ``end`` may be null (from the start / to the end); a null subject
        gives null.

        >>> jmespath.search("slice(@, `0`, `8`)", "0123456789abcdef", OPTIONS)
        '01234567'
        >>> jmespath.search("slice(@, `-2`, null)", [1, 2, 3], OPTIONS)
        [2, 3]
        """
        if subject is None:
            return None
        return subject[_as_int("slice", "start", start) : _as_int("slice", "end", end)]

    @signature({"types": []})
    def _func_to_number(self, value: Any) -> int | float | None:
        """A score value as a number, or null when it is not one.

        Numbers stay as they are; booleans are 1/0; ``C``/``correct`` 1, ``I``/``incorrect``
        0, ``P``/``partial`` 0.5 (any case); numeric strings are parsed (finite only).
        This *replaces* JMESPath's built-in ``to_number``, which rejects scores.

        >>> [jmespath.search("to_number(@)", v, OPTIONS) for v in ["C", "I", "P", True, "2.5", 3]]
        [1, 0, 0.5, 1, 2.5, 3]
        >>> print(jmespath.search("to_number(@)", "N", OPTIONS))
        None
        """
        if isinstance(value, bool):
            return 1 if value else 0
        if _is_number(value):
            return value
        if not isinstance(value, str):
            return None
        text = value.strip()
        word = _SCORE_WORDS.get(text.lower())
        if word is not None:
            return word
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None

    @signature({"types": ["array", "null"]}, {"types": ["number"]})
    def _func_percentile(self, values: list[Any] | None, p: int | float) -> float | None:
        """The ``p``-th percentile (0-100, linear interpolation) of the numbers.

        Nulls are ignored; null when no number is left.

        >>> jmespath.search("percentile(@, `50`)", [1, 2, 3, 4], OPTIONS)
        2.5
        >>> print(jmespath.search("percentile(@, `95`)", [], OPTIONS))
        None
        """
        if not 0 <= p <= 100:
            raise FunctionValueError("percentile", f"p must be within 0..100, got {p!r}")
        numbers = []
        for value in values or ():
            if value is None:
                continue
            if not _is_number(value):
                raise FunctionValueError("percentile", f"not a number: {value!r}")
            numbers.append(value)
        if not numbers:
            return None
        numbers.sort()
        rank = (len(numbers) - 1) * p / 100
        low = math.floor(rank)
        high = min(low + 1, len(numbers) - 1)
        return float(numbers[low] + (numbers[high] - numbers[low]) * (rank - low))

    @signature({"types": ["string", "number", "null"]}, {"types": ["string", "number", "null"]})
    def _func_seconds_between(self, start: Any, end: Any) -> float | None:
        """Seconds from ``start`` to ``end`` (ISO-8601 strings or epoch seconds).

        Null when either is null; a time without an offset is taken as UTC.

        >>> jmespath.search(
        ...     "seconds_between(a, b)",
        ...     {"a": "2024-01-01T00:00:00Z", "b": "2024-01-01T00:01:30.5+00:00"},
        ...     OPTIONS,
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

        >>> jmespath.search("epoch_ns(@)", "1970-01-01T00:00:01.5Z", OPTIONS)
        1500000000
        >>> jmespath.search("epoch_ns(@)", 1700000000.123456, OPTIONS)
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

        >>> jmespath.search("format_time(@, '%Y')", "2024-06-15T12:00:00Z", OPTIONS)
        '2024'
        """
        if time is None:
            return None
        moment = _parse_time("format_time", time)
        if isinstance(moment, Decimal):
            moment = datetime.fromtimestamp(float(moment), timezone.utc)
        return moment.astimezone().strftime(layout)

    @signature({"types": []})
    def _func_json(self, value: Any) -> str:
        """Compact JSON text of any value (keys in their order, non-ASCII kept).

        >>> jmespath.search("json(@)", {"a": [1, "é"]}, OPTIONS)
        '{"a":[1,"é"]}'
        """
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)

    @signature({"types": []})
    def _func_digest(self, value: Any) -> str:
        """A short stable digest (12 hex characters of SHA-256) of a value's JSON text.

        For a dataset input's digest: the same samples give the same digest in every
        eval, other samples another one.

        >>> jmespath.search("digest(@)", ["qa", [1, 2, 3]], OPTIONS)
        '554cc4fd8ed5'
        """
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    @signature({"types": ["string", "null"]}, {"types": ["number"]})
    def _func_truncate(self, text: str | None, limit: int | float) -> str | None:
        """At most ``limit`` characters, ending with ``...[truncated]`` when cut.

        >>> jmespath.search("truncate(@, `20`)", "abcdefghijklmnopqrstuvwxyz", OPTIONS)
        'abcdef...[truncated]'
        """
        if text is None:
            return None
        count = _as_int("truncate", "n", limit)
        if count is None or count < 0:
            raise FunctionValueError("truncate", f"n must be >= 0, got {limit!r}")
        return truncate_text(text, count)

    @signature({"types": ["string"]})
    def _func_safe_key(self, text: str) -> str:
        """The text rewritten into a key MLflow accepts (see ``_keys.safe_key``).

        >>> jmespath.search("safe_key(@)", "mockllm/model@v1", OPTIONS)
        'mockllm/model_v1'
        """
        return _safe_key(text)

    @signature({"types": ["array", "null"]})
    def _func_compact(self, values: list[Any] | None) -> list[Any]:
        """The array without its nulls (``[]`` for null).

        >>> jmespath.search("compact(@)", [1, None, "a", None], OPTIONS)
        [1, 'a']
        """
        return [value for value in values or () if value is not None]

    @signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        """The first argument that is not null (null when all are).

        >>> jmespath.search("coalesce(a, b, `0`)", {"b": 7}, OPTIONS)
        7
        """
        for value in values:
            if value is not None:
                return value
        return None

    @signature({"types": ["array", "null"]})
    def _func_sum_known(self, values: list[Any] | None) -> int | float | None:
        """Sum of the numbers, ignoring nulls; null when there is no number at all.

        Unlike ``sum``, a cost no model reported stays absent instead of becoming 0.

        >>> jmespath.search("sum_known(@)", [1.5, None, 2], OPTIONS)
        3.5
        >>> print(jmespath.search("sum_known(@)", [None], OPTIONS))
        None
        """
        total: int | float | None = None
        for value in values or ():
            if value is None:
                continue
            if not _is_number(value):
                raise FunctionValueError("sum_known", f"not a number: {value!r}")
            total = value if total is None else total + value
        return total

    @signature({"types": ["array", "null"]}, {"types": ["expref"]})
    def _func_index_by(self, values: list[Any] | None, expref: Any) -> dict[str, Any]:
        """An object from the elements, keyed by the text of ``&expr`` on each of them.

        Joins two lists where JMESPath cannot (it has no lexical scope): index one list,
        then look elements up with ``get``. Elements whose key is null are left out; a
        later element wins over an earlier one with the same key; null gives ``{}``.

        >>> ends = [{"id": "a", "t": 2}, {"id": "b", "t": 5}]
        >>> jmespath.search("index_by(@, &id)", ends, OPTIONS)
        {'a': {'id': 'a', 't': 2}, 'b': {'id': 'b', 't': 5}}
        """
        out: dict[str, Any] = {}
        for value in values or ():
            key = expref.visit(expref.expression, value)
            if key is not None:
                out[to_text(key)] = value
        return out

    @signature({"types": ["object", "null"]}, {"types": []})
    def _func_get(self, obj: dict[str, Any] | None, key: Any) -> Any:
        """The value of ``obj`` under a key computed at run time (its text); null if absent.

        JMESPath field access takes only literal names; this takes any expression.

        >>> doc = {"ends": {"a": {"t": 2}}, "span": {"id": "a"}}
        >>> jmespath.search("get(ends, span.id).t", doc, OPTIONS)
        2
        >>> print(jmespath.search("get(ends, 'zz')", doc, OPTIONS))
        None
        """
        if obj is None or key is None:
            return None
        return obj.get(to_text(key))

    @signature({"types": ["array", "null"]})
    def _func_unique(self, values: list[Any] | None) -> list[Any]:
        """The array without repeated values, first occurrences kept in order.

        Two tasks run with two models each are named twice in a run's task list.

        >>> jmespath.search("unique(@)", ["qa", "qa", "math", 1, 1], OPTIONS)
        ['qa', 'math', 1]
        """
        seen: set[str] = set()
        out: list[Any] = []
        for value in values or ():
            text = json.dumps(value, sort_keys=True, default=str)
            if text not in seen:
                seen.add(text)
                out.append(value)
        return out

    @signature({"types": ["array", "null"]}, {"types": ["expref"]})
    def _func_group_by(self, values: list[Any] | None, expref: Any) -> dict[str, list[Any]]:
        """An object of lists: the elements grouped by the text of ``&expr``, in order.

        Tells the first element of each group (``group.value[0]``) where a filter cannot
        (JMESPath has no lexical scope): the primary epoch reducer of a scorer is the
        first of its results. Elements whose key is null are left out; null gives ``{}``.

        >>> scores = [{"name": "m", "r": "mean"}, {"name": "m", "r": "max"}, {"name": "n"}]
        >>> jmespath.search("group_by(@, &name).m[].r", scores, OPTIONS)
        ['mean', 'max']
        """
        out: dict[str, list[Any]] = {}
        for value in values or ():
            key = expref.visit(expref.expression, value)
            if key is not None:
                out.setdefault(to_text(key), []).append(value)
        return out

    @signature({"types": ["string", "null"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, text: str | None, old: str, new: str) -> str | None:
        """``text`` with every ``old`` replaced by ``new``; null stays null.

        A run name such as ``qa (mockllm/model)`` becomes one artifact file name.

        >>> jmespath.search("replace(@, '/', '_')", "qa (mockllm/model)", OPTIONS)
        'qa (mockllm_model)'
        """
        if text is None:
            return None
        if not old:
            raise FunctionValueError("replace", "old must not be empty")
        return text.replace(old, new)

    @signature({"types": ["array", "null"]})
    def _func_latest(self, times: list[Any] | None) -> Any:
        """The latest of ISO-8601 times or epoch seconds, as given; nulls are ignored.

        Times of different precision compare by their instant (``...:51+00:00`` is
        before ``...:51.06+00:00``); null when there is none.

        >>> jmespath.search("latest(@)", ["2024-01-01T00:00:51+00:00", None,
        ...     "2024-01-01T00:00:51.062Z"], OPTIONS)
        '2024-01-01T00:00:51.062Z'
        """
        return _extreme_time("latest", times, max)

    @signature({"types": ["array", "null"]})
    def _func_earliest(self, times: list[Any] | None) -> Any:
        """The earliest of ISO-8601 times or epoch seconds, as given; nulls are ignored.

        >>> jmespath.search("earliest(@)", ["2024-01-01T00:00:02Z", "2024-01-01T00:00:01Z"],
        ...     OPTIONS)
        '2024-01-01T00:00:01Z'
        """
        return _extreme_time("earliest", times, min)

    @signature({"types": ["string", "null"]})
    def _func_dirname(self, path: str | None) -> str | None:
        """The folder part of a path or URL (before its last slash or backslash); null stays null.

        Where an eval's log sits, for ``inspect view --log-dir <folder>``.

        >>> jmespath.search("dirname(@)", "/tmp/logs/2024_qa_Ab3.eval", OPTIONS)
        '/tmp/logs'
        >>> jmespath.search("dirname(@)", "s3://bucket/logs/x.eval", OPTIONS)
        's3://bucket/logs'
        """
        if path is None:
            return None
        cut = max(path.rfind("/"), path.rfind("\\"))
        if cut < 0:
            return "."
        return path[:cut] or path[: cut + 1]

    @signature({"types": ["number", "null"]}, {"types": ["number"]})
    def _func_round(self, value: int | float | None, digits: int | float) -> int | float | None:
        """``value`` rounded to ``digits`` decimals (an integer for 0); null stays null.

        For text people read (a run's description): ``0.8333333`` reads as ``0.833``.

        >>> jmespath.search("round(@, `3`)", 0.8333333, OPTIONS)
        0.833
        >>> jmespath.search("round(@, `0`)", 1234.56, OPTIONS)
        1235
        """
        if value is None:
            return None
        if not isinstance(digits, int) and not float(digits).is_integer():
            raise FunctionValueError("round", f"digits must be a whole number, got {digits!r}")
        places = int(digits)
        if isinstance(value, float) and not math.isfinite(value):
            return value
        if places <= 0:
            return int(round(value, places))
        return round(float(value), places)

    @signature({"types": ["string", "null"]}, {"types": ["number"]})
    def _func_wrap(self, text: str | None, width: int | float) -> str | None:
        r"""Each line of ``text`` broken into lines of at most ``width`` characters.

        For text shown in a fixed-width block (a traceback in a run's description):
        MLflow's UI does not wrap it, so one long line widens the whole page.

        >>> jmespath.search("wrap(@, `4`)", "abcdefghij\nxy", OPTIONS)
        'abcd\nefgh\nij\nxy'
        """
        if text is None:
            return None
        count = _as_int("wrap", "width", width)
        if count is None or count < 1:
            raise FunctionValueError("wrap", f"width must be >= 1, got {width!r}")
        lines = []
        for line in text.split("\n"):
            lines.extend(line[i : i + count] for i in range(0, max(len(line), 1), count))
        return "\n".join(lines)


def _extreme_time(name: str, times: list[Any] | None, pick: Any) -> Any:
    """The element of ``times`` at the extreme instant chosen by ``pick`` (nulls skipped)."""
    known = [t for t in times or () if t is not None]
    if not known:
        return None
    return pick(known, key=lambda t: _epoch_seconds(_parse_time(name, t)))


@dataclass(frozen=True, slots=True)
class Arity:
    """How many arguments a function takes, for static checks."""

    count: int
    """Number of declared arguments (the minimum when ``variadic``)."""
    variadic: bool
    """True when more arguments than ``count`` are accepted."""

    def accepts(self, given: int) -> bool:
        """Tell whether a call with ``given`` arguments passes JMESPath's arity check."""
        return given >= self.count if self.variadic else given == self.count

    def describe(self) -> str:
        """Human text such as ``2 arguments`` or ``at least 1 argument``."""
        noun = "argument" if self.count == 1 else "arguments"
        return f"at least {self.count} {noun}" if self.variadic else f"{self.count} {noun}"


def _function_table() -> dict[str, Arity]:
    """Name -> arity of every function the evaluator knows (built-in and extra)."""
    table: dict[str, Arity] = {}
    for name, spec in sorted(MappingFunctions.FUNCTION_TABLE.items()):
        declared = spec["signature"]
        variadic = bool(declared) and bool(declared[-1].get("variadic"))
        table[name] = Arity(count=len(declared), variadic=variadic)
    return table


FUNCTION_TABLE: Mapping[str, Arity] = _function_table()
"""Every callable function name (JMESPath built-ins and extras) with its arity."""

OPTIONS = jmespath.Options(custom_functions=MappingFunctions())
"""``jmespath.Options`` to pass to ``ParsedResult.search`` for every mapping expression."""
