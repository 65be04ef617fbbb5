"""Number functions of the mapping language: scores as numbers, sums, percentiles, rounding.

``score_value`` reads an Inspect score the way Inspect's own metrics do
(``inspect_ai.scorer.value_to_float``). JMESPath's ``to_number`` is left as the standard
defines it; version 1 of the mapping language replaced it with a score conversion, which
files that still say ``version: 1`` keep (the compiler calls ``_to_number_v1`` for them).
"""

from __future__ import annotations

import math
from typing import Any

import jmespath
from jmespath.functions import Functions, signature

from inspect_mlflow._mapping.functions_base import FunctionValueError, is_number

__all__ = ["EXAMPLES", "NumberFunctions", "score_value"]

_GRADES: dict[str, int | float] = {"C": 1, "P": 0.5, "I": 0, "N": 0}
"""Inspect's CORRECT, PARTIAL, INCORRECT and NOANSWER, compared exactly as Inspect does."""

_WORDS: dict[str, int | float] = {"yes": 1, "true": 1, "no": 0, "false": 0}
"""The boolean words ``value_to_float`` accepts (any case)."""

_V1_WORDS: dict[str, int | float] = {
    "c": 1,
    "correct": 1,
    "i": 0,
    "incorrect": 0,
    "p": 0.5,
    "partial": 0.5,
}


def _parse_number(text: str) -> int | float | None:
    """A finite number from text (an integer stays an integer), else None."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def score_value(value: Any) -> int | float | None:
    """A score value as the number Inspect's ``value_to_float`` gives it, or None.

    ``C`` 1, ``P`` 0.5, ``I`` and ``N`` 0; booleans 1/0; numbers as they are; the words
    yes/true 1 and no/false 0 (any case); text holding a finite number, that number.
    Where ``value_to_float`` gives up (it logs a warning and returns 0), this is None,
    so a value that is not a score writes nothing rather than a made-up 0.
    """
    return _as_number(value, _WORDS, grades=_GRADES)


def _as_number(
    value: Any, words: dict[str, int | float], grades: dict[str, int | float] | None = None
) -> int | float | None:
    """A score as a number: the conversion ``score_value`` and version 1 share.

    Booleans 1/0, numbers as they are, text by ``grades`` (exact case), then by
    ``words`` (any case), then as a finite number; anything else None.
    """
    if isinstance(value, bool):
        return 1 if value else 0
    if is_number(value):
        return value
    if not isinstance(value, str):
        return None
    grade = grades.get(value) if grades else None
    if grade is not None:
        return grade
    text = value.strip()
    word = words.get(text.lower())
    if word is not None:
        return word
    return _parse_number(text)


class NumberFunctions(Functions):
    """``score_value``, ``percentile``, ``sum_known``, ``round`` (and version 1's ``to_number``)."""

    @signature({"types": []})
    def _func_score_value(self, value: Any) -> int | float | None:
        """An Inspect score value as a number, as Inspect's metrics count it; else null.

        ``C`` 1, ``P`` 0.5, ``I`` 0, ``N`` 0 (Inspect's grades, exact case); booleans 1/0;
        numbers as they are; ``yes``/``true`` 1, ``no``/``false`` 0 (any case); numeric
        text parsed (finite only). Anything else (an object, a list, other text) is
        null, where Inspect's ``value_to_float`` would warn and count 0.

        >>> [jmespath.search("score_value(@)", v, EXAMPLES) for v in ["C", "I", "P", "N"]]
        [1, 0, 0.5, 0]
        >>> [jmespath.search("score_value(@)", v, EXAMPLES) for v in [True, "2.5", 3, "yes"]]
        [1, 2.5, 3, 1]
        >>> print(jmespath.search("score_value(@)", "maybe", EXAMPLES))
        None
        """
        return score_value(value)

    @signature({"types": []})
    def _func__to_number_v1(self, value: Any) -> int | float | None:
        """Version 1's ``to_number``: a score conversion (internal, not callable by name).

        Numbers stay as they are; booleans are 1/0; ``C``/``correct`` 1, ``I``/``incorrect``
        0, ``P``/``partial`` 0.5 (any case); numeric strings are parsed (finite only).

        >>> [jmespath.search("_to_number_v1(@)", v, EXAMPLES) for v in ["c", "Correct", "N"]]
        [1, 1, None]
        """
        return _as_number(value, _V1_WORDS)

    @signature({"types": ["array", "null"]}, {"types": ["number"]})
    def _func_percentile(self, values: list[Any] | None, p: int | float) -> float | None:
        """The ``p``-th percentile (0-100, linear interpolation) of the numbers.

        Nulls are ignored; null when no number is left.

        >>> jmespath.search("percentile(@, `50`)", [1, 2, 3, 4], EXAMPLES)
        2.5
        >>> print(jmespath.search("percentile(@, `95`)", [], EXAMPLES))
        None
        """
        if not 0 <= p <= 100:
            raise FunctionValueError("percentile", f"p must be within 0..100, got {p!r}")
        numbers = []
        for value in values or ():
            if value is None:
                continue
            if not is_number(value):
                raise FunctionValueError("percentile", f"not a number: {value!r}")
            numbers.append(value)
        if not numbers:
            return None
        numbers.sort()
        rank = (len(numbers) - 1) * p / 100
        low = math.floor(rank)
        high = min(low + 1, len(numbers) - 1)
        return float(numbers[low] + (numbers[high] - numbers[low]) * (rank - low))

    @signature({"types": ["array", "null"]})
    def _func_sum_known(self, values: list[Any] | None) -> int | float | None:
        """Sum of the numbers, ignoring nulls; null when there is no number at all.

        Unlike ``sum``, a cost no model reported stays absent instead of becoming 0.

        >>> jmespath.search("sum_known(@)", [1.5, None, 2], EXAMPLES)
        3.5
        >>> print(jmespath.search("sum_known(@)", [None], EXAMPLES))
        None
        """
        total: int | float | None = None
        for value in values or ():
            if value is None:
                continue
            if not is_number(value):
                raise FunctionValueError("sum_known", f"not a number: {value!r}")
            total = value if total is None else total + value
        return total

    @signature({"types": ["number", "null"]}, {"types": ["number"]})
    def _func_round(self, value: int | float | None, digits: int | float) -> int | float | None:
        """``value`` rounded to ``digits`` decimals (an integer for 0); null stays null.

        For text people read (a run's description): ``0.8333333`` reads as ``0.833``.

        >>> jmespath.search("round(@, `3`)", 0.8333333, EXAMPLES)
        0.833
        >>> jmespath.search("round(@, `0`)", 1234.56, EXAMPLES)
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


EXAMPLES = jmespath.Options(custom_functions=NumberFunctions())
"""Options with only this module's functions: what its examples run with."""
