"""Parsed expressions rewritten into what the engine evaluates, and constants as expressions.

The mapping language has two forms JMESPath cannot evaluate as written:

- ``if(cond, then, else)`` must evaluate only the chosen branch (``if(x, length(x), `0`)``
  would raise on a null ``x`` otherwise). It becomes ``(cond && _box(then) || _box(else))[0]``:
  ``&&`` and ``||`` short-circuit, and the one-element list carries a falsy or null
  ``then`` through ``||``. ``_box`` is a function, not ``[then]``, because a list built by
  ``[...]`` is null when the current node is null, and a function call is not.
- ``to_number`` in a ``version: 1`` file is version 1's score conversion, not
  JMESPath's: the call is renamed to the internal ``_to_number_v1``.

Rewriting happens after the static checks, which see the expression as written. The
parsed tree ``jmespath`` returns is cached and shared, so it is copied, never changed.
"""

from __future__ import annotations

import json
from typing import Any

from jmespath.parser import ParsedResult

from inspect_mlflow._mapping.functions import BOX, TO_NUMBER_V1

__all__ = ["constant", "let_binding", "rewrite"]


def _box(node: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function_expression", "children": [node], "value": BOX}


def _lazy_if(condition: Any, then: Any, otherwise: Any) -> dict[str, Any]:
    chosen = {
        "type": "or_expression",
        "children": [
            {"type": "and_expression", "children": [condition, _box(then)]},
            _box(otherwise),
        ],
    }
    first = {"type": "index", "value": 0, "children": []}
    return {"type": "index_expression", "children": [chosen, first]}


def _rewrite(node: Any, version: int) -> Any:
    if not isinstance(node, dict):
        return node
    children = node.get("children")
    new_children = children
    if isinstance(children, list):
        rewritten = [_rewrite(child, version) for child in children]
        if any(new is not old for new, old in zip(rewritten, children, strict=True)):
            new_children = rewritten
    if node.get("type") == "function_expression":
        name = node.get("value")
        if name == "if" and isinstance(new_children, list) and len(new_children) == 3:
            return _lazy_if(*new_children)
        if name == "to_number" and version == 1:
            return {**node, "children": new_children, "value": TO_NUMBER_V1}
    if new_children is children:
        return node
    return {**node, "children": new_children}


def rewrite(parsed: ParsedResult, version: int) -> ParsedResult:
    """``parsed`` with lazy ``if`` calls and, in version 1, version 1's ``to_number``.

    Returns ``parsed`` itself when nothing changes.
    """
    tree = _rewrite(parsed.parsed, version)
    return parsed if tree is parsed.parsed else ParsedResult(parsed.expression, tree)


def let_binding(parsed: ParsedResult) -> ParsedResult:
    """A ``let`` value as a one-element ``for_each`` list (``_box(value)``).

    A binding is evaluated once per firing, like a loop over one element: the engine
    binds the name for every later part of the rule.
    """
    return ParsedResult(parsed.expression, _box(parsed.parsed))


def constant(value: Any) -> ParsedResult:
    """An expression that always gives ``value`` (shown as its JMESPath literal)."""
    text = "`" + json.dumps(value, ensure_ascii=False).replace("`", "\\`") + "`"
    return ParsedResult(text, {"type": "literal", "value": value, "children": []})
