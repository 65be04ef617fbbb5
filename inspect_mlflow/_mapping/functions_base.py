"""What every family of mapping functions shares: the error they raise, number tests.

The functions live in a few modules by family (``functions`` for data shaping and text,
``functions_time``, ``functions_numbers``); each family is a mixin of JMESPath's
``Functions`` and ``functions.MappingFunctions`` combines them.
"""

from __future__ import annotations

from typing import Any

from jmespath import exceptions

__all__ = ["FunctionValueError", "as_int", "is_false", "is_number"]


class FunctionValueError(exceptions.JMESPathError):
    """A function got a value of the right type that it still cannot use."""

    def __init__(self, function_name: str, message: str) -> None:
        super().__init__(f"In function {function_name}(): {message}")
        self.function_name = function_name


def is_number(value: Any) -> bool:
    """JMESPath's notion of a number: int or float, never bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_false(value: Any) -> bool:
    """JMESPath's falsy values: null, false, and the empty string, list and object (0 is true)."""
    if value is None or value is False:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    return False


def as_int(function_name: str, what: str, value: Any) -> int | None:
    """An index argument as int: null stays null, integral floats are accepted."""
    if value is None:
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise FunctionValueError(function_name, f"{what} must be an integer, got {value!r}")
        return int(value)
    return value
