"""Fields a mapping reads that no Inspect payload of their lifecycle point has: likely typos.

Why: JMESPath gives null for a field that does not exist, so ``sample.scroes.match.value``
silently writes nothing, just like a field that this one log happens not to have. The
two can be told apart without any log: the context documents are built from Inspect's
own types (the hook payload dataclasses, and the pydantic models inside them, e.g.
``SampleEnd.sample`` is an ``EvalSample``), so a field that none of those types declare
can never have a value. This module walks each expression's JMESPath tree over those
types (what :mod:`inspect_mlflow._engine.views` shows of them) and reports such fields
with a "did you mean" taken from the type's own field names.

It only reports what is certain: where the type of a value is not known (a function's
result, ``Any``, a JSON value, a dict's keys), nothing below it is checked.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import difflib
import enum
import pathlib
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

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

__all__ = ["FieldTypo", "absent_field", "explain_error", "field_typos", "point_shape"]


# -- shapes: what a value of a type looks like to JMESPath ------------------------------


class Shape:
    """The JSON shape of a value; :data:`ANY` when unknown (nothing below it is checked)."""

    title = "a value"


class _Any(Shape):
    title = "any value"


ANY: Shape = _Any()


@dataclass(frozen=True, eq=False)
class Scalar(Shape):
    """A string, number, boolean or null: it has no fields."""

    kind: str

    @property
    def title(self) -> str:  # type: ignore[override]
        """How the message names it."""
        return f"a {self.kind}" if self.kind != "null" else "null"


class Obj(Shape):
    """An object with known field names (a model, a dataclass, a context document)."""

    def __init__(
        self, title: str, names: Iterable[str], resolve: Callable[[str], Shape], open_: bool = False
    ) -> None:
        self.title = title
        self.names = tuple(dict.fromkeys(names))
        self._resolve = resolve
        self._cache: dict[str, Shape] = {}
        self.open = open_
        """Extra fields allowed: any name may exist."""

    def has(self, name: str) -> bool:
        """Whether a field of this name can exist."""
        return self.open or name in self.names

    def field(self, name: str) -> Shape:
        """The shape of one field (ANY for an extra field of an open object)."""
        if name not in self.names:
            return ANY
        shape = self._cache.get(name)
        if shape is None:
            shape = self._cache[name] = self._resolve(name)
        return shape


def record(title: str, fields: Mapping[str, Shape]) -> Obj:
    """An object with fixed fields of known shapes."""
    return Obj(title, fields, lambda name: fields[name])


@dataclass(frozen=True, eq=False)
class Dict(Shape):
    """An object with any keys, each value of one shape."""

    value: Shape
    title = "an object"


@dataclass(frozen=True, eq=False)
class List(Shape):
    """An array whose elements have one shape."""

    item: Shape
    title = "an array"


@dataclass(frozen=True, eq=False)
class Union(Shape):
    """One of several shapes (``X | None``, a discriminated union of events)."""

    members: tuple[Shape, ...]
    title = "a union"


def union(shapes: Iterable[Shape]) -> Shape:
    """The union of shapes, flattened; ANY absorbs everything."""
    out: list[Shape] = []
    for shape in shapes:
        for member in shape.members if isinstance(shape, Union) else (shape,):
            if member is ANY:
                return ANY
            if not any(member is seen for seen in out):
                out.append(member)
    if not out:
        return ANY
    return out[0] if len(out) == 1 else Union(tuple(out))


def _members(shape: Shape) -> tuple[Shape, ...]:
    return shape.members if isinstance(shape, Union) else (shape,)


# -- from Python types -------------------------------------------------------------------

_STRINGS = (
    str,
    bytes,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    pathlib.PurePath,
)
_MODELS: dict[type, Shape] = {}
_ERROR = record("an exception", {"type": Scalar("string"), "message": Scalar("string")})


def of_type(tp: Any) -> Shape:
    """The shape of a value of a Python type as the context views convert it."""
    try:
        return _of_type(tp)
    except Exception:  # an exotic annotation: do not guess
        return ANY


def _of_type(tp: Any) -> Shape:
    if tp is None or tp is type(None):
        return Scalar("null")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _of_type(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return union(_of_type(arg) for arg in args)
    if origin is typing.Literal:
        return union(_of_type(type(arg)) for arg in args)
    value = getattr(tp, "__value__", None)  # a `type X = ...` alias
    if value is not None and origin is None and not isinstance(tp, type):
        return ANY if getattr(tp, "__name__", "") == "JsonValue" else _of_type(value)
    if origin is not None and isinstance(origin, type):
        if issubclass(origin, Mapping):
            return Dict(_of_type(args[1]) if len(args) == 2 else ANY)
        if issubclass(origin, (Sequence, AbstractSet)) and not issubclass(origin, str):
            items = [a for a in args if a is not Ellipsis]
            return List(union(_of_type(a) for a in items) if items else ANY)
        return ANY
    if not isinstance(tp, type):
        return ANY
    if issubclass(tp, bool):
        return Scalar("boolean")
    if issubclass(tp, enum.Enum):
        return union(_of_type(type(member.value)) for member in tp)
    if issubclass(tp, (int, float, decimal.Decimal)):
        return Scalar("number")
    if issubclass(tp, _STRINGS):
        return Scalar("string")
    if issubclass(tp, BaseException):
        return _ERROR
    if issubclass(tp, Mapping):
        return Dict(ANY)
    if issubclass(tp, (list, tuple, set, frozenset)):
        return List(ANY)
    return _class_shape(tp)


def _class_shape(cls: type) -> Shape:
    """A pydantic model or dataclass as an object of its visible fields (cached per class)."""
    import pydantic

    from inspect_mlflow._engine.views import shape_of

    shape = _MODELS.get(cls)
    if shape is not None:
        return shape
    if issubclass(cls, pydantic.RootModel):
        shape = _MODELS[cls] = of_type(cls.model_fields["root"].annotation)
        return shape
    if issubclass(cls, pydantic.BaseModel):
        seen = shape_of(cls)
        fields = cls.model_fields
        custom = seen.custom

        def resolve(name: str) -> Shape:
            return ANY if name in custom else of_type(fields[name].annotation)

        # Extra fields (``extra="allow"``) are not open to the mapping: the views read
        # declared fields only.
        shape = Obj(cls.__name__, seen.names, resolve)
    elif dataclasses.is_dataclass(cls):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {}
        names = [f.name for f in dataclasses.fields(cls)]
        shape = Obj(cls.__name__, names, lambda name: of_type(hints.get(name, Any)))
    else:
        shape = ANY
    _MODELS[cls] = shape
    return shape


# -- context documents -------------------------------------------------------------------

_HEADER_EXCLUDE = frozenset({"samples", "reductions"})


def _log_header() -> Shape:
    """``log`` at task_end and each of ``logs`` at run_end: the header, plus ``location``."""
    from inspect_ai.log import EvalLog

    full = _class_shape(EvalLog)
    if not isinstance(full, Obj):
        return ANY
    names = [n for n in full.names if n not in _HEADER_EXCLUDE] + ["location"]

    def resolve(name: str) -> Shape:
        return Scalar("string") if name == "location" else full.field(name)

    return Obj("EvalLog (header: no samples)", names, resolve)


def _payload_type(point: str) -> Any:
    from inspect_ai.hooks import Hooks

    method = getattr(Hooks, f"on_{point}", None)
    if method is None:
        return None
    try:
        return typing.get_type_hints(method).get("data")
    except Exception:
        return None


_POINTS: dict[str, Shape] = {}


def point_shape(point: str) -> Shape:
    """The context document of a lifecycle point, as :func:`views.context` builds it.

    ANY when this Inspect version has no hook for the point (nothing is then checked).
    """
    shape = _POINTS.get(point)
    if shape is not None:
        return shape
    cls = _payload_type(point)
    if cls is None or not dataclasses.is_dataclass(cls):
        _POINTS[point] = ANY
        return ANY
    hints = typing.get_type_hints(cls)
    fields: dict[str, Shape] = {}
    for item in dataclasses.fields(cls):
        fields[item.name] = of_type(hints.get(item.name, Any))
    if point == "run_end":
        fields["exception"] = record(
            "the exception",
            {"type": Scalar("string"), "message": Scalar("string"), "cancelled": Scalar("boolean")},
        )
        fields["logs"] = List(_log_header())
    if point == "task_end":
        fields["log"] = _log_header()
    fields["point"] = Scalar("string")
    if "eval_id" in fields:
        fields["task_id"] = Scalar("string")  # the hook adds it to every point of a task
    shape = _POINTS[point] = record(f"the {point} context", fields)
    return shape


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


_LITERAL_NAMES = frozenset({"null"})
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
        members = _members(shape)
        found: list[Shape] = []
        objects: list[Obj] = []
        for member in members:
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
        elif members and all(isinstance(m, Scalar) for m in members):
            self._note(full, name, " or ".join(sorted({m.title for m in members})), ())
        return ANY

    def _note(self, path: str, name: str, owner: str, close: tuple[str, ...]) -> None:
        self.typos.append(FieldTypo(self.expr.where, self.expr.text, path, name, owner, close))

    def elements(self, shape: Shape) -> Shape:
        items: list[Shape] = []
        for member in _members(shape):
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
            if name in _LITERAL_NAMES:
                return Scalar("null")  # `null` reads a field that never exists: a null
            return self.lookup(current, name, path)
        if kind == "subexpression":  # n-ary once compiled: a.b.c is one node
            for child in children:
                current = self.node(child, current, path)
                path = _path(child, path)
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
            item_path = _path(children[0], path) + "[]"
            if kind == "filter_projection":
                self.node(children[2], item, item_path)
            return List(self.node(children[1], item, item_path))
        if kind == "flatten":
            inner = self.elements(self.node(children[0], current, path))
            return List(self.elements(inner)) if isinstance(inner, List) else List(inner)
        if kind == "value_projection":
            left = self.node(children[0], current, path)
            values = _dict_values(left)
            return List(self.node(children[1], values, _path(children[0], path) + ".*"))
        if kind in ("identity", "current"):
            return current
        if kind == "literal":
            return _literal(node.get("value"))
        if kind == "pipe":
            left = self.node(children[0], current, path)
            return self.node(children[1], left, _path(children[0], path))
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
                    self.node(arg["children"][0], item, _path(args[position], path) + "[]")
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
    for member in _members(shape):
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


def _path(node: Any, prefix: str) -> str:
    """Text of a simple path node, for messages (``sample.output``)."""
    if not isinstance(node, dict):
        return prefix
    kind = node.get("type")
    if kind == "field":
        name = str(node.get("value"))
        return f"{prefix}.{name}" if prefix else name
    if kind == "subexpression":
        for child in node["children"]:
            prefix = _path(child, prefix)
        return prefix
    if kind == "index_expression":
        return _path(node["children"][0], prefix) + "[]"
    if kind == "flatten":
        return _path(node["children"][0], prefix) + "[]"
    if kind in ("current", "identity"):
        return prefix
    if kind == "function_expression":
        args = node.get("children") or []
        inner = _path(args[0], "") if len(args) == 1 else ""
        return f"{node.get('value')}({inner or '...'})"
    if kind in ("or_expression", "and_expression"):
        return _path(node["children"][0], prefix)
    return prefix or "(...)"


def _literal(value: Any) -> Shape:
    if isinstance(value, dict):
        return record("a literal object", {k: _literal(v) for k, v in value.items()})
    if isinstance(value, list):
        return List(union(_literal(v) for v in value) if value else ANY)
    return _of_type(type(value))


# -- over a whole mapping ----------------------------------------------------------------


def _computed(mapping: CompiledMapping, kind: str | None) -> dict[str, Shape]:
    """``counter``, ``series`` and ``run``, which the engine adds to rule documents."""
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
    return {"counter": counter, "series": series, "run": run}


def _scope(base: Shape, names: Mapping[str, Shape]) -> Shape:
    """``base`` with more top-level names (loop names win)."""
    if not names:
        return base
    shapes = [m for m in _members(base) if isinstance(m, Obj)]
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
    for member in _members(shape):
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


def iter_paths(expr: Expr) -> Iterator[tuple[str, ...]]:
    """The plain field chains an expression reads (``sample.error.message``), in order.

    Chains end where something other than a field follows (an index, a projection, a
    function); they start at the document or at a loop name.
    """
    parsed = getattr(expr.parsed, "parsed", None)
    if isinstance(parsed, dict):
        yield from _chains(parsed)


def _chain(node: dict[str, Any]) -> tuple[str, ...] | None:
    kind = node.get("type")
    if kind == "field":
        return (str(node.get("value")),)
    if kind == "subexpression":
        out: tuple[str, ...] = ()
        for child in node["children"]:
            part = _chain(child)
            if part is None:
                return None
            out += part
        return out
    return None


def _chains(node: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    chain = _chain(node)
    if chain is not None:
        yield chain
        return
    kind = node.get("type")
    children = [c for c in node.get("children") or [] if isinstance(c, dict)]
    if kind in ("projection", "filter_projection", "value_projection", "pipe", "expref"):
        yield from _chains(children[0])  # what follows is relative to elements
        return
    if kind == "subexpression":
        yield from _chains(children[0])
        return
    if kind == "index_expression":
        yield from _chains(children[0])
        return
    for child in children:
        yield from _chains(child)


# -- at run time: why an expression gave nothing, what a type error means ----------------

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
    chain = _chain(node)
    if chain is not None:
        if chain[0] in _LITERAL_NAMES:
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
        right = _chain(children[1])
        if right is None:
            return None
        depths = [_first_absent(item, right) for item in items]
        if any(d is None for d in depths):
            return None
        base = _path(left, prefix) + ("[]" if not _path(left, prefix).endswith("]") else "")
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
