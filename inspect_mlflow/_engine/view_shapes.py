"""What a lazy view needs to know about a pydantic model or dataclass class, computed once.

Which fields are visible (``Field(exclude=True)`` ones are not), and which go through a
custom serializer: reading a class's pydantic metadata on every view would cost more than
the view saves, so each class is inspected once and its shape cached.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

__all__ = ["SHAPES", "ViewShape", "shape_of"]


@dataclasses.dataclass(frozen=True, slots=True)
class ViewShape:
    """What a view needs to know about a class, computed once per class."""

    names: tuple[str, ...]
    """Visible field names in declaration order (``Field(exclude=True)`` left out)."""
    name_set: frozenset[str]
    custom: frozenset[str]
    """Fields with a custom pydantic serializer: converted through pydantic itself."""
    pydantic: bool
    direct: Mapping[str, Callable[[Any, Any], Any]] = dataclasses.field(default_factory=dict)
    """Custom fields whose serializer is a plain ``(self, value)`` method: called directly
    (a ``model_dump(include=...)`` per field costs several microseconds)."""


SHAPES: dict[type, ViewShape] = {}
"""Shapes by class (read directly on the hot path, where a call would cost)."""


def _plain_method(cls: type, dec: Any) -> Callable[[Any, Any], Any] | None:
    """The function of a ``mode="plain"`` field serializer taking ``(self, value)``, if so."""
    info = dec.info
    if getattr(info, "mode", None) != "plain" or "*" in info.fields:
        return None
    if isinstance(inspect.getattr_static(cls, dec.cls_var_name, None), (classmethod, staticmethod)):
        return None
    func = dec.func
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) != 2 or any(p.kind not in positional for p in params):
        return None
    return func  # type: ignore[no-any-return]


def shape_of(cls: type) -> ViewShape:
    """The (cached) shape of a pydantic model or dataclass class."""
    shape = SHAPES.get(cls)
    if shape is not None:
        return shape
    if issubclass(cls, pydantic.BaseModel):
        fields = cls.model_fields
        names = tuple(name for name, info in fields.items() if not info.exclude)
        custom: set[str] = set()
        decorators = getattr(cls, "__pydantic_decorators__", None)
        if decorators is not None:
            if decorators.model_serializers:
                custom.update(names)
            for dec in decorators.field_serializers.values():
                targets = dec.info.fields
                custom.update(names if "*" in targets else targets)
        direct: dict[str, Callable[[Any, Any], Any]] = {}
        if decorators is not None and not decorators.model_serializers:
            for dec in decorators.field_serializers.values():
                method = _plain_method(cls, dec)
                if method is not None:
                    direct.update((name, method) for name in dec.info.fields if name in names)
        for name in names:
            if any(
                isinstance(m, (pydantic.PlainSerializer, pydantic.WrapSerializer))
                for m in fields[name].metadata
            ):
                custom.add(name)
                direct.pop(name, None)
        shape = ViewShape(
            names, frozenset(names), frozenset(custom) & frozenset(names), True, direct
        )
    else:
        names = tuple(f.name for f in dataclasses.fields(cls))
        shape = ViewShape(names, frozenset(names), frozenset(), False)
    SHAPES[cls] = shape
    return shape
