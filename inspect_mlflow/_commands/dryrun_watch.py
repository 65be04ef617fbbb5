"""What the dry run watches while the engine runs: every expression's values and problems.

Through the engine's public hooks (``Engine(problems=..., on_search=...,
explain_error=...)``), not a subclass: :class:`ExpressionWatch` counts per expression how
often it ran, gave a value and held, probes the field this log did not have when it
gave nothing, and describes an expression error with the likely typo behind it;
:class:`PlacedProblems` keeps each problem at its place in the mapping, printed rather
than logged. From those, :func:`gave_nothing` and :func:`never_applied` list what wrote
nothing and why.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from inspect_mlflow._commands.dryrun_plan import Finding
from inspect_mlflow._engine.engine import Problem, Problems
from inspect_mlflow._engine.views import MISSING
from inspect_mlflow._inspect.field_errors import absent_field, explain_error
from inspect_mlflow._inspect.payload_fields import FieldTypo
from inspect_mlflow._mapping.model import (
    CompiledMapping,
    Entries,
    Expr,
    KeyTemplate,
    Loops,
    ObjectExpr,
    Rule,
    Where,
)

__all__ = ["ExpressionWatch", "PlacedProblems", "gave_nothing", "never_applied"]


class PlacedProblems(Problems):
    """The engine's problem counts, kept per place and never logged (they are printed)."""

    def __init__(self) -> None:
        super().__init__()
        self.placed: dict[tuple[str, str], Finding] = {}

    def add(self, kind: str, where: Any, message: str) -> None:
        """Count one problem at its place; remember the first message there."""
        problem = self.by_kind.setdefault(kind, Problem(kind, 0, f"{where}: {message}"))
        problem.count += 1
        place = str(where) if where else ""
        found = self.placed.get((kind, place))
        if found is None:
            self.placed[(kind, place)] = Finding(kind, place, message)
        else:
            found.count += 1


_PROBES = 50
"""Evaluations of an expression that gave nothing probed for the field that was absent."""


class ExpressionWatch:
    """Per expression: how often it ran, gave a value and held, and why it gave nothing.

    Pass :meth:`searched` as the engine's ``on_search`` and :meth:`explain` as its
    ``explain_error``.

    Args:
        mapping: The compiled mapping the engine applies.
        typos: Its likely typos (``field_typos``): an error's explanation names them.
    """

    def __init__(self, mapping: CompiledMapping, typos: Sequence[FieldTypo] = ()) -> None:
        self.runs_of: dict[int, int] = {}
        """id(expr) -> evaluations."""
        self.gave: dict[int, int] = {}
        """id(expr) -> evaluations that gave a value (not null, "", [] or {})."""
        self.held: dict[int, int] = {}
        """id(expr) -> evaluations that were true (JMESPath truthiness)."""
        self.absent: dict[int, Counter[str]] = {}
        """id(expr) -> the absent (or empty) field each probed empty evaluation found."""
        self.typos: dict[tuple[Where, str], list[FieldTypo]] = {}
        for typo in typos:
            self.typos.setdefault((typo.where, typo.expression), []).append(typo)
        self._in_keys = {id(e) for e in _key_template_exprs(mapping)}
        """Placeholders of key templates: one that gives "" is a value (the key just has
        no text there)."""

    def explain(self, expr: Expr, err: Exception) -> str:
        """An expression error as a sentence, with its likely typos as the cause."""
        return explain_error(expr, err, self.typos.get((expr.where, expr.text), ()))

    def searched(self, expr: Expr, doc: Any, value: Any) -> None:
        """Note one evaluation; probe why when it gave nothing (bounded per expression)."""
        key = id(expr)
        self.runs_of[key] = self.runs_of.get(key, 0) + 1
        empty = value is MISSING or value is None
        if not empty and isinstance(value, (str, list, dict)) and len(value) == 0:
            empty = not (key in self._in_keys and isinstance(value, str))
        if not empty:
            self.gave[key] = self.gave.get(key, 0) + 1
            if value is not False:
                self.held[key] = self.held.get(key, 0) + 1
        elif not self.gave.get(key):
            seen = self.absent.setdefault(key, Counter())
            if sum(seen.values()) < _PROBES:
                seen[absent_field(expr, doc) or ""] += 1


def gave_nothing(mapping: CompiledMapping, watch: ExpressionWatch) -> list[dict[str, str]]:
    """Expressions that ran and never gave a value, with the field this log lacked."""
    out: list[dict[str, str]] = []
    seen: set[int] = set()
    for expr in _mapping_exprs(mapping):
        key = id(expr)
        if key in seen:
            continue
        seen.add(key)
        if (expr.where, expr.text) in watch.typos:
            continue  # reported as a likely typo
        if watch.runs_of.get(key) and not watch.gave.get(key):
            seen_absent = watch.absent.get(key) or Counter()
            # The deepest field: absent even where the fields before it are there
            # (`event.output.usage.total_cost` of a model call, not `event.output` of a span).
            named = [(label.count("."), n, label) for label, n in seen_absent.items() if label]
            absent = max(named)[2] if named else ""
            out.append({"where": str(expr.where), "expression": expr.text, "absent": absent})
    return out


def never_applied(
    mapping: CompiledMapping, watch: ExpressionWatch, fired: set[str]
) -> list[dict[str, str]]:
    """Rules that never ran: their point never fired, or their ``when`` never held."""
    out: list[dict[str, str]] = []
    for point, rules in mapping.rules.items():
        for number, rule in enumerate(rules):
            name = rule.id or f"{point}[{number}]"
            if point not in fired:
                reason = f"{point} never fired for this log"
            elif rule.when is not None and not watch.held.get(id(rule.when)):
                reason = f"its when never held: {rule.when.text}"
            else:
                continue
            out.append({"where": str(rule.where), "rule": name, "reason": reason})
    return out


def _entry_exprs(entries: Entries) -> Iterator[Expr]:
    for template, expr in entries:
        yield from _template_exprs(template)
        yield expr


def _template_exprs(template: KeyTemplate | None) -> Iterator[Expr]:
    if template is not None:
        yield from (part for part in template.parts if isinstance(part, Expr))


def _loop_exprs(loops: Loops) -> Iterator[Expr]:
    yield from (expr for _, expr in loops)


def _value_exprs(value: Expr | ObjectExpr | None) -> Iterator[Expr]:
    if isinstance(value, ObjectExpr):
        yield from _entry_exprs(value.entries)
    elif value is not None:
        yield value


def _rule_exprs(rule: Rule) -> Iterator[Expr | None]:
    """Every expression of a rule except ``when`` (reported as "never applied")."""
    yield rule.unique
    yield rule.step
    yield from (expr for _, expr in rule.collect)
    yield from _loop_exprs(rule.for_each)
    for entries in (rule.params, rule.tags, rule.metrics, rule.row):
        yield from _entry_exprs(entries)
    for template in (rule.table, rule.records, rule.artifact):
        yield from _template_exprs(template)
    yield from _value_exprs(rule.record)
    yield from _value_exprs(rule.value)
    if rule.model is not None:
        yield rule.model.name
        yield from _entry_exprs(rule.model.tags)
        yield from _entry_exprs(rule.model.params)
    if rule.dataset is not None:
        data = rule.dataset
        yield from (data.name, data.digest, data.source, data.source_type, data.context)
        yield from _value_exprs(data.profile)
        yield from _value_exprs(data.schema)
    if rule.link is not None:
        yield from (rule.link.model, rule.link.dataset)
    trace = rule.trace
    if trace is None:
        return
    yield from (trace.key, trace.name, trace.start, trace.end, trace.inputs, trace.outputs)
    yield trace.status
    yield from _entry_exprs(trace.tags)
    yield from _entry_exprs(trace.metadata)
    yield trace.model
    if trace.spans is not None:
        spans = trace.spans
        yield from _loop_exprs(spans.for_each)
        yield from (spans.id, spans.parent, spans.name, spans.type, spans.start, spans.end)
        yield from (spans.inputs, spans.outputs, spans.status, spans.error)
        yield from _entry_exprs(spans.attributes)
    if trace.feedback is not None:
        feedback = trace.feedback
        yield from _loop_exprs(feedback.for_each)
        yield from (feedback.name, feedback.value, feedback.rationale, feedback.error)
        yield from _entry_exprs(feedback.metadata)
    expectations = getattr(trace, "expectations", None)
    if expectations is not None:
        yield from _loop_exprs(expectations.for_each)
        yield from (expectations.name, expectations.value)
        yield from _entry_exprs(expectations.metadata)


def _mapping_exprs(mapping: CompiledMapping) -> Iterator[Expr]:
    """Every expression of the mapping that writes or shapes a value, in mapping order."""
    for spec in mapping.runs.values():
        yield spec.key
        if spec.name is not None:
            yield spec.name
        yield from _entry_exprs(spec.tags)
        yield spec.status
    for rules in mapping.rules.values():
        for rule in rules:
            yield from (expr for expr in _rule_exprs(rule) if expr is not None)


def _key_template_exprs(mapping: CompiledMapping) -> Iterator[Expr]:
    """The placeholders of every key template of the mapping's runs and rules."""
    stack: list[Any] = [*mapping.runs.values(), *mapping.rules.values()]
    while stack:
        item = stack.pop()
        if isinstance(item, KeyTemplate):
            yield from (part for part in item.parts if isinstance(part, Expr))
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, (Expr, type)):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
