"""Which lifecycle points can change anything: decided from the payload alone, cheaply.

Why: with delivery in a separate process (see :mod:`inspect_mlflow._delivery.remote`), every point
the engine needs must be serialised in the eval's process. ``sample_event`` fires dozens
of times per sample and the default mapping uses two event kinds; shipping the rest (a
model event carries the whole conversation) would cost the eval more than the mapping.

A point matters when it opens or closes a run, or when any of its rules could apply: a
rule without ``when``, a ``when`` that reads engine state (``counter``, ``series``,
``run``: only the engine knows them), or a ``when`` that is true of the payload. An
expression that fails counts as true, so the engine still sees the point and reports
the error as it always does. The answer never depends on earlier points, so filtering
here and evaluating in the other process give the same writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from inspect_mlflow._engine.expr_compiler import Evaluator, is_false
from inspect_mlflow._engine.rule_document import COMPUTED_NAMES as ENGINE_NAMES
from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import CompiledMapping, Expr


def _names(node: Any) -> Iterator[str]:
    """Every field name a JMESPath AST node (or its children) reads."""
    if isinstance(node, dict):
        if node.get("type") == "field":
            yield str(node.get("value"))
        for child in node.get("children", ()):
            yield from _names(child)


def _payload_only(expr: Expr) -> bool:
    ast = getattr(expr.parsed, "parsed", None)
    return ast is not None and ENGINE_NAMES.isdisjoint(_names(ast))


class PointFilter:
    """``matters(point, ctx)``: may the engine do anything with this point?"""

    def __init__(self, mapping: CompiledMapping) -> None:
        always = {spec.open for spec in mapping.runs.values()}
        always |= {spec.close for spec in mapping.runs.values()}
        self._conditions: dict[str, tuple[Expr, ...] | None] = {}
        for point, rules in mapping.rules.items():
            conditions: list[Expr] = []
            for rule in rules:
                if point in always or rule.when is None or not _payload_only(rule.when):
                    conditions = []
                    always.add(point)
                    break
                conditions.append(rule.when)
            self._conditions[point] = None if point in always else tuple(conditions)
        for point in always:
            self._conditions[point] = None
        # Compiled once to closures: this runs on Inspect's event loop, once per event.
        self._evaluator = Evaluator(OPTIONS)

    def decides(self, point: str) -> bool:
        """True when :meth:`matters` can ever be False for ``point`` (it has conditions)."""
        return self._conditions.get(point) is not None

    def matters(self, point: str, ctx: Mapping[str, Any]) -> bool:
        """True unless every rule of ``point`` is certain not to apply to ``ctx``."""
        conditions = self._conditions.get(point, ())
        if conditions is None:
            return True
        for condition in conditions:
            try:
                value = self._evaluator.search(condition, ctx)
            except Exception:
                return True
            if not is_false(value):
                return True
        return False
