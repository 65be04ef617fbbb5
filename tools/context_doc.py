"""Write ``docs/context-documents.md``: every field a mapping rule can read, per point.

Why generated: the reference must list what a rule really sees, no more and no less. The
field tables come from ``point_shape``, the shapes the dry run's typo check walks (a field
listed here is never reported as a likely typo, and a field it reports is not listed);
the meanings are Inspect's own attribute docstrings. ``tests/unit/test_context_doc.py`` fails
when the page differs from what ``python tools/context_doc.py`` writes, and checks every
example against a real eval. The prose (notes, examples, what is left out) lives in
``tools/context_notes.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import re
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "context-documents.md"
sys.path.insert(0, str(ROOT / "tools"))

from context_notes import (  # noqa: E402
    ADDED,
    EVENTS_TEXT,
    EXAMPLES,
    HEADINGS,
    INTRO,
    LEFT_OUT,
    MEANINGS,
    POINT_NOTES,
)
from generated_page import write_or_check  # noqa: E402  (tools/ is not a package)

from inspect_mlflow._inspect.payload_shapes import (  # noqa: E402
    ANY,
    Dict,
    List,
    Obj,
    Scalar,
    Shape,
    Union,
    point_shape,
)
from inspect_mlflow._mapping.model import LIFECYCLE_POINTS  # noqa: E402

# -- Inspect's classes and their docstrings --------------------------------------------


def payload_class(point: str) -> type | None:
    """The hook payload dataclass Inspect hands ``on_<point>`` (None: no such hook here)."""
    from inspect_ai.hooks import Hooks

    method = getattr(Hooks, f"on_{point}", None)
    try:
        return typing.get_type_hints(method).get("data") if method else None
    except Exception:
        return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (
        issubclass(tp, pydantic.BaseModel) or dataclasses.is_dataclass(tp)
    )


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


def _classes_in(tp: Any) -> Iterator[type]:
    """The model and dataclass classes an annotation names (through unions, lists, ...)."""
    if _is_model(tp):
        yield tp
        return
    value = getattr(tp, "__value__", None)  # a `type X = ...` alias
    if value is not None and not isinstance(tp, type):
        yield from _classes_in(value)
    for arg in typing.get_args(tp):
        yield from _classes_in(arg)


@functools.cache
def classes_by_name() -> dict[str, list[type]]:
    """Every class reachable from a hook payload, by ``__name__`` (what shapes are titled)."""
    from inspect_ai.log import EvalLog

    found: dict[type, None] = {}
    todo = [c for c in (payload_class(p) for p in LIFECYCLE_POINTS) if c] + [EvalLog]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found[cls] = None
        for hint in _hints(cls).values():
            todo.extend(_classes_in(hint))
    out: dict[str, list[type]] = {}
    for cls in found:
        out.setdefault(cls.__name__, []).append(cls)
    return out


def class_of(shape: Obj) -> type | None:
    """The class an object shape was built from (by title, then by its field names)."""
    title = shape.title.split(" (")[0]
    candidates = classes_by_name().get(title, [])
    for cls in candidates:
        if set(shape.names) <= set(_hints(cls)):
            return cls
    return candidates[0] if candidates else None


def _paragraph(doc: str) -> str:
    """The first paragraph of a docstring, on one line, safe in a table cell."""
    first = inspect.cleandoc(doc).split("\n\n")[0]
    return cell(" ".join(first.split()))


def code(text: str) -> str:
    """A Markdown code span, also for text that holds backticks (JMESPath literals)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def cell(text: str) -> str:
    """Text for a Markdown table cell: ``|`` escaped, ``<`` too outside code spans."""
    parts = re.split(r"(`+[^`]*`+)", text.replace("|", "\\|"))
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;") for p in parts).strip()


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body (bases first)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__.split(".")[0] in ("pydantic", "builtins"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and hasattr(tree.body[0], "body") else []
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                out[node.target.id] = _paragraph(after.value.value)
    return out


def choices(cls: type | None, name: str) -> list[Any]:
    """The values a field may take when its type says so (a Literal or an Enum)."""
    hint = _hints(cls).get(name) if cls is not None else None
    values: list[Any] = []
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is typing.Literal:
            values.extend(typing.get_args(arg))
        elif isinstance(arg, type) and issubclass(arg, enum.Enum):
            values.extend(member.value for member in arg)
    return list(dict.fromkeys(v for v in values if v is not None))


def nullable(cls: type | None, name: str) -> bool:
    """Whether the class declares the field as possibly None."""
    hint = _hints(cls).get(name) if cls is not None else None
    return hint is not None and type(None) in typing.get_args(hint)


def meaning(cls: type | None, name: str) -> str:
    """What a field means: Inspect's docstring, plus its possible values when few."""
    text = field_docs(cls).get(name, "") if cls is not None else ""
    values = choices(cls, name)
    if values and len(values) <= 8:
        listed = ", ".join(f"`{v}`" for v in values)
        text = f"{text} One of {listed}." if text else f"One of {listed}."
    return text.strip()


# -- shapes as text ----------------------------------------------------------------------


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def is_class_shape(shape: Shape) -> bool:
    """An object built from one of Inspect's classes (it gets a section of its own)."""
    return isinstance(shape, Obj) and class_of(shape) is not None


def heading(shape: Obj) -> str:
    """The section heading of a class shape."""
    return HEADINGS.get(shape.title, f"`{shape.title}`")


def members(shape: Shape) -> tuple[Shape, ...]:
    """The members of a union, or the shape alone."""
    return shape.members if isinstance(shape, Union) else (shape,)


def type_text(shape: Shape) -> str:
    """How a table names a shape: ``string``, a link to a class, ``array of ...``."""
    parts = [m for m in members(shape) if not (isinstance(m, Scalar) and m.kind == "null")]
    if not parts:
        return "null"
    if len(parts) > 4 and all(is_class_shape(m) for m in parts):
        return f"an [event]({EVENTS_LINK}) ({len(parts)} kinds)"
    texts = list(dict.fromkeys(_one(m) for m in parts))
    return " or ".join(texts)


EVENTS_HEADING = "Events"
EVENTS_LINK = "#events"


def event_kinds() -> list[Obj]:
    """The members of the event union (``sample_event``'s ``event``)."""
    shape = point_shape("sample_event")
    event = shape.field("event") if isinstance(shape, Obj) else ANY
    return [m for m in members(event) if isinstance(m, Obj)]


def events_section() -> list[str]:
    """The list of event kinds: every event has ``event``, the kind's name."""
    lines = [f"### {EVENTS_HEADING}", "", EVENTS_TEXT.strip(), ""]
    lines += ["| `event` | type |", "|---|---|"]
    for kind in event_kinds():
        name = kind.field("event")
        values = choices(class_of(kind), "event")
        lines.append(f"| `{values[0] if values else name.title}` | {_link(kind)} |")
    return [*lines, ""]


def _link(shape: Shape) -> str:
    assert isinstance(shape, Obj)
    return f"[{heading(shape)}](#{anchor(heading(shape))})"


def _one(shape: Shape) -> str:
    if shape is ANY:
        return "any JSON value"
    if isinstance(shape, Scalar):
        return shape.kind
    if isinstance(shape, List):
        return "array" if shape.item is ANY else f"array of {type_text(shape.item)}"
    if isinstance(shape, Dict):
        return "object" if shape.value is ANY else f"object of {type_text(shape.value)}"
    if is_class_shape(shape):
        return _link(shape)
    return "object"


def optional(shape: Shape) -> bool:
    """Whether the field may be null, that is absent from the document."""
    return any(isinstance(m, Scalar) and m.kind == "null" for m in members(shape))


def records_below(shape: Shape) -> Iterator[Obj]:
    """Class-less objects (an exception) inside a shape: expanded in place."""
    for member in members(shape):
        if isinstance(member, Obj) and not is_class_shape(member):
            yield member
        elif isinstance(member, List):
            yield from records_below(member.item)


def classes_below(shape: Shape) -> Iterator[Obj]:
    """Class shapes a shape refers to directly (each gets a section)."""
    for member in members(shape):
        if isinstance(member, Obj):
            if is_class_shape(member):
                yield member
            else:
                for name in member.names:
                    yield from classes_below(member.field(name))
        elif isinstance(member, List):
            yield from classes_below(member.item)
        elif isinstance(member, Dict):
            yield from classes_below(member.value)


# -- the page ----------------------------------------------------------------------------


def field_rows(owner: type | None, shape: Obj, prefix: str = "") -> list[str]:
    """One table row per field, records (an exception) expanded as ``name.field`` rows."""
    rows: list[str] = []
    for name in shape.names:
        field = shape.field(name)
        path = f"{prefix}{name}"
        maybe = optional(field) or nullable(owner, name)
        text = type_text(field) + (", optional" if maybe else "")
        known = meaning(owner, name) or MEANINGS.get(path) or MEANINGS.get(name, "")
        rows.append(f"| `{path}` | {text} | {known} |")
        for record in records_below(field):
            rows += field_rows(None, record, f"{path}{'[]' if _is_list(field) else ''}.")
    return rows


def _is_list(shape: Shape) -> bool:
    return any(isinstance(m, List) for m in members(shape))


def _fires(point: str) -> str:
    from inspect_ai.hooks import Hooks

    doc = inspect.cleandoc(getattr(Hooks, f"on_{point}").__doc__ or "")
    return _paragraph(doc.split("Args:")[0].replace("emmitted", "emitted"))


def point_section(point: str) -> list[str]:
    """The section of one lifecycle point: when it fires, its fields, examples."""
    lines = [f"### `{point}`", ""]
    shape = point_shape(point)
    if not isinstance(shape, Obj):
        return [*lines, "This version of Inspect has no hook for this point.", ""]
    lines += [f"Inspect: {_fires(point)}", ""]
    if POINT_NOTES.get(point):
        lines += [POINT_NOTES[point], ""]
    lines += ["| field | type | meaning |", "|---|---|---|"]
    owner = payload_class(point)
    lines += field_rows(owner, shape)
    examples = [(expr, value) for p, expr, value in EXAMPLES if p == point]
    if examples:
        lines += ["", "| for example | gives |", "|---|---|"]
        lines += [f"| {code(cell(expr))} | {code(cell(value))} |" for expr, value in examples]
    return [*lines, ""]


def class_shapes() -> list[Obj]:
    """Every class shape reachable from any point, each once, sorted by heading."""
    seen: dict[int, Obj] = {}
    todo: list[Obj] = []
    for point in LIFECYCLE_POINTS:
        todo += classes_below(point_shape(point))
    while todo:
        shape = todo.pop()
        if id(shape) in seen:
            continue
        seen[id(shape)] = shape
        for name in shape.names:
            todo += classes_below(shape.field(name))
    return sorted(seen.values(), key=lambda s: heading(s).strip("`").lower())


def class_section(shape: Obj) -> list[str]:
    """The section of one of Inspect's classes: its fields as a table."""
    cls = class_of(shape)
    lines = [f"### {heading(shape)}", ""]
    doc = _paragraph(cls.__doc__ or "") if cls is not None and cls.__doc__ else ""
    if doc and not doc.startswith(f"{shape.title}("):
        lines += [doc, ""]
    lines += ["| field | type | meaning |", "|---|---|---|"]
    return [*lines, *field_rows(cls, shape), ""]


def render() -> str:
    """The page's text."""
    import inspect_ai

    points = [p for p in LIFECYCLE_POINTS if isinstance(point_shape(p), Obj)]
    lines = [
        "# Context documents",
        "",
        "<!-- Generated by tools/context_doc.py from Inspect's types; do not edit. -->",
        f"<!-- inspect_ai {inspect_ai.__version__} -->",
        "",
        INTRO.strip(),
        "",
        "Points: " + ", ".join(f"[`{p}`](#{anchor(p)})" for p in points) + ".",
        "",
        "## Names every rule adds",
        "",
        "| name | type | meaning |",
        "|---|---|---|",
        *(f"| `{path}` | {kind} | {text} |" for path, kind, text in ADDED),
        "",
        "## What is left out, and why",
        "",
        LEFT_OUT.strip(),
        "",
        "## Lifecycle points",
        "",
    ]
    for point in points:
        lines += point_section(point)
    lines += [
        "## Inspect's types",
        "",
        "The objects the points hold, each listed once. A field that is null in a",
        "payload is absent from the document.",
        "",
    ]
    lines += events_section()
    for shape in class_shapes():
        lines += class_section(shape)
    return "\n".join(lines).rstrip() + "\n"


def generated_for(text: str) -> str | None:
    """The Inspect version a page says it was generated for."""
    found = re.search(r"<!-- inspect_ai (\S+) -->", text)
    return found.group(1) if found else None


def main() -> int:
    """Write the page; with ``--check``, exit 1 when it is out of date instead."""
    return write_or_check(PAGE, render(), "tools/context_doc.py")


if __name__ == "__main__":
    sys.exit(main())
