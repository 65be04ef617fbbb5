"""JMESPath expressions turned into nested Python closures, evaluated without an interpreter.

``jmespath``'s ``TreeInterpreter`` walks the parsed tree on every search: a dictionary
lookup of the node's type, a method dispatch and a ``node['children']`` read per node.
The default mapping evaluates hundreds of small expressions per sample (a row per table,
a span per model or tool call), and that walk was the largest part of the mapping's CPU
in the delivery process. Here each node is compiled once into a closure that calls its
children's closures directly.

The semantics are the interpreter's, node for node (JMESPath's falsy values, the 0/1 vs
boolean equality rule, ordering only between numbers or strings, projections dropping
nulls, the same ``isinstance(..., list)`` checks); ``tests/unit/test_expr_compiler.py`` checks
every expression of the shipped mappings and a set of edge cases against the interpreter.
A node type this module does not know is left to the interpreter, so a newer ``jmespath``
can only be slower here, not different.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from numbers import Number
from typing import Any

from jmespath.functions import Functions
from jmespath.visitor import Options, TreeInterpreter

from inspect_mlflow._mapping.functions import OPTIONS
from inspect_mlflow._mapping.model import Expr

Search = Callable[[Any], Any]
"""A compiled expression: the current value in, the result out."""


def is_false(value: Any) -> bool:
    """JMESPath's falsy values: null, false, and the empty string, list and object (0 is true).

    By type and length rather than the interpreter's ``value == []`` comparisons: the same
    answer for JSON values and the lazy views (dict subclasses), without a lazy view's
    ``__eq__``.
    """
    if value is None or value is False:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    return False


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:
        return True
    if kind is bool or kind is str or value is None:
        return False
    return isinstance(value, Number)  # the slower ABC check, for other number types


def _equals(x: Any, y: Any) -> bool:
    if type(x) is str or type(y) is str:  # the common `event == 'model'`
        return x == y
    # Python has 0 == False and 1 == True; JMESPath does not.
    if _is_number(x) and x in (0, 1):
        return not isinstance(y, bool) and x == y
    if _is_number(y) and y in (0, 1):
        return not isinstance(x, bool) and x == y
    return x == y


def _orderable(value: Any) -> bool:
    return _is_number(value) or isinstance(value, str)


_ORDER = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


class ExprCompiler:
    """Compiles parsed JMESPath trees for one set of functions and options."""

    def __init__(self, options: Options = OPTIONS) -> None:
        self._interpreter = TreeInterpreter(options)
        functions = options.custom_functions
        self._functions = functions if functions is not None else Functions()
        self._dict_cls = options.dict_cls or dict

    def compile(self, node: Mapping[str, Any]) -> Search:
        """The closure for ``node`` (a ``ParsedResult.parsed`` tree)."""
        build = getattr(self, "_node_" + str(node.get("type")), None)
        if build is None:  # unknown to this module: the interpreter's own evaluation
            visit = self._interpreter.visit
            return lambda value: visit(node, value)
        result: Search = build(node)
        return result

    def _children(self, node: Mapping[str, Any]) -> list[Search]:
        return [self.compile(child) for child in node["children"]]

    # -- paths ------------------------------------------------------------------------

    def _node_field(self, node: Mapping[str, Any]) -> Search:
        name = node["value"]

        def field(value: Any) -> Any:
            try:
                return value.get(name)
            except AttributeError:
                return None

        return field

    def _node_subexpression(self, node: Mapping[str, Any]) -> Search:
        names = _field_names(node)
        if names is not None:
            return _path(names)
        return _chain(self._children(node))

    _node_index_expression = _node_subexpression
    _node_pipe = _node_subexpression

    def _node_identity(self, node: Mapping[str, Any]) -> Search:
        return _same

    _node_current = _node_identity

    def _node_literal(self, node: Mapping[str, Any]) -> Search:
        constant = node["value"]
        return lambda value: constant

    def _node_index(self, node: Mapping[str, Any]) -> Search:
        position = node["value"]

        def index(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[position]
            except IndexError:
                return None

        return index

    def _node_slice(self, node: Mapping[str, Any]) -> Search:
        part = slice(*node["children"])
        return lambda value: value[part] if isinstance(value, list) else None

    # -- projections ------------------------------------------------------------------

    def _node_projection(self, node: Mapping[str, Any]) -> Search:
        left, right = self._children(node)

        def projection(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            return [r for r in map(right, base) if r is not None]

        return projection

    def _node_value_projection(self, node: Mapping[str, Any]) -> Search:
        left, right = self._children(node)

        def value_projection(value: Any) -> Any:
            base = left(value)
            try:
                base = base.values()
            except AttributeError:
                return None
            return [r for r in map(right, base) if r is not None]

        return value_projection

    def _node_filter_projection(self, node: Mapping[str, Any]) -> Search:
        left, right, condition = self._children(node)

        def filter_projection(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            out = []
            for element in base:
                if not is_false(condition(element)):
                    current = right(element)
                    if current is not None:
                        out.append(current)
            return out

        return filter_projection

    def _node_flatten(self, node: Mapping[str, Any]) -> Search:
        (inner,) = self._children(node)

        def flatten(value: Any) -> Any:
            base = inner(value)
            if not isinstance(base, list):
                return None
            out: list[Any] = []
            for element in base:
                if isinstance(element, list):
                    out.extend(element)
                else:
                    out.append(element)
            return out

        return flatten

    # -- logic and comparison ---------------------------------------------------------

    def _node_or_expression(self, node: Mapping[str, Any]) -> Search:
        left, right = self._children(node)

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if is_false(matched) else matched

        return either

    def _node_and_expression(self, node: Mapping[str, Any]) -> Search:
        left, right = self._children(node)

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if is_false(matched) else right(value)

        return both

    def _node_not_expression(self, node: Mapping[str, Any]) -> Search:
        (inner,) = self._children(node)

        def negation(value: Any) -> Any:
            result = inner(value)
            if _is_number(result) and result == 0:
                return False  # !0 is false in JMESPath: 0 is not falsy there
            return not result

        return negation

    def _node_comparator(self, node: Mapping[str, Any]) -> Search:
        left, right = self._children(node)
        op = node["value"]
        if op == "eq":
            return lambda value: _equals(left(value), right(value))
        if op == "ne":
            return lambda value: not _equals(left(value), right(value))
        order = _ORDER[op]

        def compare(value: Any) -> Any:
            a, b = left(value), right(value)
            if not (_orderable(a) and _orderable(b)):
                return None
            return order(a, b)

        return compare

    # -- building values --------------------------------------------------------------

    def _node_multi_select_list(self, node: Mapping[str, Any]) -> Search:
        items = self._children(node)

        def select_list(value: Any) -> Any:
            if value is None:
                return None
            return [item(value) for item in items]

        return select_list

    def _node_multi_select_dict(self, node: Mapping[str, Any]) -> Search:
        entries = [
            (child["value"], self.compile(child["children"][0])) for child in node["children"]
        ]
        dict_cls = self._dict_cls

        def select_dict(value: Any) -> Any:
            if value is None:
                return None
            out = dict_cls()
            for key, item in entries:
                out[key] = item(value)
            return out

        return select_dict

    def _node_function_expression(self, node: Mapping[str, Any]) -> Search:
        args = self._children(node)
        name = node["value"]
        call = self._functions.call_function
        return lambda value: call(name, [arg(value) for arg in args])

    def _node_expref(self, node: Mapping[str, Any]) -> Search:
        # Functions such as sort_by and index_by recognise the reference by its class and
        # evaluate it through the interpreter it carries: let the interpreter make it.
        reference = self._interpreter.visit(node, None)
        return lambda value: reference


def _same(value: Any) -> Any:
    return value


def _chain(steps: list[Search]) -> Search:
    if len(steps) == 2:
        first, second = steps
        return lambda value: second(first(value))

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _path(names: tuple[str, ...]) -> Search:
    """``a.b.c``: the lookups a chain of field nodes makes, in one loop."""

    def path(value: Any) -> Any:
        for name in names:
            try:
                value = value.get(name)
            except AttributeError:  # not an object: null, as in JMESPath
                return None
        return value

    return path


def _field_names(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The names of a subexpression made only of fields (``a.b."c/d"``), else None."""
    kind = node.get("type")
    if kind == "field":
        return (node["value"],)
    if kind != "subexpression":
        return None
    names: list[str] = []
    for child in node.get("children", ()):
        part = _field_names(child)
        if part is None:
            return None
        names.extend(part)
    return tuple(names)


class Evaluator:
    """Evaluates :class:`Expr` objects, compiling each the first time it is seen.

    Expressions built with other options than the mapping's (none in practice) are left
    to their own ``search``.
    """

    def __init__(self, options: Options = OPTIONS) -> None:
        self._options = options
        self._compiler = ExprCompiler(options)
        # id(expr) -> (expr, closure); the expression is kept so that its id stays its own.
        self._compiled: dict[int, tuple[Expr, Search]] = {}

    def search(self, expr: Expr, doc: Any) -> Any:
        """``expr`` evaluated against ``doc``; JMESPath errors propagate."""
        entry = self._compiled.get(id(expr))
        if entry is None or entry[0] is not expr:
            entry = (expr, self._compile(expr))
            self._compiled[id(expr)] = entry
        return entry[1](doc)

    def _compile(self, expr: Expr) -> Search:
        ast = getattr(expr.parsed, "parsed", None)
        if expr.options is not self._options or ast is None:
            return expr.search
        return self._compiler.compile(ast)
