"""The context document of a lifecycle point: its hook payload's fields as lazy views.

What a mapping's rules read at each point (``docs/context-documents.md`` lists the
fields): the payload's top-level fields converted lazily (:mod:`.views`), plus
``point``; some points' fields need more than a plain conversion (an eval log's header
instead of the whole log, a run's exception with ``cancelled``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic

from inspect_mlflow._engine.view_shapes import shape_of
from inspect_mlflow._engine.views import ModelView, convert, exception_doc, key_text

__all__ = ["context"]

_HEADER_EXCLUDE = frozenset({"samples", "reductions"})
"""Eval log fields never touched: for ``eval()`` they load the whole log from disk
(re-entering the running event loop), which crashed concurrent tasks."""


def _header(log: Any) -> Any:
    """An eval log's header: no per-sample data, with the file location added back."""
    if log is None:
        return None
    return ModelView(
        log, exclude=_HEADER_EXCLUDE, extra={"location": getattr(log, "location", None)}
    )


def _run_exception(exc: Any) -> Any:
    return exception_doc(exc, cancelled=True) if isinstance(exc, BaseException) else None


_POINT_FIELDS: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("run_end", "exception"): _run_exception,
    ("run_end", "logs"): lambda logs: [_header(log) for log in logs or ()],
    ("task_end", "log"): _header,
}
"""Fields of some points that need more than :func:`convert` (see :func:`context`)."""


def context(point: str, data: Any, **extra: Any) -> dict[str, Any]:
    """Build the context document of a lifecycle point from its hook payload.

    The document holds the payload's top-level fields as lazy values, plus ``point``.
    At ``run_end``, ``exception`` is ``{type, message, cancelled}`` or null and each of
    ``logs`` is a log header; at ``task_end`` ``log`` is a log header (never the
    per-sample data, which would load the whole log from disk).

    Args:
        point: The lifecycle point (Inspect's hook method name without ``on_``).
        data: The hook payload (a frozen dataclass), or a mapping of fields.
        **extra: Additional top-level fields (converted lazily too).

    Returns:
        A plain dict (top level) of lazy values; the engine evaluates rules against it.
    """
    doc: dict[str, Any] = {}
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        pairs: Iterable[tuple[str, Any]] = (
            (f.name, getattr(data, f.name, None)) for f in dataclasses.fields(data)
        )
    elif isinstance(data, pydantic.BaseModel):
        pairs = ((name, getattr(data, name, None)) for name in shape_of(type(data)).names)
    elif isinstance(data, Mapping):
        pairs = ((key_text(k), v) for k, v in data.items())
    elif data is None:
        pairs = ()
    else:
        raise TypeError(f"cannot build a context from {type(data).__name__}")
    for name, raw in pairs:
        special = _POINT_FIELDS.get((point, name))
        doc[name] = special(raw) if special is not None else convert(raw)
    doc["point"] = point
    for name, raw in extra.items():
        doc[name] = convert(raw)
    return doc
