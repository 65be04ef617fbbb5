"""What Inspect's payloads look like to JMESPath, from Inspect's own types: shapes, no values.

Why: the context documents are built from the hook payload dataclasses and the pydantic
models inside them (``SampleEnd.sample`` is an ``EvalSample``), as
:mod:`inspect_mlflow._engine.views` converts them, so which fields a document can have is
known without any log. The typo check (:mod:`.payload_fields`) and the generated
context-document reference read these shapes. Where the type of a value is not known
(``Any``, a JSON value, a dict's keys) the shape is :data:`ANY`.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import pathlib
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANY",
    "Dict",
    "List",
    "Obj",
    "Scalar",
    "Shape",
    "Union",
    "members",
    "of_type",
    "point_shape",
    "record",
    "union",
]


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


def members(shape: Shape) -> tuple[Shape, ...]:
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

    from inspect_mlflow._engine.view_shapes import shape_of

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
    """The context document of a lifecycle point, as :func:`contexts.context` builds it.

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
