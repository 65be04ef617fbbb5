"""Fields a mapping reads that no Inspect payload of their lifecycle point has: likely typos.

Why: JMESPath gives null for a field that does not exist, so ``sample.scroes.match.value``
silently writes nothing, just like a field that this one log happens not to have. The
two can be told apart without any log: the context documents are built from Inspect's
own types (the hook payload dataclasses, and the pydantic models inside them, e.g.
``SampleEnd.sample`` is an ``EvalSample``), so a field that none of those types declare
can never have a value. This module walks each expression's JMESPath tree over those
types (their shapes, :mod:`.payload_shapes`) and reports such fields
with a "did you mean" taken from the type's own field names.

It only reports what is certain: where the type of a value is not known (a function's
result, ``Any``, a JSON value, a dict's keys), nothing below it is checked.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inspect_mlflow._inspect.payload_shapes import (
    ANY,
    Dict,
    List,
    Obj,
    Scalar,
    Shape,
    members,
    of_type,
    point_shape,
    record,
    union,
)
from inspect_mlflow._mapping.checks import COMPUTED_NAMES
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

__all__ = ["LITERAL_NAMES", "FieldTypo", "field_chain", "field_typos", "node_path"]


# -- the walk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldTypo:
    """A field that cannot exist where an expression reads it."""

    where: Where
    expression: str
    path: str
    """The path up to and including the field, e.g. ``sample.scroes``."""
    field: str
    owner: str
    """What the field was looked up on, e.g. ``EvalSample``."""
    suggestions: tuple[str, ...]

    @property
    def message(self) -> str:
        """``sample.scroes`` is not a field of EvalSample (did you mean ``scores``?)."""
        if self.owner.startswith(("a ", "null")):
            text = f"`{self.path}`: {self.owner} has no fields"
        else:
            text = f"`{self.path}` is not a field of {self.owner}"
        if self.suggestions:
            text += " (did you mean " + " or ".join(f"`{s}`" for s in self.suggestions) + "?)"
        return text


_EXPREF_FUNCTIONS = {
    "sort_by": 0,
    "max_by": 0,
    "min_by": 0,
    "index_by": 0,
    "group_by": 0,
    "map": 1,
}
"""Functions whose ``&expr`` argument is evaluated on the elements of their array argument
(at this position)."""


LITERAL_NAMES = frozenset({"null"})
"""Bare names a mapping writes meaning the literal: JMESPath reads them as fields that
never exist, so they give null, which is what the author wants."""


class _Walker:
    """Evaluates one expression's tree over shapes instead of values, noting typos."""

    def __init__(self, expr: Expr, scope: Shape) -> None:
        self.expr = expr
        self.scope = scope
        self.typos: list[FieldTypo] = []

    def walk(self) -> Shape:
        parsed = getattr(self.expr.parsed, "parsed", None)
        if not isinstance(parsed, dict):
            return ANY
        return self.node(parsed, self.scope, "")

    def lookup(self, shape: Shape, name: str, path: str) -> Shape:
        full = f"{path}.{name}" if path else name
        options = members(shape)
        found: list[Shape] = []
        objects: list[Obj] = []
        for member in options:
            if member is ANY:
                return ANY
            if isinstance(member, Dict):
                found.append(member.value)
            elif isinstance(member, Obj):
                objects.append(member)
                if member.has(name):
                    found.append(member.field(name))
            elif isinstance(member, List) and not found:
                # A field of an array is null: fine only when another member has it.
                continue
        if found:
            return union(found)
        if objects:
            names = sorted({n for o in objects for n in o.names})
            owner = objects[0].title if len(objects) == 1 else _union_title(objects)
            close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
            self._note(full, name, owner, tuple(close))
        elif options and all(isinstance(m, Scalar) for m in options):
            self._note(full, name, " or ".join(sorted({m.title for m in options})), ())
        return ANY

    def _note(self, path: str, name: str, owner: str, close: tuple[str, ...]) -> None:
        self.typos.append(FieldTypo(self.expr.where, self.expr.text, path, name, owner, close))

    def elements(self, shape: Shape) -> Shape:
        items: list[Shape] = []
        for member in members(shape):
            if member is ANY:
                return ANY
            if isinstance(member, List):
                items.append(member.item)
            elif not isinstance(member, Scalar):
                return ANY
        return union(items) if items else ANY

    def node(self, node: dict[str, Any], current: Shape, path: str) -> Shape:
        kind = node.get("type")
        children: list[Any] = node.get("children") or []
        if kind == "field":
            name = str(node.get("value"))
            if name in LITERAL_NAMES:
                return Scalar("null")  # `null` reads a field that never exists: a null
            return self.lookup(current, name, path)
        if kind == "subexpression":  # n-ary once compiled: a.b.c is one node
            for child in children:
                current = self.node(child, current, path)
                path = node_path(child, path)
            return current
        if kind == "index_expression":
            left = self.node(children[0], current, path)
            return self.elements(left)
        if kind in ("projection", "filter_projection"):
            left = self.node(children[0], current, path)
            if children[0].get("type") == "index_expression" and (
                children[0]["children"][1].get("type") == "slice"
            ):
                left = List(left)  # a slice keeps the array
            item = self.elements(left)
            item_path = node_path(children[0], path) + "[]"
            if kind == "filter_projection":
                self.node(children[2], item, item_path)
            return List(self.node(children[1], item, item_path))
        if kind == "flatten":
            inner = self.elements(self.node(children[0], current, path))
            return List(self.elements(inner)) if isinstance(inner, List) else List(inner)
        if kind == "value_projection":
            left = self.node(children[0], current, path)
            values = _dict_values(left)
            return List(self.node(children[1], values, node_path(children[0], path) + ".*"))
        if kind in ("identity", "current"):
            return current
        if kind == "literal":
            return _literal(node.get("value"))
        if kind == "pipe":
            left = self.node(children[0], current, path)
            return self.node(children[1], left, node_path(children[0], path))
        if kind in ("or_expression", "and_expression"):
            return union(self.node(child, current, path) for child in children)
        if kind in ("not_expression", "comparator"):
            for child in children:
                self.node(child, current, path)
            return Scalar("boolean")
        if kind == "multi_select_dict":
            fields = {
                str(pair.get("value")): self.node(pair["children"][0], current, path)
                for pair in children
            }
            return record("an object built by the expression", fields)
        if kind == "multi_select_list":
            return List(union(self.node(child, current, path) for child in children))
        if kind == "function_expression":
            return self.function(str(node.get("value")), children, current, path)
        if kind == "expref":
            return ANY  # checked by the function that takes it
        for child in children:
            if isinstance(child, dict):
                self.node(child, current, path)
        return ANY

    def function(self, name: str, args: list[Any], current: Shape, path: str) -> Shape:
        shapes: list[Shape] = []
        for arg in args:
            if isinstance(arg, dict) and arg.get("type") == "expref":
                shapes.append(ANY)
            else:
                shapes.append(self.node(arg, current, path))
        position = _EXPREF_FUNCTIONS.get(name)
        if position is not None and len(args) > position:
            item = self.elements(shapes[position])
            for arg in args:
                if isinstance(arg, dict) and arg.get("type") == "expref":
                    self.node(arg["children"][0], item, node_path(args[position], path) + "[]")
        if name == "items" and shapes:
            values = _dict_values(shapes[0])
            return List(record("an item", {"key": Scalar("string"), "value": values}))
        if name == "values" and shapes:
            return List(_dict_values(shapes[0]))
        if name in ("coalesce", "not_null"):
            return union(shapes)
        if name in ("compact", "unique", "sort", "reverse", "sort_by") and shapes:
            return shapes[0]
        if name in ("length", "to_number", "sum", "avg", "sum_known", "percentile"):
            return Scalar("number")
        if name in ("to_string", "join", "format", "json", "type", "safe_key", "truncate"):
            return Scalar("string")
        return ANY


def _dict_values(shape: Shape) -> Shape:
    """The values of an object of this shape (ANY unless it is a dict; nulls left out)."""
    out: list[Shape] = []
    for member in members(shape):
        if isinstance(member, Dict):
            out.append(member.value)
        elif not isinstance(member, Scalar):
            return ANY
    return union(out) if out else ANY


def _union_title(objects: list[Obj]) -> str:
    titles = [o.title for o in objects]
    if len(titles) > 3 and all(t.endswith("Event") for t in titles):
        return f"any of Inspect's {len(titles)} event types"
    if len(titles) > 3:
        return f"any of {len(titles)} types ({', '.join(titles[:3])}, ...)"
    return " or ".join(titles)


def node_path(node: Any, prefix: str) -> str:
    """Text of a simple path node, for messages (``sample.output``)."""
    if not isinstance(node, dict):
        return prefix
    kind = node.get("type")
    if kind == "field":
        name = str(node.get("value"))
        return f"{prefix}.{name}" if prefix else name
    if kind == "subexpression":
        for child in node["children"]:
            prefix = node_path(child, prefix)
        return prefix
    if kind == "index_expression":
        return node_path(node["children"][0], prefix) + "[]"
    if kind == "flatten":
        return node_path(node["children"][0], prefix) + "[]"
    if kind in ("current", "identity"):
        return prefix
    if kind == "function_expression":
        args = node.get("children") or []
        inner = node_path(args[0], "") if len(args) == 1 else ""
        return f"{node.get('value')}({inner or '...'})"
    if kind in ("or_expression", "and_expression"):
        return node_path(node["children"][0], prefix)
    return prefix or "(...)"


def _literal(value: Any) -> Shape:
    if isinstance(value, dict):
        return record("a literal object", {k: _literal(v) for k, v in value.items()})
    if isinstance(value, list):
        return List(union(_literal(v) for v in value) if value else ANY)
    return of_type(type(value))


# -- over a whole mapping ----------------------------------------------------------------


def _computed(mapping: CompiledMapping, kind: str | None) -> dict[str, Shape]:
    """The shapes of the names the engine adds to rule documents (``COMPUTED_NAMES``)."""
    number = Scalar("number")
    counter = record(
        "the counters",
        {n: record(f"counter {n}", {"count": number, "index": number}) for n in mapping.counters},
    )
    series = record("the series", {n: List(ANY) for n in mapping.series})
    spec = mapping.runs.get(kind) if kind else None
    parent_spec = mapping.runs.get(spec.parent) if spec and spec.parent else None
    parent_context = point_shape(parent_spec.open) if parent_spec else ANY
    string = Scalar("string")
    # Open: the engine adds to `run` over time; what is declared here is checked below it.
    parent_fields = {"kind": string, "key": string, "name": string, "context": parent_context}
    parent = Obj("the parent run", parent_fields, parent_fields.__getitem__, open_=True)
    dataset = record("a dataset input", {"name": string, "digest": string})
    run_fields = {
        "kind": string,
        "key": string,
        "name": string,
        "parent": parent,
        "models": List(string),
        "datasets": List(dataset),
    }
    run = Obj("the run", run_fields, run_fields.__getitem__, open_=True)
    shapes = {"counter": counter, "series": series, "run": run}
    assert shapes.keys() == COMPUTED_NAMES, "each name the engine adds needs its shape here"
    return shapes


def _scope(base: Shape, names: Mapping[str, Shape]) -> Shape:
    """``base`` with more top-level names (loop names win)."""
    if not names:
        return base
    shapes = [m for m in members(base) if isinstance(m, Obj)]
    if base is ANY or not shapes:
        return ANY
    out = []
    for shape in shapes:
        combined = dict.fromkeys(shape.names)
        combined.update(dict.fromkeys(names))

        def resolve(name: str, shape: Obj = shape) -> Shape:
            return names[name] if name in names else shape.field(name)

        out.append(Obj(shape.title, combined, resolve, shape.open))
    return union(out)


class _Checker:
    def __init__(self, mapping: CompiledMapping) -> None:
        self.mapping = mapping
        self.typos: list[FieldTypo] = []
        self.seen: set[int] = set()

    def check(self, expr: Expr | None, scope: Shape) -> Shape:
        if expr is None or not hasattr(expr, "parsed"):
            return ANY
        walker = _Walker(expr, scope)
        shape = walker.walk()
        if id(expr) not in self.seen:
            self.seen.add(id(expr))
            self.typos.extend(walker.typos)
        return shape

    def entries(self, entries: Entries, scope: Shape) -> None:
        for template, expr in entries:
            for part in template.parts:
                if isinstance(part, Expr):
                    self.check(part, scope)
            self.check(expr, scope)

    def loops(self, loops: Loops, scope: Shape) -> Shape:
        """Check each loop expression, binding its element under its name for the next."""
        for name, expr in loops:
            shape = self.check(expr, scope)
            element = _loop_element(shape)
            scope = _scope(scope, {name: element})
        return scope

    def rule(self, rule: Rule) -> None:
        base = _scope(point_shape(rule.point), _computed(self.mapping, rule.run))
        for expr in (rule.when, rule.unique, rule.step):
            self.check(expr, base)
        for _, expr in rule.collect:
            self.check(expr, base)
        scope = self.loops(rule.for_each, base)
        for item in dataclasses.fields(rule):
            if item.name not in ("when", "unique", "step", "collect", "for_each", "where"):
                self.generic(getattr(rule, item.name), scope)

    def generic(self, value: Any, scope: Shape) -> None:
        """Check every expression of a rule's output, whatever its kind (traces, links...).

        A part with its own ``for_each`` (a trace's spans, feedback, expectations) binds
        its loop names first, so they are read as what they iterate over.
        """
        if isinstance(value, Expr):
            self.check(value, scope)
        elif isinstance(value, KeyTemplate):
            for part in value.parts:
                if isinstance(part, Expr):
                    self.check(part, scope)
        elif isinstance(value, ObjectExpr):
            self.entries(value.entries, scope)
        elif isinstance(value, (tuple, list)):
            for item in value:
                self.generic(item, scope)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            loops = getattr(value, "for_each", None)
            inner = self.loops(loops, scope) if loops else scope
            for item in dataclasses.fields(value):
                if item.name not in ("for_each", "where"):
                    self.generic(getattr(value, item.name), inner)

    def runs(self) -> None:
        mapping = self.mapping
        used = {point for point, rules in mapping.rules.items() if rules}
        for spec in mapping.runs.values():
            computed = _computed(mapping, spec.kind)
            opening = _scope(point_shape(spec.open), computed)
            closing_points = {spec.close} | _ancestor_closes(mapping, spec.kind)
            closing = _scope(union(point_shape(p) for p in sorted(closing_points)), computed)
            routed = {spec.open, *closing_points} | {
                r.point for rules in mapping.rules.values() for r in rules if r.run == spec.kind
            }
            keyed = union(point_shape(p) for p in sorted(routed & (used | {spec.open})))
            self.check(spec.key, _scope(keyed, computed))
            for expr in (spec.name, spec.resume, getattr(spec, "start", None)):
                self.check(expr, opening)
            self.entries(spec.tags, opening)
            self.check(spec.status, closing)
            self.check(getattr(spec, "end", None), closing)


def _ancestor_closes(mapping: CompiledMapping, kind: str) -> set[str]:
    """Close points of a kind's ancestors: a run still open then is closed there too."""
    out: set[str] = set()
    spec = mapping.runs.get(kind)
    while spec is not None and spec.parent:
        spec = mapping.runs.get(spec.parent)
        if spec is not None:
            out.add(spec.close)
    return out


def _loop_element(shape: Shape) -> Shape:
    """What a ``for_each`` name is bound to: an array's element, an object's item."""
    out: list[Shape] = []
    for member in members(shape):
        if member is ANY:
            return ANY
        if isinstance(member, List):
            out.append(member.item)
        elif isinstance(member, Dict):
            out.append(record("an item", {"key": Scalar("string"), "value": member.value}))
        elif isinstance(member, Obj):
            out.append(record("an item", {"key": Scalar("string"), "value": ANY}))
    return union(out) if out else ANY


def field_typos(mapping: CompiledMapping) -> list[FieldTypo]:
    """Every field the mapping reads that no payload of its point has, in mapping order.

    Args:
        mapping: A compiled mapping.

    Returns:
        One entry per field per expression (an expression may hold several).
    """
    checker = _Checker(mapping)
    checker.runs()
    for rules in mapping.rules.values():
        for rule in rules:
            checker.rule(rule)
    files = {name: number for number, name in enumerate(mapping.files)}
    return sorted(
        checker.typos, key=lambda t: (files.get(t.where.file, -1), t.where.line, t.where.col)
    )


def field_chain(node: dict[str, Any]) -> tuple[str, ...] | None:
    """The field names of a plain chain node (``sample.error.message``), else None."""
    kind = node.get("type")
    if kind == "field":
        return (str(node.get("value")),)
    if kind == "subexpression":
        out: tuple[str, ...] = ()
        for child in node["children"]:
            part = field_chain(child)
            if part is None:
                return None
            out += part
        return out
    return None
