"""Lazy JSON views over hook payloads: what context documents are made of.

Why lazy: ``sample_event`` fires dozens of times per sample, and a mapping reads a handful
of fields of each payload. Dumping a whole pydantic payload to JSON to read
``event.event`` would cost more than everything else the hook does. A view instead
converts one attribute when JMESPath asks for it, and caches it.

JMESPath reads a field with ``value.get(name)``, a value projection (``*``) with
``value.values()``, and decides truthiness with ``value == {}``; functions see plain JSON
because ``_mapping.functions`` calls :meth:`ModelView.materialize` on view arguments. So
a view is a ``dict`` subclass whose mapping methods agree with each other and with the
JSON the payload would dump to (``model_dump(mode="json", exclude_none=True)``), forcing
only what each method needs. Views are read-only and built per hook call on the event
loop; they are not shared across threads.

Conversions (what a mapping sees):

- pydantic model or dataclass instance: :class:`ModelView` (fields that are None are
  absent, as with ``exclude_none``; fields declared ``Field(exclude=True)`` are hidden,
  as in ``model_dump``; add them back as ``extra``);
- dict: :class:`DictView` (keys as text, values converted on access);
- list, tuple, set: a plain list of converted elements;
- str, int, float, bool, None: as they are; Enum: its value;
- datetime, date, time, timedelta, UUID, Decimal, bytes, paths: pydantic's JSON form;
- an exception: ``{"type", "message"}``;
- anything else (functions, arbitrary objects): its ``str()``. Conversion never raises.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pydantic
import pydantic_core

from inspect_mlflow._engine.view_shapes import SHAPES, shape_of

__all__ = [
    "MISSING",
    "DictView",
    "LazyView",
    "ModelView",
    "convert",
    "exception_doc",
    "is_cancellation",
    "key_text",
    "to_json",
    "view",
]

MISSING: Any = object()
"""Sentinel for "no such key" (None is a legitimate dict value)."""

_UNSEEN: Any = object()
"""A view's cache has no entry for the key yet."""

_ABSENT: Any = object()
"""Cached in a view's storage for a key known to be absent (until the view is forced)."""

_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
"""Exact types that are JSON already (subclasses such as StrEnum still get converted)."""


def _safe_str(value: Any) -> str:
    """``str(value)``, or a placeholder naming the type when ``__str__`` itself fails."""
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def is_cancellation(exc: BaseException) -> bool:
    """Tell whether an exception means "interrupted" rather than "failed".

    True for ``KeyboardInterrupt`` and any ``CancelledError`` (asyncio, anyio, futures) or
    trio ``Cancelled``, and for an exception group made only of those. Detected by class
    name so the pure core imports no event-loop library.

    Args:
        exc: The exception a run ended with.

    Returns:
        Whether the run was cancelled or interrupted.
    """
    group = getattr(exc, "exceptions", None)
    if isinstance(group, (tuple, list)) and group:
        return all(isinstance(sub, BaseException) and is_cancellation(sub) for sub in group)
    if isinstance(exc, KeyboardInterrupt):
        return True
    return any(cls.__name__ in ("CancelledError", "Cancelled") for cls in type(exc).__mro__)


def exception_doc(exc: BaseException, *, cancelled: bool = False) -> dict[str, Any]:
    """The JSON shape of an exception: ``{"type", "message"}`` (+ ``cancelled`` if asked).

    Args:
        exc: Any exception.
        cancelled: Add a ``cancelled`` boolean (see :func:`is_cancellation`).

    Returns:
        A plain dict.
    """
    doc: dict[str, Any] = {"type": type(exc).__name__, "message": _safe_str(exc)}
    if cancelled:
        doc["cancelled"] = is_cancellation(exc)
    return doc


def _leaf(value: Any) -> Any:
    """A non-container value in pydantic's JSON form, or its text when it has none."""
    try:
        return pydantic_core.to_jsonable_python(value, fallback=_safe_str)
    except Exception:
        return _safe_str(value)


def convert(value: Any) -> Any:
    """Turn any value into something JMESPath reads lazily (see the module docstring).

    Args:
        value: A hook payload field, or anything reachable from one. Not mutated.

    Returns:
        A view, a plain list of converted elements, or a JSON scalar.
    """
    kind = type(value)
    if kind in _PLAIN_TYPES or isinstance(value, LazyView):
        return value
    if isinstance(value, pydantic.BaseModel):
        if isinstance(value, pydantic.RootModel):
            return convert(value.root)
        return ModelView(value)
    if isinstance(value, Mapping):
        return DictView(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [convert(item) for item in value]
    if isinstance(value, enum.Enum):
        return convert(value.value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ModelView(value)
    if isinstance(value, BaseException):
        return exception_doc(value)
    return _leaf(value)


def view(obj: Any, *, exclude: Iterable[str] = (), extra: Mapping[str, Any] | None = None) -> Any:
    """A lazy view of ``obj``, optionally hiding fields and adding extra ones.

    ``view(log, exclude={"samples", "reductions"}, extra={"location": log.location})``
    gives the header of an eval log: the hidden fields are never read, not even by
    :meth:`ModelView.materialize`.

    Args:
        obj: A pydantic model or dataclass instance (for ``exclude``/``extra``), or any value.
        exclude: Field names to hide.
        extra: Additional fields (converted on access); they win over a field of the
            same name.

    Returns:
        A :class:`ModelView` for models and dataclasses, else ``convert(obj)``.
    """
    if isinstance(obj, pydantic.BaseModel) or (
        dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    ):
        return ModelView(obj, exclude=exclude, extra=extra)
    if exclude or extra:
        raise TypeError(f"exclude/extra need a model or dataclass, got {type(obj).__name__}")
    return convert(obj)


def to_json(value: Any) -> Any:
    """Deep-materialise a value into plain JSON (views inside dicts and lists too).

    The engine applies it to every value it puts into an operation, so operations hold
    only dict, list, str, int, float, bool and None.

    Args:
        value: A JMESPath result (may hold views) or any value.

    Returns:
        A new plain JSON value (shared only where the input was already plain scalars).
    """
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    materialize = getattr(value, "materialize", None)
    if materialize is not None and callable(materialize):
        return materialize()
    if kind is list:
        return [to_json(item) for item in value]
    if kind is dict:
        return {
            key if type(key) is str else key_text(key): to_json(item) for key, item in value.items()
        }
    return to_json(convert(value))


def key_text(key: Any) -> str:
    """A dict key as pydantic's JSON mode writes it."""
    if isinstance(key, str):
        return str(key.value) if isinstance(key, enum.Enum) else str(key)
    if isinstance(key, enum.Enum):
        return key_text(key.value)
    if key is None or isinstance(key, bool):
        return "null" if key is None else ("true" if key else "false")
    text = _leaf(key)
    return text if isinstance(text, str) else _safe_str(key)


_NO_NAMES: frozenset[str] = frozenset()
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


class LazyView(dict):  # type: ignore[type-arg]
    """A read-only mapping whose values are computed on first access.

    The dict storage is a cache of loaded values. Subclasses say which keys are visible
    (without loading them) and how to load one key; the engine subclasses it for its
    rule documents too.

    Until every key has been loaded, the C-level dict storage holds only what was asked
    for; every public mapping method is overridden to answer from the whole view. After
    :meth:`_force` the storage holds every visible key in order.
    """

    __slots__ = ("_complete",)

    def __init__(self) -> None:
        dict.__init__(self)
        self._complete = False

    # -- subclass hooks -----------------------------------------------------------
    def _visible(self) -> list[str]:
        raise NotImplementedError

    def _load(self, key: str) -> Any:
        """The converted value of ``key``, or ``MISSING`` when it is not visible."""
        raise NotImplementedError

    def materialize(self) -> Any:
        """The plain JSON value this view stands for."""
        return {key: to_json(value) for key, value in self.items()}

    # -- mapping protocol ---------------------------------------------------------
    def get(self, key: Any, default: Any = None) -> Any:
        """The converted value of ``key`` (loaded and cached on first access).

        A key that is absent is remembered as absent too (``event.pending`` is read by
        several rules per event and is usually null).
        """
        value = dict.get(self, key, _UNSEEN)
        if value is not _UNSEEN:
            return default if value is _ABSENT else value
        if self._complete or not isinstance(key, str):
            return default
        value = self._load(key)
        if value is MISSING:
            dict.__setitem__(self, key, _ABSENT)
            return default
        dict.__setitem__(self, key, value)
        return value

    def _force(self) -> None:
        """Load every visible key, in order, into the dict storage."""
        if self._complete:
            return
        ordered: dict[str, Any] = {}
        for key in self._visible():
            value = self.get(key, MISSING)
            if value is not MISSING:
                ordered[key] = value
        dict.clear(self)
        dict.update(self, ordered)
        self._complete = True

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, MISSING) is not MISSING

    def keys(self) -> Any:  # type: ignore[override]
        """Visible keys (computed without converting values)."""
        if self._complete:
            return dict.keys(self)
        return self._visible()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __bool__(self) -> bool:
        return len(self) > 0

    def values(self) -> Any:  # type: ignore[override]
        """Converted values of every visible key (forces the view)."""
        self._force()
        return dict.values(self)

    def items(self) -> Any:  # type: ignore[override]
        """(key, converted value) pairs (forces the view)."""
        self._force()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        """A shallow plain-dict copy (values stay converted views)."""
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        # JMESPath's truthiness test compares with '', [] and {}: answer those cheaply.
        if type(other) is str or type(other) is list or not isinstance(other, Mapping):
            return False
        if not isinstance(other, LazyView) and not other:
            return len(self) == 0
        return bool(self.materialize() == to_json(other))

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        return (dict, (self.materialize(),))

    def __reversed__(self) -> Iterator[str]:
        return reversed(list(self.keys()))

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self.copy(), **other}

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self.copy()}

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    pop = popitem = setdefault = update = clear = _read_only  # type: ignore[assignment]


class ModelView(LazyView):
    """A lazy, read-only JSON view of a pydantic model or dataclass instance.

    ``get(name)`` converts only that attribute, on first access. Fields whose value is
    None are absent (``exclude_none``). The wrapped object is borrowed, not copied: the
    view must be used while the hook call that made it runs.
    """

    __slots__ = ("_obj", "_shape", "_exclude", "_extra")

    def __init__(
        self,
        obj: Any,
        *,
        exclude: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        dict.__init__(self)
        self._complete = False
        self._obj = obj
        self._shape = SHAPES.get(type(obj)) or shape_of(type(obj))
        self._exclude = frozenset(exclude) if exclude else _NO_NAMES
        self._extra: Mapping[str, Any] = dict(extra) if extra else _NO_EXTRA

    def __repr__(self) -> str:
        return f"ModelView({type(self._obj).__name__})"

    def _visible(self) -> list[str]:
        obj, hidden, extra = self._obj, self._exclude, self._extra
        out = [
            name
            for name in self._shape.names
            if name not in hidden and name not in extra and getattr(obj, name, None) is not None
        ]
        out.extend(key for key, value in extra.items() if value is not None)
        return out

    def _load(self, key: str) -> Any:
        if key in self._extra:
            raw = self._extra[key]
            return MISSING if raw is None else convert(raw)
        shape = self._shape
        if key not in shape.name_set or key in self._exclude:
            return MISSING
        raw = getattr(self._obj, key, None)
        if raw is None:
            return MISSING
        if key in shape.custom:
            return self._serialize_field(key, raw)
        return convert(raw)

    def _serialize_field(self, key: str, raw: Any) -> Any:
        """One field through the model's own serializer (honours field serializers)."""
        method = self._shape.direct.get(key)
        if method is not None:
            try:
                return convert(method(self._obj, raw))
            except Exception:
                pass
        try:
            out = self._obj.model_dump(
                mode="json", include={key}, exclude_none=True, fallback=_safe_str, warnings=False
            )
        except Exception:
            return convert(raw)
        return out.get(key, MISSING)

    def materialize(self) -> dict[str, Any]:
        """Plain JSON, as ``model_dump(mode="json", exclude_none=True, fallback=str)``.

        Hidden fields are excluded before pydantic sees them, so they are never read;
        extras are added after the model's own fields.
        """
        out: dict[str, Any] | None = None
        if self._shape.pydantic:
            hidden = set(self._exclude) | set(self._extra)
            try:
                out = self._obj.model_dump(
                    mode="json",
                    exclude_none=True,
                    exclude=hidden or None,
                    fallback=_safe_str,
                    warnings=False,
                )
            except Exception:
                out = None
            if out is not None:
                for key, raw in self._extra.items():
                    value = to_json(convert(raw))
                    if value is not None:
                        out[key] = value
                return out
        return {key: to_json(value) for key, value in self.items()}


class DictView(LazyView):
    """A lazy, read-only JSON view of a mapping: keys as text, values converted on access.

    Unlike model fields, keys whose value is None are present (pydantic keeps them).
    """

    __slots__ = ("_src", "_keymap")

    def __init__(self, src: Mapping[Any, Any]) -> None:
        super().__init__()
        self._src = src
        self._keymap: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"DictView({len(self._src)} keys)"

    def _visible(self) -> list[str]:
        return [key if type(key) is str else key_text(key) for key in self._src]

    def _load(self, key: str) -> Any:
        src = self._src
        raw = src.get(key, MISSING) if isinstance(src, dict) else _mapping_get(src, key)
        if raw is MISSING:
            if self._keymap is None:
                self._keymap = {key_text(k): k for k in src if type(k) is not str}
            if key not in self._keymap:
                return MISSING
            raw = src[self._keymap[key]]
        return convert(raw)


def _mapping_get(src: Mapping[Any, Any], key: str) -> Any:
    """``src[key]`` or ``MISSING`` for any Mapping (some raise other errors on a miss)."""
    try:
        return src[key]
    except (KeyError, IndexError, TypeError):
        return MISSING
