"""Extra JMESPath functions of the mapping language, in one :class:`MappingFunctions`.

JMESPath lacks a few things a mapping needs: key/value entries of an object, string
formatting, a conditional, scores as numbers, percentiles, time differences, JSON text,
truncation and MLflow-safe keys. They live in families (this module: data shaping and
text; ``functions_time``; ``functions_numbers``), each a mixin whose ``_func_<name>``
methods carry a ``@signature`` (checked by ``jmespath`` when called) and a docstring
with a doctest example; :class:`MappingFunctions` combines them.

Rules every function follows:

- Booleans are never numbers (JMESPath checks type names, and so do we), except that
  ``score_value`` maps them to 1/0 as documented.
- Arguments may be lazy view objects (dict/list subclasses with a ``materialize()``
  method, built by the runtime so hot points do not serialise whole payloads);
  :meth:`MappingFunctions.call_function` turns them into plain JSON before type checks.
- Runtime misuse raises a :class:`jmespath.exceptions.JMESPathError`, which the engine
  reports against the rule.
- A name starting with ``_`` is internal: the compiler writes such calls (``_box`` for a
  lazy ``if``, ``_to_number_v1`` for version 1 files); a mapping cannot call them.

The compiler checks names and argument counts of every call at load time against
:data:`FUNCTION_TABLE`, which is built from this class, so the two never disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.functions import signature

from inspect_mlflow._keys import safe_key as _safe_key
from inspect_mlflow._keys import to_text, truncate_text
from inspect_mlflow._mapping.functions_base import FunctionValueError, as_int, is_false
from inspect_mlflow._mapping.functions_numbers import NumberFunctions
from inspect_mlflow._mapping.functions_time import TimeFunctions

__all__ = [
    "BOX",
    "FUNCTION_TABLE",
    "OPTIONS",
    "TO_NUMBER_V1",
    "Arity",
    "FunctionValueError",
    "MappingFunctions",
]

BOX = "_box"
"""Internal function ``_box(x)`` -> ``[x]``: the compiler's lazy ``if`` carries a value in it."""

TO_NUMBER_V1 = "_to_number_v1"
"""Internal function that version 1 files call where they wrote ``to_number``."""

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
        "if",
    }
)
"""Functions that never look inside the elements of their arguments.

For these only a top-level view is materialised; views nested in a plain list (what a
projection such as ``events[?x]`` returns) are passed through, so ``length(...)`` of a
filtered event list does not copy every event.
"""


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


class MappingFunctions(NumberFunctions, TimeFunctions):
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
        if function_name == BOX:  # the compiler's own call, hot in a lazy ``if``
            return [resolved_args[0]]
        deep = function_name not in _SHALLOW_FUNCTIONS
        args = [_materialize(arg, deep) for arg in resolved_args]
        return super().call_function(function_name, args)

    @signature({"types": []}, {"types": []}, {"types": []})
    def _func_if(self, condition: Any, then: Any, otherwise: Any) -> Any:
        """``then`` when ``condition`` is truthy, else ``otherwise`` (JMESPath truthiness).

        Truthiness as in ``&&``/``||``: ``false``, null, ``""``, ``[]`` and ``{}`` are
        false, ``0`` is true. In a mapping only the chosen branch is evaluated (the
        compiler makes the call lazy), so ``if(x, length(x), `0`)`` is safe when ``x``
        is null; a null ``then`` stays null, unlike ``c && a || b``.

        >>> jmespath.search("if(error, 'FAILED', 'OK')", {"error": None}, OPTIONS)
        'OK'
        >>> print(jmespath.search("if(`true`, missing, 'no')", {}, OPTIONS))
        None
        """
        return otherwise if is_false(condition) else then

    @signature({"types": []})
    def _func__box(self, value: Any) -> list[Any]:
        """``[value]``, even on a null current node (internal: the lazy ``if`` uses it).

        >>> jmespath.search("_box(@)", None, OPTIONS)
        [None]
        """
        return [value]

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
        return subject[as_int("slice", "start", start) : as_int("slice", "end", end)]

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
        count = as_int("truncate", "n", limit)
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
        count = as_int("wrap", "width", width)
        if count is None or count < 1:
            raise FunctionValueError("wrap", f"width must be >= 1, got {width!r}")
        lines = []
        for line in text.split("\n"):
            lines.extend(line[i : i + count] for i in range(0, max(len(line), 1), count))
        return "\n".join(lines)


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
    """Name -> arity of every function a mapping may call (built-in and extra, not internal)."""
    table: dict[str, Arity] = {}
    for name, spec in sorted(MappingFunctions.FUNCTION_TABLE.items()):
        if name.startswith("_"):
            continue
        declared = spec["signature"]
        variadic = bool(declared) and bool(declared[-1].get("variadic"))
        table[name] = Arity(count=len(declared), variadic=variadic)
    return table


FUNCTION_TABLE: Mapping[str, Arity] = _function_table()
"""Every function name a mapping may call (JMESPath built-ins and extras) with its arity."""

OPTIONS = jmespath.Options(custom_functions=MappingFunctions())
"""``jmespath.Options`` to pass to ``ParsedResult.search`` for every mapping expression."""
