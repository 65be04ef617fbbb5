"""At run time: why an expression gave nothing, and what a JMESPath type error means.

The dry run reports these next to a rule that wrote nothing or failed, naming the first
absent field (``sample.error``) or the typo that explains a ``got null`` error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from inspect_mlflow._inspect.payload_fields import LITERAL_NAMES, FieldTypo, field_chain, node_path
from inspect_mlflow._mapping.model import (
    Expr,
)

__all__ = ["absent_field", "explain_error"]


_JSON_TYPES = {"null": "null", "string": "a string", "number": "a number", "boolean": "a boolean"}
_JSON_TYPES.update({"array": "an array", "object": "an object", "expref": "an expression"})


def explain_error(expr: Expr, err: Exception, typos: Iterable[FieldTypo] = ()) -> str:
    """A JMESPath error as a sentence, with the typos of the expression as the likely cause.

    ``length(sample.outptu.completion)`` gives ``length() got null (it takes a string, an
    array or an object): `sample.outptu` is not a field of EvalSample (did you mean
    `output`?)`` instead of jmespath's "invalid type for value: None".
    """
    from jmespath.exceptions import ArityError, JMESPathTypeError

    hints = [typo.message for typo in typos]
    if isinstance(err, JMESPathTypeError):
        got = _JSON_TYPES.get(str(err.actual_type), str(err.actual_type))
        wanted = [_JSON_TYPES.get(str(t), str(t)) for t in err.expected_types or ()]
        takes = ", ".join(wanted[:-1]) + (" or " if len(wanted) > 1 else "") + wanted[-1]
        text = f"{err.function_name}() got {got} (it takes {takes})" if wanted else str(err)
        if not hints and got == "null":
            hints.append("a field it reads is absent here; guard it, e.g. `x || ''`")
    elif isinstance(err, ArityError):
        text = str(err)
    else:
        text = str(err) or type(err).__name__
    return f"{expr.text}: {text}" + (": " + "; ".join(hints) if hints else "")


def absent_field(expr: Expr, doc: Any) -> str | None:
    """The first field an expression reads that is null or empty in ``doc``, as a path.

    ``sample.error.message`` on a sample without error gives ``sample.error``; a field
    after a projection is named after it (``values(log.stats.model_usage)[].total_cost``).
    None when every field it reads has a value (a condition or a function gave nothing).
    """
    parsed = getattr(expr.parsed, "parsed", None)
    if not isinstance(parsed, dict):
        return None
    try:
        from jmespath.visitor import TreeInterpreter

        return _absent(parsed, doc, TreeInterpreter(expr.options), "")
    except Exception:  # a probe must never fail the dry run
        return None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def _first_absent(value: Any, chain: tuple[str, ...]) -> int | None:
    """How many fields of ``chain`` it takes to reach nothing, or None when all are there."""
    for number, name in enumerate(chain, 1):
        value = value.get(name) if isinstance(value, Mapping) else None
        if _is_empty(value):
            return number
    return None


def _absent(node: dict[str, Any], doc: Any, interp: Any, prefix: str) -> str | None:
    chain = field_chain(node)
    if chain is not None:
        if chain[0] in LITERAL_NAMES:
            return None
        depth = _first_absent(doc, chain)
        if depth is None:
            return None
        path = ".".join(chain[:depth])
        return f"{prefix}.{path}" if prefix else path
    kind = node.get("type")
    children = [c for c in node.get("children") or [] if isinstance(c, dict)]
    if kind in ("projection", "filter_projection", "value_projection"):
        left = children[0]
        found = _absent(left, doc, interp, prefix)
        if found is not None:
            return found
        items = interp.visit(left, doc)
        if kind == "value_projection":
            items = list(items.values()) if isinstance(items, Mapping) else None
        if not isinstance(items, list) or not items:
            return None
        right = field_chain(children[1])
        if right is None:
            return None
        depths = [_first_absent(item, right) for item in items]
        if any(d is None for d in depths):
            return None
        base = node_path(left, prefix) + ("[]" if not node_path(left, prefix).endswith("]") else "")
        return f"{base}.{'.'.join(right[: min(d for d in depths if d is not None)])}"
    if kind in ("subexpression", "index_expression", "pipe"):
        return _absent(children[0], doc, interp, prefix) if children else None
    if kind in ("literal", "expref", "current", "identity"):
        return None
    for child in children:
        found = _absent(child, doc, interp, prefix)
        if found is not None:
            return found
    return None
